"""``results.csv`` (one row per input file, durable as it is written) and ``predictions.csv`` (the seed's format).

Durability: each row is one line, written with a single ``write``, flushed and ``fsync``-ed before the next
file is reported, so a run killed at any moment (``kill -9``, power loss) leaves every finished row on disk
and at most one partial last line. :func:`load_results` drops such a partial or garbled line (and rewrites
the file without it) so that ``--resume`` continues with no duplicates.

``predictions.csv`` is derived from ``results.csv`` and rewritten atomically (temporary file + rename) at the
end of a run, so it is never half written: ``filename,label``, one row per scored file; files that failed
appear only when the user chose an ``--error-label``.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path

from mmdet_deploy.errors import UsageError
from mmdet_deploy.runtime.names import as_written, printable

logger = logging.getLogger(__name__)

RESULTS_NAME = "results.csv"
PREDICTIONS_NAME = "predictions.csv"

OK = "ok"
NO_FACE = "no_face"
ERROR = "error"
SKIPPED = "skipped"
STATUSES = (OK, NO_FACE, ERROR, SKIPPED)
#: Statuses that carry a label (a file was scored).
SCORED = (OK, NO_FACE)


@dataclass
class ResultRow:
    """One line of ``results.csv``.

    ``label``/``prob_fake`` are None unless the file was scored. ``frames`` counts the distinct source frames
    fed to the model, ``windows`` the clips scored (their mean ``prob_fake`` is the file's), ``seconds`` the
    processing time spent on this file (decode + faces + preprocessing + its share of inference).
    """

    #: The file's name escaped by :func:`~mmdet_deploy.runtime.names.escape_name` (as discovery gives it).
    filename: str
    label: int | None = None
    prob_fake: float | None = None
    status: str = OK
    reason: str = ""
    kind: str = ""
    frames: int = 0
    windows: int = 0
    detector: str = ""
    frames_without_face: int = 0
    seconds: float = 0.0

    def to_fields(self) -> list[str]:
        prob = "" if self.prob_fake is None else f"{self.prob_fake:.6f}"
        label = "" if self.label is None else str(self.label)
        # One row must stay one line: the partial-line repair relies on it. printable(): a decoder message
        # may quote raw bytes of a file name, which UTF-8 cannot encode.
        reason = printable(" ".join(self.reason.split()))
        return [
            as_written(self.filename), label, prob, self.status, reason, self.kind, str(self.frames), str(self.windows),
            self.detector, str(self.frames_without_face), f"{self.seconds:.3f}",
        ]

    @classmethod
    def from_fields(cls, values: Mapping[str, str]) -> ResultRow:
        """Parse a CSV record; ValueError when it is not a complete, valid row."""
        status = values["status"]
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}")
        label = int(values["label"]) if values["label"] else None
        if label not in (None, 0, 1) or (status in SCORED) != (label is not None):
            raise ValueError(f"label {values['label']!r} does not fit status {status!r}")
        return cls(
            filename=values["filename"],
            label=label,
            prob_fake=float(values["prob_fake"]) if values["prob_fake"] else None,
            status=status,
            reason=values["reason"],
            kind=values["kind"],
            frames=int(values["frames"]),
            windows=int(values["windows"]),
            detector=values["detector"],
            frames_without_face=int(values["frames_without_face"]),
            seconds=float(values["seconds"]),
        )


COLUMNS = tuple(f.name for f in fields(ResultRow))


def _csv_line(values: Iterable[str]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(list(values))
    return buffer.getvalue()


def load_results(path: Path) -> list[ResultRow]:
    """Read ``results.csv``, repairing what an interrupted run can leave behind.

    A last line without its newline (the process died mid-write) and any row that does not parse are
    dropped, and the file is rewritten atomically with the valid rows only. A header that differs from
    :data:`COLUMNS` raises :class:`UsageError` (another tool's file, or an incompatible version).
    """
    if not path.exists():
        return []
    data = path.read_bytes()
    text = data.decode("utf-8", errors="replace")
    complete, _, partial = text.rpartition("\n")
    lines = complete.split("\n") if complete else []
    if not lines:
        if partial:
            logger.warning("%s: dropped an incomplete header line left by an interrupted run", as_written(str(path)))
        _rewrite(path, [])
        return []
    header = next(csv.reader([lines[0]]))
    if tuple(header) != COLUMNS:
        raise UsageError(f"{as_written(str(path))}: not a results file of this version (columns {header}); "
                         "choose another --out")
    rows: list[ResultRow] = []
    dropped = 1 if partial else 0
    seen: set[str] = set()
    for line in lines[1:]:
        try:
            record = next(csv.reader([line]))
            if len(record) != len(COLUMNS):
                raise ValueError(f"{len(record)} fields instead of {len(COLUMNS)}")
            row = ResultRow.from_fields(dict(zip(COLUMNS, record, strict=True)))
        except (ValueError, StopIteration, csv.Error):
            dropped += 1
            continue
        if row.filename in seen:  # only possible in a hand-edited file; keep the first
            dropped += 1
            continue
        seen.add(row.filename)
        rows.append(row)
    if dropped:
        logger.warning("%s: dropped %d incomplete or invalid row(s) left by an interrupted run", as_written(str(path)),
                       dropped)
        _rewrite(path, rows)
    return rows


def _rewrite(path: Path, rows: Iterable[ResultRow]) -> None:
    text = _csv_line(COLUMNS) + "".join(_csv_line(r.to_fields()) for r in rows)
    atomic_write_text(path, text)


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that a reader sees the old or the new content, never a mix."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8", newline="") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


class ResultsWriter:
    """Appends rows to ``results.csv`` durably; :meth:`done` lists the files already reported.

    Opening with ``resume=False`` refuses an existing non-empty ``results.csv`` (silently mixing or erasing
    an earlier run is worse than asking); ``overwrite=True`` starts a fresh file.
    """

    def __init__(self, out_dir: Path, resume: bool = False, overwrite: bool = False, fsync: bool = True) -> None:
        self.check_out_dir(out_dir, resume, overwrite)
        self.out_dir = Path(out_dir)
        self.path = self.out_dir / RESULTS_NAME
        self.fsync = fsync
        make_out_dir(self.out_dir)
        self.previous: list[ResultRow] = load_results(self.path) if resume else []
        new_file = overwrite or not self.path.exists() or self.path.stat().st_size == 0
        try:
            self._handle = open(self.path, "w" if new_file else "a", encoding="utf-8", newline="")
        except OSError as exc:
            raise UsageError(f"{as_written(str(self.path))}: cannot write the results ({exc.strerror or exc})") from exc
        if new_file:
            self._append(_csv_line(COLUMNS))
        self.rows: list[ResultRow] = list(self.previous)

    @staticmethod
    def check_out_dir(out_dir: Path, resume: bool, overwrite: bool) -> None:
        """Raise :class:`UsageError` when these flags cannot apply to ``out_dir`` (checked without writing)."""
        if resume and overwrite:
            raise UsageError("--resume and --overwrite contradict each other; choose one")
        out_dir = Path(out_dir)
        shown = as_written(str(out_dir))
        if out_dir.is_symlink() and not out_dir.exists():
            raise UsageError(f"{shown}: --out is a dangling symbolic link (its target {os.readlink(out_dir)!r} "
                             "does not exist); remove it or choose another folder")
        if out_dir.exists() and not out_dir.is_dir():
            raise UsageError(f"{shown}: --out exists and is not a folder")
        _check_can_create(out_dir)
        path = out_dir / RESULTS_NAME
        if not resume and not overwrite and path.exists() and path.stat().st_size > 0:
            raise UsageError(f"{as_written(str(path))} already exists; pass --resume to continue that run or "
                             "--overwrite to replace it")

    def done(self) -> set[str]:
        """Names of files that already have a row (from a previous run or this one)."""
        return {row.filename for row in self.rows}

    def write(self, row: ResultRow) -> None:
        self._append(_csv_line(row.to_fields()))
        self.rows.append(row)

    def _append(self, line: str) -> None:
        # One write per row: a kill leaves either the whole line or a prefix without newline (repairable).
        self._handle.write(line)
        self._handle.flush()
        if self.fsync:
            os.fsync(self._handle.fileno())

    def close(self) -> None:
        if not self._handle.closed:
            self._handle.close()

    def __enter__(self) -> ResultsWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _check_can_create(out_dir: Path) -> None:
    """Refuse an ``--out`` that cannot be created or written, before any work: the nearest existing folder
    on its path must be a writable folder (not a file, not /proc)."""
    shown = as_written(str(out_dir))
    parent = out_dir
    while not parent.exists() and not parent.is_symlink() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise UsageError(f"{shown}: cannot create --out: {as_written(str(parent))} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"{shown}: cannot write --out: {as_written(str(parent))} is not writable")


def make_out_dir(out_dir: Path) -> None:
    """Create the output folder; any OS refusal (a file on the path, /proc, a read-only disk) is one line."""
    try:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"{as_written(str(out_dir))}: cannot create --out ({exc.strerror or exc})") from exc


def write_predictions(out_dir: Path, rows: Iterable[ResultRow], error_label: int | None = None) -> Path:
    """Write ``predictions.csv`` (``filename,label``) from result rows, atomically; returns its path.

    Scored files (``ok``, ``no_face``) get their label. Failed files are left out unless ``error_label``
    (0 or 1) is given, in which case they get that label; ``skipped`` (non-media) files never appear.
    """
    if error_label not in (None, 0, 1):
        raise UsageError(f"--error-label must be 0 or 1, got {error_label}")
    lines = [_csv_line(("filename", "label"))]
    for row in rows:
        if row.status in SCORED and row.label is not None:
            lines.append(_csv_line((as_written(row.filename), str(row.label))))
        elif row.status == ERROR and error_label is not None:
            lines.append(_csv_line((as_written(row.filename), str(error_label))))
    path = Path(out_dir) / PREDICTIONS_NAME
    atomic_write_text(path, "".join(lines))
    return path


MANIFEST_NAME = "run.json"
#: Settings that change predictions: resuming with any of them changed would mix two different runs.
#: ``input`` too: rows are keyed on names relative to INPUT, so another INPUT's files would be mistaken for
#: this one's.
MANIFEST_KEYS = ("checkpoint_sha256", "head", "config", "precision", "preset", "threshold", "frames", "image_size",
                 "max_windows", "face_detectors", "face_chain", "input", "recons")


def check_manifest(out_dir: Path, settings: Mapping[str, object], resume: bool) -> None:
    """Record the run's settings in ``run.json``; on ``--resume`` refuse settings that differ from the first run.

    ``settings`` must hold every key of :data:`MANIFEST_KEYS` (JSON-serialisable values); extra keys are
    recorded for information only.
    """
    path = Path(out_dir) / MANIFEST_NAME
    current = {key: settings[key] for key in MANIFEST_KEYS} | dict(settings)
    if resume and path.exists():
        try:
            previous = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise UsageError(f"{path}: cannot read the settings of the run to resume ({exc})") from exc
        changed = [
            f"{key}: {previous.get(key)!r} -> {current[key]!r}"
            for key in MANIFEST_KEYS
            if key in previous and previous[key] != current[key]
        ]
        if changed:
            raise UsageError(
                f"{path}: --resume with different settings would mix two runs ({'; '.join(changed)}); "
                "use the same settings or another --out"
            )
        return
    atomic_write_text(path, json.dumps(current, indent=2, sort_keys=True) + "\n")
