"""BlazeFace, MediaPipe's face detector, on ONNX Runtime: the boxes of ``mp.solutions.face_detection`` without
mediapipe (or torch).

The two models ship inside this package (``face_models/``, converted once from the mediapipe wheel by
``scripts/convert_blazeface.py``; Apache-2.0, see ``face_models/NOTICE``). Everything around the network
follows MediaPipe's published graph (``mediapipe/modules/face_detection/face_detection*.pbtxt``):

1. *ImageToTensorCalculator*: the whole frame, padded to a square around its centre (``keep_aspect_ratio``,
   zero border), warped to the model size with OpenCV's bilinear ``warpPerspective`` on the uint8 image,
   then mapped to [-1, 1].
2. *SsdAnchorsCalculator*: fixed-size anchors on the grids of :class:`BlazeFaceSpec` (896 anchors for the
   128 px short-range model, 2304 for the 192 px full-range one).
3. *TensorsToDetectionsCalculator*: box centre/size offsets divided by the input size and added to the
   anchor centre; score = sigmoid of the logit clipped to [-100, 100]; boxes below the score threshold or
   with negative size dropped.
4. *NonMaxSuppressionCalculator*, ``WEIGHTED``, IoU > 0.3: each cluster becomes the score-weighted mean of
   its boxes, with the score of its best box.
5. *DetectionProjectionCalculator*: from the padded square back to frame pixels.

The score thresholds are the graphs' own ``min_score_thresh``: 0.5 for the short-range model, 0.6 for the
full-range one. ``mp.solutions.face_detection`` takes a ``min_detection_confidence`` but, in the
mediapipe 0.10.21 wheel, it has no effect (measured: 0.2 to 0.9 give the same detections), so these are
the thresholds the seed really runs with. Boxes are ``(x0, y0, x1, y1, score)`` in pixels of the frame
given; they can reach past its border (MediaPipe does not clip them).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from mmdet_deploy.deps import require
from mmdet_deploy.errors import MissingDependencyError, UsageError

logger = logging.getLogger(__name__)

#: Folder of the packaged ONNX models, their licence and NOTICE.
MODELS_DIR = Path(__file__).resolve().parent / "face_models"


@dataclass(frozen=True)
class BlazeFaceSpec:
    """One BlazeFace model and MediaPipe's options for it (``FaceDetectionOptions`` of its ``.pbtxt``).

    ``strides``, ``interpolated_scale_aspect_ratio``, ``min_scale``, ``max_scale`` and ``anchor_offset`` are the
    SsdAnchorsCalculator options; ``min_score`` is the graph's ``min_score_thresh`` (the score threshold that
    ``mp.solutions.face_detection`` applies, whatever its ``min_detection_confidence``).
    """

    key: str
    filename: str
    input_size: int
    strides: tuple[int, ...]
    interpolated_scale_aspect_ratio: float
    num_boxes: int
    min_score: float
    min_scale: float = 0.1484375
    max_scale: float = 0.75
    anchor_offset: float = 0.5
    score_clipping: float = 100.0
    nms_iou: float = 0.3

    @property
    def path(self) -> Path:
        return MODELS_DIR / self.filename


SHORT_RANGE = BlazeFaceSpec("short", "blazeface_short_range.onnx", 128, (8, 16, 16, 16), 1.0, 896, 0.5)
FULL_RANGE = BlazeFaceSpec("full", "blazeface_full_range.onnx", 192, (4,), 0.0, 2304, 0.6)
SPECS = {"short": SHORT_RANGE, "full": FULL_RANGE}


def ssd_anchors(spec: BlazeFaceSpec) -> np.ndarray:
    """Anchor centres ``(num_boxes, 2)`` as (x, y) fractions of the input, in the model's output order.

    MediaPipe's SsdAnchorsCalculator with one aspect ratio and ``fixed_anchor_size``: consecutive layers of
    the same stride share one grid; each layer adds one anchor per cell, plus one with the interpolated
    scale when ``interpolated_scale_aspect_ratio`` > 0. With fixed size every anchor is 1 x 1, so only the
    count per cell matters.
    """
    centres: list[np.ndarray] = []
    layer, layers = 0, len(spec.strides)
    while layer < layers:
        per_cell = 0
        last = layer
        while last < layers and spec.strides[last] == spec.strides[layer]:
            per_cell += 2 if spec.interpolated_scale_aspect_ratio > 0 else 1
            last += 1
        cells = math.ceil(spec.input_size / spec.strides[layer])
        grid = (np.arange(cells, dtype=np.float64) + spec.anchor_offset) / cells
        ys, xs = np.meshgrid(grid, grid, indexing="ij")  # row-major: y outer, x inner, as MediaPipe
        cell_centres = np.stack([xs.ravel(), ys.ravel()], axis=1)
        centres.append(np.repeat(cell_centres, per_cell, axis=0))
        layer = last
    anchors = np.concatenate(centres).astype(np.float32)
    if anchors.shape[0] != spec.num_boxes:
        raise AssertionError(f"{spec.key}: {anchors.shape[0]} anchors, the model has {spec.num_boxes}")
    return anchors


def letterbox(width: int, height: int, size: int) -> tuple[np.ndarray, float, float, float]:
    """ImageToTensorCalculator's transform of a whole ``width`` x ``height`` frame to a ``size`` square.

    Returns the 3x3 perspective matrix (frame pixels -> tensor pixels) and ``(side, x0, y0)``: the padded
    square's side and top-left corner in frame pixels, which map tensor fractions back to the frame.
    """
    side = float(max(width, height))
    x0, y0 = (width - side) / 2.0, (height - side) / 2.0
    # cv::boxPoints order (bottom-left, top-left, top-right, bottom-right) onto the tensor's corners.
    src = np.float32([[x0, y0 + side], [x0, y0], [x0 + side, y0], [x0 + side, y0 + side]])
    dst = np.float32([[0, size], [0, 0], [size, 0], [size, size]])
    return cv2.getPerspectiveTransform(src, dst), side, x0, y0


def to_tensor(rgb: np.ndarray, size: int) -> tuple[np.ndarray, tuple[float, float, float]]:
    """The model input of one RGB uint8 frame: float32 ``(3, size, size)`` in [-1, 1], and ``(side, x0, y0)``."""
    height, width = rgb.shape[:2]
    matrix, side, x0, y0 = letterbox(width, height, size)
    warped = cv2.warpPerspective(
        np.ascontiguousarray(rgb), matrix, (size, size), flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0),
    )  # fmt: skip
    tensor = warped.astype(np.float32) * np.float32(2.0 / 255.0) - np.float32(1.0)
    return tensor.transpose(2, 0, 1), (side, x0, y0)


def decode(
    regressors: np.ndarray, logits: np.ndarray, anchors: np.ndarray, spec: BlazeFaceSpec, min_score: float
) -> tuple[np.ndarray, np.ndarray]:
    """Boxes ``(M, 4)`` (xmin, ymin, xmax, ymax as tensor fractions) and scores ``(M,)`` above ``min_score``.

    ``regressors`` ``(num_boxes, 16)``: x, y, w, h then 6 keypoints (ignored here), in input pixels relative
    to the anchor; ``logits`` ``(num_boxes,)`` or ``(num_boxes, 1)``.
    """
    raw = np.clip(logits.reshape(-1).astype(np.float64), -spec.score_clipping, spec.score_clipping)
    scores = 1.0 / (1.0 + np.exp(-raw))
    keep = np.flatnonzero(scores >= min_score)
    if keep.size == 0:
        return np.empty((0, 4), np.float64), np.empty((0,), np.float64)
    reg = regressors[keep, :4].astype(np.float64) / spec.input_size
    cx, cy = reg[:, 0] + anchors[keep, 0], reg[:, 1] + anchors[keep, 1]
    w, h = reg[:, 2], reg[:, 3]
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    valid = (w >= 0) & (h >= 0)  # MediaPipe drops boxes decoded with a negative size
    return boxes[valid], scores[keep][valid]


def _iou(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    """IoU of one box with many (xmin, ymin, xmax, ymax); 0 where they do not intersect."""
    ix0, iy0 = np.maximum(box[0], others[:, 0]), np.maximum(box[1], others[:, 1])
    ix1, iy1 = np.minimum(box[2], others[:, 2]), np.minimum(box[3], others[:, 3])
    inter = np.clip(ix1 - ix0, 0, None) * np.clip(iy1 - iy0, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1])
    union = area + areas - inter
    return np.where((inter > 0) & (union > 0), inter / np.where(union > 0, union, 1.0), 0.0)


def weighted_nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> list[tuple[np.ndarray, float]]:
    """MediaPipe's WEIGHTED non-maximum suppression: ``[(box, score)]``, best first.

    The best remaining box takes every remaining box whose IoU with it exceeds ``iou_threshold`` (itself
    included); the cluster's box is their score-weighted mean, its score the best box's.
    """
    order = np.argsort(-scores, kind="stable")
    remaining = order
    out: list[tuple[np.ndarray, float]] = []
    while remaining.size:
        best = remaining[0]
        overlap = _iou(boxes[best], boxes[remaining])
        cluster = remaining[overlap > iou_threshold]
        weights = scores[cluster]
        merged = (boxes[cluster] * weights[:, None]).sum(axis=0) / weights.sum()
        out.append((merged, float(scores[best])))
        remaining = remaining[overlap <= iou_threshold]
    return out


class BlazeFace:
    """One BlazeFace model in an ONNX Runtime session; :meth:`detect_batch` runs many frames in one call.

    ``variant`` ``"short"`` (128 px, faces within ~2 m) or ``"full"`` (192 px, up to ~5 m); ``model_path``
    overrides the packaged file; ``providers`` are ONNX Runtime execution providers in priority order
    (default CPU); ``intra_op_threads`` 1 by default because worker threads already run in parallel;
    ``min_score`` defaults to MediaPipe's threshold for the model (:attr:`BlazeFaceSpec.min_score`).
    A missing or unreadable model file raises at construction, naming the file.
    """

    def __init__(
        self,
        variant: str = "full",
        *,
        model_path: str | Path | None = None,
        providers: Sequence[str] | None = None,
        intra_op_threads: int = 1,
        min_score: float | None = None,
    ) -> None:
        if variant not in SPECS:
            raise UsageError(f"unknown BlazeFace variant {variant!r}; choose short or full")
        self.spec = SPECS[variant]
        min_score = self.spec.min_score if min_score is None else min_score
        if not 0.0 <= min_score <= 1.0:
            raise UsageError(f"BlazeFace min_score must lie in [0, 1], got {min_score}")
        self.path = Path(model_path) if model_path is not None else self.spec.path
        self.min_score = float(min_score)
        self.anchors = ssd_anchors(self.spec)
        self.session = _open_session(self.path, self.spec, providers, intra_op_threads)
        self.providers: list[str] = list(self.session.get_providers())
        if providers and self.providers[0] != list(providers)[0]:
            # The GPU build of ORT falls back to the CPU silently; a face detector may, but it should say so.
            logger.warning("%s: BlazeFace runs on %s, not on the requested %s", self.path.name, self.providers[0],
                           list(providers)[0])
    def detect_batch(self, frames: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Faces of each RGB uint8 frame: one ``(K, 5)`` float64 array (x0, y0, x1, y1, score) per frame."""
        if not frames:
            return []
        size = self.spec.input_size
        tensors, frames_geometry = zip(*(to_tensor(frame, size) for frame in frames), strict=True)
        batch = np.ascontiguousarray(np.stack(tensors))
        regressors, logits = self.session.run(["regressors", "classificators"], {"input": batch})
        results = []
        for i, (side, x0, y0) in enumerate(frames_geometry):
            boxes, scores = decode(regressors[i], logits[i], self.anchors, self.spec, self.min_score)
            rows = [
                (box[0] * side + x0, box[1] * side + y0, box[2] * side + x0, box[3] * side + y0, score)
                for box, score in weighted_nms(boxes, scores, self.spec.nms_iou)
            ]
            results.append(np.asarray(rows, np.float64).reshape(-1, 5))
        return results

    def detect(self, rgb: np.ndarray) -> np.ndarray:
        """Faces of one RGB uint8 frame, ``(K, 5)`` (x0, y0, x1, y1, score) in its pixels, best first."""
        return self.detect_batch([rgb])[0]


def _open_session(path: Path, spec: BlazeFaceSpec, providers: Sequence[str] | None, threads: int) -> Any:
    """An ORT session over ``path``, checked to be the expected BlazeFace; errors name the file."""
    if not path.is_file():
        raise MissingDependencyError(
            f"{path}: BlazeFace {spec.key}-range model file not found (it ships inside mmdet-deploy: reinstall "
            "the package, or pass the file converted by scripts/convert_blazeface.py)"
        )
    ort = require("onnxruntime", "the BlazeFace face detector")
    options = ort.SessionOptions()
    options.intra_op_num_threads = max(0, int(threads))
    options.inter_op_num_threads = 1
    try:
        session = ort.InferenceSession(str(path), options, providers=list(providers or ["CPUExecutionProvider"]))
    except Exception as exc:  # ORT raises its own exception types for unreadable or invalid models
        reason = " ".join(str(exc).split())[:200]
        raise MissingDependencyError(f"{path}: not a loadable BlazeFace ONNX model ({reason})") from exc
    inputs = {i.name: i.shape for i in session.get_inputs()}
    outputs = {o.name: o.shape for o in session.get_outputs()}
    expected_in = [3, spec.input_size, spec.input_size]
    if list(inputs.get("input", [None])[1:]) != expected_in or {"regressors", "classificators"} - outputs.keys():
        raise MissingDependencyError(
            f"{path}: not the BlazeFace {spec.key}-range model (inputs {inputs}, outputs {list(outputs)}; expected "
            f"input [batch, {', '.join(map(str, expected_in))}] and outputs regressors, classificators)"
        )
    return session
