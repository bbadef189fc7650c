"""``mmdet-bench faces``: every face detector and chain on real photos and a real video, and the faces preset
end to end with the chain of before (Haar only) and the new chains, side by side in one run.

Accuracy (per detector and per chain, each run exactly as the ``faces`` preset runs it: a copy of at most
``detect_size`` pixels, the largest face of the first detector that finds one):

* **right face**: share of labelled photos whose chosen face overlaps a labelled face with IoU >= 0.4. The
  PASCAL VOC group photos carry the boxes of ``real-media/faces/dlib_training.xml``; the portraits, the
  repository's ``samples/astronaut.jpg`` and scikit-image's ``camera`` were hand-labelled
  (``benchmarks/face_labels.json``).
* **false faces**: photos without people (``samples/coffee (no face).jpg`` and scikit-image's ``chelsea``
  (a cat), ``rocket`` and ``stereo_motorcycle``) on which a face was found.
* **clip frames**: of the 10 frames the runtime samples from ``real-media/videos/short_hamilton_clip.mp4``
  (a real speaker on a stage), those with a face.
* **ms per 720p frame**: those 10 frames resized to 1280x720, detected as the preset does (one batched call
  per detector, BlazeFace on one ONNX Runtime thread as in the runtime's workers), median of ``repeats``
  passes: wall time on this machine as loaded (the load average is recorded), and the process's CPU time
  (``time.process_time``, all threads), which the load of other processes hardly changes.

End to end: ``run_folder`` on the benchmark's generated 720p media (``benchmarks.synthetic_media``) with the tiny
model, once per chain and repeat, interleaved; files/s and busy seconds per stage.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from mmdet_deploy.errors import MMDetError, UsageError
from mmdet_deploy.runtime.faces import CHAINS, DETECT_MAX_SIDE, FaceFinder, unavailable_reason

#: Repository root (``benchmarks/``, ``samples/`` live there; the package is installed editable).
REPO = Path(__file__).resolve().parents[3]
LABELS = REPO / "benchmarks" / "face_labels.json"
CLIP = "videos/short_hamilton_clip.mp4"
VOC_XML = "faces/dlib_training.xml"
#: A chosen face is right when it overlaps a labelled face by at least this IoU.
RIGHT_IOU = 0.4
#: Detectors measured alone, then the chains.
DETECTORS = ("blazeface-full", "blazeface-short", "dlib", "haar", "mediapipe")
#: The chain before issue 13: the default install ran Haar only.
OLD_CHAIN = ("haar",)


@dataclass(frozen=True)
class Photo:
    """A labelled (or people-free) RGB photo; ``boxes`` are labelled faces (x0, y0, x1, y1) in its pixels."""

    name: str
    rgb: np.ndarray = field(repr=False)
    boxes: tuple[tuple[float, float, float, float], ...] = ()


def find_real_media(path: Path | None = None) -> Path:
    """The real-media folder: ``path``, else ``$MMDET_REAL_MEDIA``, else ``../shared/data/real-media`` beside
    the repository."""
    candidates = [path] if path is not None else [Path(p) for p in [os.environ.get("MMDET_REAL_MEDIA")] if p]
    candidates += [] if path is not None else [REPO.parent / "shared" / "data" / "real-media"]
    for candidate in candidates:
        if (candidate / VOC_XML).is_file():
            return candidate
    raise UsageError(f"no real-media folder (with {VOC_XML}) at {', '.join(map(str, candidates)) or '(none)'}; "
                     "pass --real-media DIR")  # fmt: skip


def voc_boxes(xml: Path) -> dict[str, list[tuple[float, float, float, float]]]:
    """Face boxes per file of a dlib imglab XML (``<box top left width height>``) as (x0, y0, x1, y1)."""
    text = xml.read_text(encoding="latin-1")
    out: dict[str, list[tuple[float, float, float, float]]] = {}
    for name, body in re.findall(r"<image file='([^']+)'[^>]*>(.*?)</image>", text, flags=re.S):
        boxes = re.findall(r"<box top='(\d+)' left='(\d+)' width='(\d+)' height='(\d+)'", body)
        out[name] = [(float(x), float(y), float(x) + float(w), float(y) + float(h)) for y, x, w, h in boxes]
    return out


def _read(source: str, real_media: Path) -> np.ndarray:
    """RGB uint8 of a labels-file source (``real-media:``, ``samples:`` or ``skimage:``)."""
    kind, _, rest = source.partition(":")
    if kind == "skimage":
        from skimage import data

        image = getattr(data, rest)()
        image = image[0] if isinstance(image, tuple) else image  # stereo pairs: the left view
        return np.ascontiguousarray(np.stack([image] * 3, -1) if image.ndim == 2 else image[..., :3])
    path = (real_media if kind == "real-media" else REPO / "samples") / rest
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise MMDetError(f"{path}: cannot read this benchmark photo")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def load_photos(real_media: Path, labels: Path = LABELS) -> tuple[list[Photo], list[Photo]]:
    """(labelled photos with faces, photos without people)."""
    spec = json.loads(labels.read_text(encoding="utf-8"))
    faces = [Photo(f"real-media:faces/{name}", _read(f"real-media:faces/{name}", real_media), tuple(boxes))
             for name, boxes in voc_boxes(real_media / VOC_XML).items()]  # fmt: skip
    for source, boxes in spec["photos"].items():
        faces.append(Photo(source, _read(source, real_media), tuple(tuple(b) for b in boxes)))
    empty = [Photo(src, _read(src, real_media)) for src in spec["no_people"]]
    return faces, empty


def clip_frames(path: Path, frames: int = 10, max_seconds: float = 10.0) -> list[tuple[int, np.ndarray]]:
    """The frames the faces preset samples from a video (``np.linspace`` over the first 10 s), decoded exactly."""
    from mmdet_deploy.runtime.video_sampling import read_sampled_frames

    sampled = read_sampled_frames(path, frames, max_seconds)
    return [(i, sampled.frames[i]) for i in sampled.indices]


def _iou(a: Sequence[float], b: Sequence[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - ix * iy
    return ix * iy / union if union > 0 else 0.0


def evaluate(finder: FaceFinder, faces: list[Photo], empty: list[Photo], clip: list[tuple[int, np.ndarray]],
             timing: list[np.ndarray], repeats: int = 5) -> dict[str, Any]:  # fmt: skip
    """Accuracy and speed figures of one detector or chain (see the module docstring)."""
    misses: list[str] = []
    for photo in faces:
        face, _ = finder.find(photo.rgb)
        chosen = (face.x0, face.y0, face.x1, face.y1) if face else None
        if chosen is None or max(_iou(chosen, box) for box in photo.boxes) < RIGHT_IOU:
            misses.append(photo.name + (" (no face)" if chosen is None else ""))
    false = [p.name for p in empty if finder.find(p.rgb)[0] is not None]
    records = finder.records([f for _, f in clip], [i for i, _ in clip])
    finder.find_batch(timing)  # warm-up
    seconds, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        finder.find_batch(timing)
        seconds.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return {
        "detectors": list(finder.names), "right_faces": len(faces) - len(misses), "photos": len(faces),
        "right_share": (len(faces) - len(misses)) / len(faces), "wrong": misses,
        "false_faces": len(false), "no_people_photos": len(empty), "false_on": false,
        "clip_frames_with_face": sum(r.box is not None for r in records), "clip_frames": len(records),
        "clip_detectors": sorted({r.detector for r in records if r.detector}),
        "ms_per_720p_frame": 1e3 * statistics.median(seconds) / len(timing),
        "cpu_ms_per_720p_frame": 1e3 * statistics.median(cpu) / len(timing),
    }  # fmt: skip


def accuracy_table(real_media: Path, detect_size: int = DETECT_MAX_SIDE, repeats: int = 5,
                   progress: Callable[[str], None] = lambda m: None,
                   labels: Path = LABELS) -> dict[str, Any]:  # fmt: skip
    """Every available detector alone, then every chain: ``{name: figures or {"unavailable": reason}}``."""
    faces, empty = load_photos(real_media, labels)
    clip = clip_frames(real_media / CLIP)
    timing = [cv2.resize(frame, (1280, 720), interpolation=cv2.INTER_LINEAR) for _, frame in clip]
    rows: dict[str, Any] = {}
    entries = [(name, {"names": [name]}) for name in DETECTORS]
    entries += [(f"chain {chain}", {"chain": chain}) for chain in CHAINS]
    for label, options in entries:
        reason = unavailable_reason(options["names"][0]) if "names" in options else None
        if reason:
            rows[label] = {"unavailable": reason}
            continue
        progress(f"faces benchmark: {label}")
        finder = FaceFinder(options.get("names"), chain=str(options.get("chain", "default")),
                            detect_max_side=detect_size)  # fmt: skip
        rows[label] = evaluate(finder, faces, empty, clip, timing, repeats)
    return {"rows": rows, "labels": str(labels), "photos": [p.name for p in faces],
            "no_people": [p.name for p in empty], "clip": f"{CLIP}: frames {[i for i, _ in clip]}",
            "detect_size": detect_size}  # fmt: skip
