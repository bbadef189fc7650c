"""A faithful re-creation of the seed's inference method (task.ipynb), the end-to-end baseline.

What the seed does, and this module does the same way:

- one file at a time, batch size 1, PyTorch eager fp32, ``torch.no_grad``;
- videos: ``cv2.VideoCapture``; ``CAP_PROP_FRAME_COUNT`` capped at 10 s of ``CAP_PROP_FPS``; 10 indices by
  ``np.linspace(0, total - 1, 10, dtype=int)``; for each index a seek with ``cap.set(CAP_PROP_POS_FRAMES)``
  then ``cap.read()``; images: opened with PIL and repeated 10 times;
- per frame, face detection by a cascade in the seed's order, MediaPipe, then dlib (on a copy 320 px wide),
  then Haar, each only if installed; the largest face of the first detector that finds one, its box grown
  by 30 % (1.3x, clamped to the frame), cropped as a PIL image; no face: the whole frame;
- PIL ``resize((224, 224))`` (bilinear), then ToTensor and ImageNet normalisation done with torch tensors,
  ``torch.stack`` and ``unsqueeze(0)``; ``model(original, recons)`` with ``recons = original``; softmax,
  argmax; on CUDA the seed also calls ``torch.cuda.empty_cache()`` after every file.

One deliberate difference: the seed labels a file that raises as "real"; here it is counted as an error.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from mmdet_deploy.contract import FRAMES, IMAGE_SIZE, IMAGENET_MEAN, IMAGENET_STD
from mmdet_deploy.deps import available, require

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
#: The seed samples within the first 10 s of a video.
MAX_SECONDS = 10
#: The seed's dlib input width (it downsizes before detecting).
DLIB_WIDTH = 320
#: Box growth around a detected face (+30 %).
BOX_SCALE = 1.3

Box = tuple[int, int, int, int]  # x, y, w, h in pixels


class SeedFaceCascade:
    """MediaPipe -> dlib -> Haar, in the seed's order, each used only when it is installed here."""

    def __init__(self) -> None:
        self.detectors: list[tuple[str, Callable[[np.ndarray], list[Box]]]] = []
        if available("mediapipe"):
            mp = require("mediapipe")
            if hasattr(mp, "solutions"):
                fd = mp.solutions.face_detection.FaceDetection(model_selection=0, min_detection_confidence=0.5)
                self.detectors.append(("mediapipe", lambda rgb: _mediapipe_boxes(fd, rgb)))
        if available("dlib"):
            hog = require("dlib").get_frontal_face_detector()
            self.detectors.append(("dlib", lambda rgb: _dlib_boxes(hog, rgb)))
        haar_dir = getattr(getattr(cv2, "data", None), "haarcascades", "")
        haar_file = Path(haar_dir) / "haarcascade_frontalface_default.xml"
        if haar_file.is_file():
            cascade = cv2.CascadeClassifier(str(haar_file))
            self.detectors.append(("haar", lambda rgb: _haar_boxes(cascade, rgb)))

    @property
    def names(self) -> tuple[str, ...]:
        """Installed detectors, in the order they are tried."""
        return tuple(name for name, _ in self.detectors)

    def crop(self, image: Any) -> tuple[Any, str | None]:
        """``detect_and_crop_face_multi``: (PIL face crop or the whole image, detector that found it)."""
        rgb = np.asarray(image)
        height, width = rgb.shape[:2]
        for name, detect in self.detectors:
            boxes = detect(rgb)
            if boxes:
                x, y, w, h = max(boxes, key=lambda b: b[2] * b[3])
                cx, cy, side_w, side_h = x + w / 2, y + h / 2, w * BOX_SCALE, h * BOX_SCALE
                x0, y0 = max(0, int(cx - side_w / 2)), max(0, int(cy - side_h / 2))
                x1, y1 = min(width, int(cx + side_w / 2)), min(height, int(cy + side_h / 2))
                if x1 > x0 and y1 > y0:
                    return image.crop((x0, y0, x1, y1)), name
        return image, None


def _mediapipe_boxes(fd: Any, rgb: np.ndarray) -> list[Box]:
    result = fd.process(rgb)
    height, width = rgb.shape[:2]
    boxes = []
    for det in result.detections or ():
        rel = det.location_data.relative_bounding_box
        boxes.append((int(rel.xmin * width), int(rel.ymin * height), int(rel.width * width), int(rel.height * height)))
    return boxes


def _dlib_boxes(hog: Any, rgb: np.ndarray) -> list[Box]:
    scale = DLIB_WIDTH / rgb.shape[1]
    small = cv2.resize(rgb, (DLIB_WIDTH, int(rgb.shape[0] * scale)))
    return [
        (int(r.left() / scale), int(r.top() / scale), int(r.width() / scale), int(r.height() / scale))
        for r in hog(small, 1)
    ]


def _haar_boxes(cascade: Any, rgb: np.ndarray) -> list[Box]:
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    return [tuple(int(v) for v in b) for b in cascade.detectMultiScale(gray, 1.1, 5, minSize=(30, 30))]


class SeedPipeline:
    """The seed's per-file loop around a PyTorch model (``model(original, recons) -> logits``)."""

    def __init__(self, model: Any, device: str = "cpu") -> None:
        self.torch = require("torch", "the seed-style baseline")
        self.model = model.eval().to(device)
        self.device = device
        self.faces = SeedFaceCascade()
        self.mean = self.torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
        self.std = self.torch.tensor(IMAGENET_STD).view(3, 1, 1)
        self.stages: Counter[str] = Counter()
        self.detections: Counter[str] = Counter()

    def _timed(self, stage: str, fn: Callable[[], Any]) -> Any:
        t0 = time.perf_counter()
        out = fn()
        self.stages[stage] += time.perf_counter() - t0
        return out

    def _video_frames(self, path: Path) -> list[Any]:
        pil = require("PIL.Image", "the seed-style baseline")
        cap = cv2.VideoCapture(str(path))
        try:
            total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
            fps = cap.get(cv2.CAP_PROP_FPS)
            total = min(total, int(fps * MAX_SECONDS))
            faces = []
            for idx in np.linspace(0, total - 1, FRAMES, dtype=int):
                def read(idx: int = int(idx)) -> Any:
                    cap.set(cv2.CAP_PROP_POS_FRAMES, idx)
                    ok, frame = cap.read()
                    if not ok:
                        raise OSError(f"{path}: could not read frame {idx}")
                    return pil.fromarray(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))

                frame = self._timed("decode", read)
                faces.append(self._face(frame))
            return faces
        finally:
            cap.release()

    def _face(self, image: Any) -> Any:
        face, name = self._timed("face_detection", lambda: self.faces.crop(image))
        self.detections[name or "none"] += 1
        return face

    def _image_frames(self, path: Path) -> list[Any]:
        pil = require("PIL.Image", "the seed-style baseline")
        image = self._timed("decode", lambda: pil.open(path).convert("RGB"))
        return [self._face(image)] * FRAMES

    def _tensor(self, faces: list[Any]) -> Any:
        torch = self.torch
        pil = require("PIL.Image")
        tensors = []
        for face in faces:
            resized = face.resize((IMAGE_SIZE, IMAGE_SIZE), pil.BILINEAR)
            t = torch.from_numpy(np.asarray(resized, dtype=np.uint8).copy()).permute(2, 0, 1).float().div(255.0)
            tensors.append((t - self.mean) / self.std)
        return torch.stack(tensors).unsqueeze(0).to(self.device)

    def _infer(self, x: Any) -> int:
        torch = self.torch
        with torch.no_grad():
            logits = self.model(x, x)
            probs = torch.softmax(logits, dim=1)
            label = int(torch.argmax(probs).item())
        if self.device == "cuda":
            del x, logits, probs
            torch.cuda.empty_cache()
        return label

    def predict(self, path: Path) -> int:
        """Label (0 real, 1 fake) of one file, the seed's way."""
        suffix = path.suffix.lower()
        if suffix in VIDEO_SUFFIXES:
            faces = self._video_frames(path)
        elif suffix in IMAGE_SUFFIXES:
            faces = self._image_frames(path)
        else:
            raise ValueError(f"{path}: not a media file the seed reads")
        x = self._timed("preprocess", lambda: self._tensor(faces))
        return self._timed("inference", lambda: self._infer(x))

    def run(self, files: Sequence[Path]) -> dict[str, Any]:
        """Process ``files`` one at a time; files/s and the time split by stage (seconds)."""
        self.stages.clear()
        self.detections.clear()
        labels: dict[str, int] = {}
        errors: dict[str, str] = {}
        t0 = time.perf_counter()
        for path in files:
            try:
                labels[path.name] = self.predict(path)
            except Exception as exc:  # the seed would say "real"; the benchmark counts an error
                errors[path.name] = f"{type(exc).__name__}: {exc}"
        wall = time.perf_counter() - t0
        return {
            "method": "seed-style: one file at a time, batch 1, PyTorch eager fp32, cv2 seek, per-frame faces",
            "detectors": list(self.faces.names),
            "files": len(files),
            "ok": len(labels),
            "errors": errors,
            "wall_s": wall,
            "files_per_s": len(files) / wall if wall > 0 else None,
            "clips_per_s": len(labels) / wall if wall > 0 else None,
            "stages_s": dict(self.stages),
            "face_detections": dict(self.detections),
            "labels": labels,
        }
