"""What the run saw, per file, beside ``results.csv``: ``faces.csv``, ``windows.csv``, ``crops/``, ``thumbs/``.

* ``faces.csv`` (faces preset): ``filename,frame,detector,x,y,w,h,score``, one row per distinct sampled frame
  of each scored file; ``frame`` is the frame index in the video (0 for an image); the box is the chosen face
  in original-frame pixels *before* the margin (``x,y`` its top-left corner, ``w,h`` its size); ``detector``
  and ``x,y,w,h,score`` are empty when that frame had no face, ``score`` also when the detector gives no
  confidence (Haar, dlib HOG).
* ``windows.csv`` (frames preset, videos): ``filename,window,start_frame,end_frame,start_s,end_s,prob_fake``,
  one row per scored window; ``end_frame`` is inclusive, ``start_s`` = start_frame / fps and ``end_s`` =
  (end_frame + 1) / fps (the window covers its last frame's full duration); the seconds are empty when the
  container declares no frame rate.
* ``crops/<filename>/<frame>.png`` (``--save-crops``): the exact 224x224 RGB model inputs, lossless.
* ``thumbs/<filename>/`` (``--report``): the small JPEGs the review report embeds (``crops.jpg``: a strip of
  the scored crops, ``frame.jpg``: one sampled frame) and ``meta.json`` saying which frames they show.

``filename`` is the results.csv key, written with the same CSV rules. In folder names it is used as it is,
except that path parts that could leave the folder (``..``, ``.``, an empty part of an absolute path) and
``%`` are percent-escaped (see :func:`review_path`).

Durability and ``--resume``: the rows of one file are appended with a single write and fsync-ed *before* the
file's results.csv row, so a kill leaves, at worst, rows of a file that has no results row yet (or a partial
last line). Resuming drops exactly those (they are written again when the file is redone): no row is lost
and none is duplicated.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import shutil
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path, PurePosixPath

import numpy as np

from mmdet_deploy.errors import UsageError
from mmdet_deploy.runtime.discovery import VIDEO
from mmdet_deploy.runtime.preprocess import PreparedFile
from mmdet_deploy.runtime.results import SCORED, ResultRow, atomic_write_text
from mmdet_deploy.runtime.thumbnails import (
    CROP_THUMB_SIDE,
    FRAME_THUMB_SIDE,
    crop_strip,
    encode_jpeg,
    encode_png,
    write_bytes,
)

logger = logging.getLogger(__name__)

FACES_NAME = "faces.csv"
FACES_COLUMNS = ("filename", "frame", "detector", "x", "y", "w", "h", "score")
WINDOWS_NAME = "windows.csv"
WINDOWS_COLUMNS = ("filename", "window", "start_frame", "end_frame", "start_s", "end_s", "prob_fake")
CROPS_DIR = "crops"
THUMBS_DIR = "thumbs"
THUMB_META = "meta.json"
THUMB_CROPS = "crops.jpg"
THUMB_FRAME = "frame.jpg"


def review_path(name: str) -> PurePosixPath:
    """The relative folder of a results.csv ``name`` under ``crops/`` or ``thumbs/``; it never leaves them.

    Equal to ``name`` for every name a folder INPUT produces; one-to-one for all names (``%`` is escaped first).
    """
    special = {"": "%", ".": "%2E", "..": "%2E%2E"}
    parts = [part.replace("%", "%25") for part in name.split("/")]
    return PurePosixPath(*[special.get(part, part) for part in parts])


def _csv_line(values: Iterable[str]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(list(values))
    return buffer.getvalue()


def load_table(path: Path, columns: Sequence[str]) -> tuple[list[list[str]], int]:
    """The complete records of an appended table and how many lines were dropped as incomplete or garbled.

    A last line without its newline (an interrupted write) and records with the wrong number of fields are
    dropped. A missing file has no records. A header other than ``columns`` raises :class:`UsageError`.
    """
    if not path.exists():
        return [], 0
    text = path.read_bytes().decode("utf-8", errors="replace")
    complete, _, partial = text.rpartition("\n")
    lines = complete.split("\n") if complete else []
    if not lines:
        return [], 1 if partial else 0
    header = next(csv.reader([lines[0]]), [])
    if tuple(header) != tuple(columns):
        raise UsageError(f"{path}: not a table of this version (columns {header}); choose another --out")
    records, dropped = [], 1 if partial else 0
    for line in lines[1:]:
        try:
            record = next(csv.reader([line]))
        except (StopIteration, csv.Error):
            dropped += 1
            continue
        if len(record) != len(columns):
            dropped += 1
            continue
        records.append(record)
    return records, dropped


class AppendedTable:
    """A CSV file appended one file's rows at a time, durably (one write, flush, fsync per file).

    ``keep`` None starts a new file. Otherwise (``--resume``) the records of the files named in ``keep``
    are kept and every other record (a file whose results.csv row never got written) is dropped, the file
    rewritten atomically when anything was dropped.
    """

    def __init__(self, path: Path, columns: Sequence[str], keep: set[str] | None = None, fsync: bool = True) -> None:
        self.path = path
        self.columns = tuple(columns)
        self.fsync = fsync
        if keep is None:
            atomic_write_text(path, _csv_line(self.columns))
        else:
            records, dropped = load_table(path, self.columns)
            kept = [r for r in records if r[0] in keep]
            dropped += len(records) - len(kept)
            if dropped:
                logger.info("%s: dropped %d row(s) of files without a results.csv row (redone now)", path, dropped)
            if dropped or not path.exists():
                atomic_write_text(path, _csv_line(self.columns) + "".join(_csv_line(r) for r in kept))
        self._handle = open(path, "a", encoding="utf-8", newline="")

    def append(self, records: Sequence[Sequence[str]]) -> None:
        """Append the records of one file in a single write (a kill leaves whole lines plus one prefix at most)."""
        if not records:
            return
        self._handle.write("".join(_csv_line(r) for r in records))
        self._handle.flush()
        if self.fsync:
            os.fsync(self._handle.fileno())

    def close(self) -> None:
        if not self._handle.closed:
            self._handle.close()


def _num(value: float | None, digits: int) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def face_records(name: str, prepared: PreparedFile) -> list[list[str]]:
    """faces.csv records of one prepared file (faces preset)."""
    records = []
    for face in prepared.faces:
        box = face.box
        if box is None:
            records.append([name, str(face.frame), "", "", "", "", "", ""])
            continue
        records.append([
            name, str(face.frame), face.detector or "", _num(box.x0, 2), _num(box.y0, 2),
            _num(box.x1 - box.x0, 2), _num(box.y1 - box.y0, 2), _num(box.score, 4),
        ])
    return records


def window_records(name: str, prepared: PreparedFile, probs: Sequence[float]) -> list[list[str]]:
    """windows.csv records of one prepared video (frames preset): boundaries in frames and seconds, p(fake)."""
    fps = prepared.fps if prepared.fps and prepared.fps > 0 else None
    records = []
    for index, (frames, prob) in enumerate(zip(prepared.frame_indices, probs, strict=True)):
        start, end = frames[0], frames[-1]
        records.append([
            name, str(index), str(start), str(end), _num(start / fps if fps else None, 3),
            _num((end + 1) / fps if fps else None, 3), f"{prob:.6f}",
        ])
    return records


def _distinct_crops(prepared: PreparedFile, window: int) -> tuple[list[int], list[np.ndarray]]:
    """The frame indices of one window, without repeats, and the model input (S, S, 3) of each."""
    frames: list[int] = []
    crops: list[np.ndarray] = []
    for t, frame in enumerate(prepared.frame_indices[window]):
        if frame not in frames:
            frames.append(frame)
            crops.append(prepared.window(window)[t])
    return frames, crops


class RunRecorder:
    """Writes the review outputs of each file as it finishes; the run calls :meth:`record` before the row.

    ``done`` names the files already in results.csv when resuming (None for a new run). Tables follow the
    preset: ``faces.csv`` for faces, ``windows.csv`` for frames; a new run removes the other preset's table
    left by the run it replaces. ``save_crops`` writes ``crops/``; ``thumbnails`` writes ``thumbs/``.
    """

    def __init__(self, out_dir: Path, preset: str, *, done: set[str] | None = None, save_crops: bool = False,
                 thumbnails: bool = False, fsync: bool = True) -> None:
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.save_crops = save_crops
        self.thumbnails = thumbnails
        self.faces: AppendedTable | None = None
        self.windows: AppendedTable | None = None
        if preset == "faces":
            self.faces = AppendedTable(self.out_dir / FACES_NAME, FACES_COLUMNS, done, fsync)
            stale = self.out_dir / WINDOWS_NAME
        else:
            self.windows = AppendedTable(self.out_dir / WINDOWS_NAME, WINDOWS_COLUMNS, done, fsync)
            stale = self.out_dir / FACES_NAME
        if done is None and stale.exists():
            stale.unlink()  # it belongs to the run this one replaces

    def record(self, row: ResultRow, prepared: PreparedFile | None, probs: Sequence[float]) -> None:
        """Write what was scored of one file (nothing for errors and skipped files)."""
        if prepared is None or row.status not in SCORED:
            return
        name = row.filename
        # Images first, tables last: once a file's rows are on disk, everything it references exists.
        if self.save_crops:
            self._guarded(name, "crops", lambda: self._write_crops(name, prepared))
        if self.thumbnails:
            self._guarded(name, "report thumbnails", lambda: self._write_thumbs(name, prepared, probs))
        if self.faces is not None:
            self.faces.append(face_records(name, prepared))
        if self.windows is not None and prepared.kind == VIDEO:
            self.windows.append(window_records(name, prepared, probs))

    @staticmethod
    def _guarded(name: str, what: str, write: Callable[[], None]) -> None:
        try:
            write()
        except OSError as exc:  # a full disk or an over-long name loses pictures, never the run or its rows
            logger.warning("%s: could not save its %s (%s)", name, what, exc.strerror or exc)

    def _fresh_dir(self, top: str, name: str) -> Path:
        folder = self.out_dir / top / review_path(name)
        if folder.is_dir():
            shutil.rmtree(folder)  # an earlier attempt's files must not mix with this one's
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def _write_crops(self, name: str, prepared: PreparedFile) -> None:
        folder = self._fresh_dir(CROPS_DIR, name)
        written: set[int] = set()
        for window in range(prepared.windows):
            for t, frame in enumerate(prepared.frame_indices[window]):
                if frame not in written:
                    write_bytes(folder / f"{frame}.png", encode_png(prepared.window(window)[t]))
                    written.add(frame)

    def _write_thumbs(self, name: str, prepared: PreparedFile, probs: Sequence[float]) -> None:
        folder = self._fresh_dir(THUMBS_DIR, name)
        # The window a reviewer should see first: the most suspicious one.
        window = int(np.argmax(probs)) if len(probs) else 0
        frames, crops = _distinct_crops(prepared, window)
        write_bytes(folder / THUMB_CROPS, encode_jpeg(crop_strip(crops, CROP_THUMB_SIDE)))
        meta: dict[str, object] = {"filename": name, "window": window, "crop_frames": frames,
                                   "crop_side": CROP_THUMB_SIDE}
        if prepared.preview is not None and prepared.frame_size is not None:
            write_bytes(folder / THUMB_FRAME, encode_jpeg(prepared.preview))
            meta |= {"frame": prepared.preview_frame, "width": prepared.frame_size[0],
                     "height": prepared.frame_size[1]}
        # Last, and renamed into place: meta.json present means the pictures it names are complete. No fsync:
        # thumbnails are a cache (a lost one costs a picture in the report, never a row).
        write_bytes(folder / THUMB_META, (json.dumps(meta) + "\n").encode("utf-8"))

    def close(self) -> None:
        for table in (self.faces, self.windows):
            if table is not None:
                table.close()

    def __enter__(self) -> RunRecorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


#: Frame thumbnail size the preprocessor keeps when report thumbnails are written.
PREVIEW_SIDE = FRAME_THUMB_SIDE
