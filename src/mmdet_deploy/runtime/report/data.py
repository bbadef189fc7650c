"""Read a run folder for the review report, without writing to it (a run may still be appending).

Everything is optional except ``results.csv``: a partial run has no ``summary.json``, a run without
``--report`` has no ``thumbs/``, the frames preset has no ``faces.csv``. Incomplete last lines (a run killed
or still writing) are skipped here, never repaired: repairing is ``--resume``'s job.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmdet_deploy.errors import UsageError
from mmdet_deploy.runtime.records import (
    CROPS_DIR,
    FACES_COLUMNS,
    FACES_NAME,
    THUMB_CROPS,
    THUMB_FRAME,
    THUMB_META,
    THUMBS_DIR,
    WINDOWS_COLUMNS,
    WINDOWS_NAME,
    load_table,
    review_path,
)
from mmdet_deploy.runtime.results import COLUMNS, MANIFEST_NAME, RESULTS_NAME, ResultRow
from mmdet_deploy.runtime.sink import SUMMARY_NAME
from mmdet_deploy.runtime.thumbnails import CROP_THUMB_SIDE, crop_strip, decode_image, encode_jpeg

logger = logging.getLogger(__name__)

#: Crops shown per file when they are rebuilt from ``crops/`` (the clip length of the model).
CROPS_SHOWN = 10


@dataclass(frozen=True)
class FaceRecord:
    """One faces.csv row: the face chosen on ``frame`` (box in original pixels before the margin), or none."""

    frame: int
    detector: str
    box: tuple[float, float, float, float] | None  # x, y, w, h
    score: float | None


@dataclass(frozen=True)
class WindowRecord:
    """One windows.csv row: a window's frames (end inclusive), seconds (None without a frame rate), p(fake)."""

    window: int
    start_frame: int
    end_frame: int
    start_s: float | None
    end_s: float | None
    prob_fake: float


@dataclass
class Thumbs:
    """The pictures of one file: a JPEG strip of its crops and, when kept, a JPEG of one sampled frame."""

    crops_jpeg: bytes | None = None
    crop_frames: list[int] = field(default_factory=list)
    window: int | None = None
    frame_jpeg: bytes | None = None
    frame: int | None = None
    frame_size: tuple[int, int] | None = None  # source (width, height)


@dataclass
class RunData:
    """A run folder as the report sees it."""

    out_dir: Path
    rows: list[ResultRow]
    manifest: dict[str, Any]
    summary: dict[str, Any] | None
    faces: dict[str, list[FaceRecord]]
    windows: dict[str, list[WindowRecord]]
    dropped_lines: int = 0

    @property
    def preset(self) -> str:
        return str(self.manifest.get("preset", ""))

    @property
    def threshold(self) -> float:
        return float(self.manifest.get("threshold", 0.5))

    def thumbs(self, name: str) -> Thumbs | None:
        """The pictures of file ``name``: from ``thumbs/`` (``--report``), else rebuilt from ``crops/``."""
        return _read_thumbs(self.out_dir, name) or self._thumbs_from_crops(name)

    def _thumbs_from_crops(self, name: str) -> Thumbs | None:
        if not self.manifest.get("save_crops"):
            return None  # crops/ of an earlier run would be stale: only trust it when this run wrote it
        folder = self.out_dir / CROPS_DIR / review_path(name)
        frames = [f.frame for f in self.faces.get(name, [])]
        if not frames and folder.is_dir():
            frames = sorted(int(p.stem) for p in folder.glob("*.png") if p.stem.isdigit())
        images, kept = [], []
        for frame in frames[:CROPS_SHOWN]:
            path = folder / f"{frame}.png"
            image = decode_image(path.read_bytes()) if path.is_file() else None
            if image is not None:
                images.append(image)
                kept.append(frame)
        if not images:
            return None
        return Thumbs(crops_jpeg=encode_jpeg(crop_strip(images, CROP_THUMB_SIDE)), crop_frames=kept, window=0)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        logger.warning("%s: unreadable (%s); the report goes without it", path, exc)
        return None
    return data if isinstance(data, dict) else None


def read_results(path: Path) -> tuple[list[ResultRow], int]:
    """The complete rows of ``results.csv`` and the number of lines skipped; the file is never rewritten."""
    if not path.is_file():
        raise UsageError(f"{path}: no results.csv here; pass the --out folder of an mmdet-run")
    records, dropped = load_table(path, COLUMNS)
    rows: list[ResultRow] = []
    seen: set[str] = set()
    for record in records:
        try:
            row = ResultRow.from_fields(dict(zip(COLUMNS, record, strict=True)))
        except (ValueError, KeyError):
            dropped += 1
            continue
        if row.filename not in seen:
            seen.add(row.filename)
            rows.append(row)
    return rows, dropped


def _float(text: str) -> float | None:
    return float(text) if text else None


def read_faces(path: Path) -> dict[str, list[FaceRecord]]:
    """faces.csv grouped by file name (empty when absent)."""
    faces: dict[str, list[FaceRecord]] = {}
    for record in load_table(path, FACES_COLUMNS)[0]:
        name, frame, detector, x, y, w, h, score = record
        try:
            box = (float(x), float(y), float(w), float(h)) if x else None
            faces.setdefault(name, []).append(FaceRecord(int(frame), detector, box, _float(score)))
        except ValueError:
            continue
    return faces


def read_windows(path: Path) -> dict[str, list[WindowRecord]]:
    """windows.csv grouped by file name (empty when absent)."""
    windows: dict[str, list[WindowRecord]] = {}
    for record in load_table(path, WINDOWS_COLUMNS)[0]:
        name, window, start, end, start_s, end_s, prob = record
        try:
            entry = WindowRecord(int(window), int(start), int(end), _float(start_s), _float(end_s), float(prob))
        except ValueError:
            continue
        windows.setdefault(name, []).append(entry)
    return windows


def _read_thumbs(out_dir: Path, name: str) -> Thumbs | None:
    folder = out_dir / THUMBS_DIR / review_path(name)
    meta = _read_json(folder / THUMB_META)
    if meta is None or meta.get("filename") != name:
        return None
    thumbs = Thumbs(crop_frames=[int(f) for f in meta.get("crop_frames", [])], window=meta.get("window"))
    if (folder / THUMB_CROPS).is_file():
        thumbs.crops_jpeg = (folder / THUMB_CROPS).read_bytes()
    if (folder / THUMB_FRAME).is_file() and "width" in meta and "height" in meta:
        thumbs.frame_jpeg = (folder / THUMB_FRAME).read_bytes()
        thumbs.frame = int(meta["frame"])
        thumbs.frame_size = (int(meta["width"]), int(meta["height"]))
    return thumbs


def load_run(out_dir: str | Path) -> RunData:
    """Read a run folder (a finished, partial or resumed run); :class:`UsageError` when it holds no results."""
    out = Path(out_dir)
    if not out.is_dir():
        raise UsageError(f"{out}: not a folder; pass the --out folder of an mmdet-run")
    rows, dropped = read_results(out / RESULTS_NAME)
    if dropped:
        logger.warning("%s: skipped %d incomplete line(s) (a run was interrupted or is still writing)",
                       out / RESULTS_NAME, dropped)
    manifest = _read_json(out / MANIFEST_NAME) or {}
    return RunData(
        out_dir=out, rows=rows, manifest=manifest, summary=_read_json(out / SUMMARY_NAME),
        faces=read_faces(out / FACES_NAME), windows=read_windows(out / WINDOWS_NAME), dropped_lines=dropped,
    )

