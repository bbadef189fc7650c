"""Parity of the bundled BlazeFace (ONNX Runtime) with ``mp.solutions.face_detection`` on the same images.

Runs only where mediapipe is importable, which is never the project's environment (mediapipe pulls
opencv-contrib 5.x): ``scripts/blazeface_parity.py`` runs it in a separate virtualenv and writes the
figures; ``tests/test_runtime_blazeface_parity.py`` runs it when mediapipe is there and skips otherwise.

Per model (``model_selection`` 0 = short-range, 1 = full-range) and image, each MediaPipe detection is
matched one-to-one with ours, best IoU first. The tolerance: every detection matched with IoU >= 0.95
and a score within 0.02, and no detection of ours left over.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

#: The parity tolerance (issue 13): box IoU at least this, score difference at most that.
MIN_IOU = 0.95
MAX_SCORE_DIFF = 0.02
#: mediapipe ``model_selection`` -> our BlazeFace variant.
VARIANTS = {0: "short", 1: "full"}


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two (x0, y0, x1, y1, ...) boxes."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def match(reference: np.ndarray, ours: np.ndarray) -> tuple[list[tuple[float, float]], int, int]:
    """Greedy one-to-one matching, best IoU first: ``[(iou, |d score|)]`` per matched pair, and the counts
    of reference and of our detections left unmatched (boxes ``(K, 5)``: x0, y0, x1, y1, score)."""
    pairs = sorted(((box_iou(r, o), i, j) for i, r in enumerate(reference) for j, o in enumerate(ours)), reverse=True)
    used_r: set[int] = set()
    used_o: set[int] = set()
    matched: list[tuple[float, float]] = []
    for iou, i, j in pairs:
        if iou <= 0 or i in used_r or j in used_o:
            continue
        used_r.add(i)
        used_o.add(j)
        matched.append((iou, abs(float(reference[i][4]) - float(ours[j][4]))))
    return matched, len(reference) - len(used_r), len(ours) - len(used_o)


def mediapipe_boxes(detector: Any, rgb: np.ndarray) -> np.ndarray:
    """``mp.solutions.face_detection`` detections of an RGB image as ``(K, 5)`` pixel boxes with scores."""
    height, width = rgb.shape[:2]
    rows = []
    for det in detector.process(np.ascontiguousarray(rgb)).detections or []:
        rel = det.location_data.relative_bounding_box
        x0, y0 = rel.xmin * width, rel.ymin * height
        rows.append((x0, y0, x0 + rel.width * width, y0 + rel.height * height, float(det.score[0])))
    return np.asarray(rows, np.float64).reshape(-1, 5)


def compare(images: Mapping[str, np.ndarray], selections: tuple[int, ...] = (0, 1)) -> dict[str, Any]:
    """Run both detectors on every RGB image; figures per model and per image (see the module docstring)."""
    from mmdet_deploy.deps import require
    from mmdet_deploy.runtime.blazeface import BlazeFace

    mp = require("mediapipe", "the BlazeFace parity check")
    report: dict[str, Any] = {"tolerance": {"min_iou": MIN_IOU, "max_score_diff": MAX_SCORE_DIFF}, "models": {}}
    for selection in selections:
        variant = VARIANTS[selection]
        reference = mp.solutions.face_detection.FaceDetection(model_selection=selection, min_detection_confidence=0.5)
        ours = BlazeFace(variant)
        per_image: dict[str, Any] = {}
        ious: list[float] = []
        diffs: list[float] = []
        missed = extra = 0
        for name, rgb in images.items():
            ref_boxes, our_boxes = mediapipe_boxes(reference, rgb), ours.detect(rgb)
            pairs, lost, spare = match(ref_boxes, our_boxes)
            ious += [p[0] for p in pairs]
            diffs += [p[1] for p in pairs]
            missed, extra = missed + lost, extra + spare
            per_image[name] = {"mediapipe": len(ref_boxes), "ours": len(our_boxes),
                               "min_iou": min((p[0] for p in pairs), default=None),
                               "max_score_diff": max((p[1] for p in pairs), default=None)}  # fmt: skip
        reference.close()
        report["models"][f"{variant}-range (model_selection={selection})"] = {
            "images": len(images), "faces_mediapipe": len(ious) + missed, "faces_ours": len(ious) + extra,
            "matched": len(ious), "unmatched_mediapipe": missed, "unmatched_ours": extra,
            "min_iou": min(ious, default=None), "mean_iou": float(np.mean(ious)) if ious else None,
            "max_score_diff": max(diffs, default=None),
            "passed": not missed and not extra and all(i >= MIN_IOU for i in ious)
            and all(d <= MAX_SCORE_DIFF for d in diffs),
            "per_image": per_image,
        }  # fmt: skip
    report["passed"] = all(m["passed"] for m in report["models"].values())
    return report


def markdown(report: Mapping[str, Any]) -> str:
    """The report's summary table (one line per model)."""
    lines = ["| model | images | faces (mediapipe / ours) | matched | min IoU | mean IoU | max abs d score | "
             "within tolerance |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for name, m in report["models"].items():
        lines.append(
            f"| {name} | {m['images']} | {m['faces_mediapipe']} / {m['faces_ours']} | {m['matched']} | "
            f"{m['min_iou']:.6f} | {m['mean_iou']:.6f} | {m['max_score_diff']:.1e} | {'yes' if m['passed'] else 'NO'} |"
        )
    tol = report["tolerance"]
    lines.append(f"\nTolerance: IoU >= {tol['min_iou']} and |d score| <= {tol['max_score_diff']} for every "
                 "detection, no detection unmatched.")  # fmt: skip
    return "\n".join(lines) + "\n"
