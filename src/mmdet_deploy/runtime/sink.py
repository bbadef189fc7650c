"""The results sink: everything a run writes into its output folder, in one object any engine can feed.

::

    with ResultsSink(out, resume=False, overwrite=False, error_label=None) as sink:
        sink.start(settings)                 # locks the folder; run.json; on resume, refuses changed settings
        todo = sink.pending(items)           # files without a row yet
        for row in rows:                     # from any engine, in any order
            sink.write(row)                  # results.csv: appended and fsync'ed, one line per file
        sink.finish(report)                  # predictions.csv and summary.json, atomically

:meth:`finish` (or :meth:`write_predictions` alone, after an abort) keeps ``predictions.csv`` matching
``results.csv``. File formats and durability: :mod:`mmdet_deploy.runtime.results`.

One writer per folder: :meth:`start` takes an exclusive ``flock`` on ``.mmdet-run.lock`` in the folder (in
every mode: new, ``--resume``, ``--overwrite``) and holds it until :meth:`close`; a second run into the same
folder gets a :class:`~mmdet_deploy.errors.UsageError` (exit 2) instead of interleaving rows. The kernel
drops the lock when the process dies, so a killed run never leaves a stale lock behind.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from mmdet_deploy.errors import UsageError
from mmdet_deploy.runtime.discovery import MediaItem
from mmdet_deploy.runtime.names import as_written
from mmdet_deploy.runtime.results import (
    ERROR,
    MANIFEST_NAME,
    PREDICTIONS_NAME,
    RESULTS_NAME,
    ResultRow,
    ResultsWriter,
    atomic_write_text,
    check_manifest,
    make_out_dir,
    write_predictions,
)

logger = logging.getLogger(__name__)

SUMMARY_NAME = "summary.json"
#: The lock file of an output folder (kept: deleting it would let two runs lock different files).
LOCK_NAME = ".mmdet-run.lock"


class FolderLock:
    """An exclusive, non-blocking ``flock`` on ``LOCK_NAME`` in a folder (POSIX; a no-op where ``fcntl``
    does not exist). The file holds the owner's pid, for the message the second run gets."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        try:
            import fcntl
        except ImportError:  # not POSIX: no advisory locks; documented as unprotected
            return
        make_out_dir(self.folder)
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        except OSError as exc:
            raise UsageError(f"{as_written(str(self.folder))}: cannot write --out ({exc.strerror or exc})") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            owner = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise UsageError(
                f"{as_written(str(self.folder))}: another run (pid {owner}) is writing to this --out; wait for it "
                "to finish or choose another folder"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None


class ResultsSink:
    """``results.csv``, ``run.json``, ``predictions.csv`` and ``summary.json`` of one output folder.

    ``resume`` continues an earlier run in ``out_dir`` (its rows are kept, its files are not redone);
    ``overwrite`` replaces it; with neither, an existing ``results.csv`` is a :class:`UsageError`.
    ``error_label`` (None, 0 or 1) is the ``predictions.csv`` label of files that failed (None: left out).
    """

    def __init__(
        self, out_dir: Path, *, resume: bool = False, overwrite: bool = False, error_label: int | None = None
    ) -> None:
        self.check(out_dir, resume=resume, overwrite=overwrite)
        self.out_dir = Path(out_dir)
        self.resume = resume
        self.overwrite = overwrite
        self.error_label = error_label
        self.writer: ResultsWriter | None = None
        self.lock = FolderLock(self.out_dir)

    @staticmethod
    def check(out_dir: Path, *, resume: bool, overwrite: bool) -> None:
        """Raise :class:`UsageError` when the flags cannot apply to ``out_dir``; writes nothing."""
        ResultsWriter.check_out_dir(Path(out_dir), resume=resume, overwrite=overwrite)

    # -- paths -----------------------------------------------------------------------------------------------
    @property
    def results_path(self) -> Path:
        return self.out_dir / RESULTS_NAME

    @property
    def predictions_path(self) -> Path:
        return self.out_dir / PREDICTIONS_NAME

    @property
    def manifest_path(self) -> Path:
        return self.out_dir / MANIFEST_NAME

    @property
    def summary_path(self) -> Path:
        return self.out_dir / SUMMARY_NAME

    # -- lifecycle -------------------------------------------------------------------------------------------
    def start(self, settings: Mapping[str, object]) -> ResultsSink:
        """Lock the folder, open ``results.csv`` (repairing what a killed run left) and record ``settings``
        in ``run.json``.

        ``settings`` must hold every key of :data:`~mmdet_deploy.runtime.results.MANIFEST_KEYS`; on resume,
        a change in any of them is refused (it would mix two runs). Another run holding the folder is a
        :class:`UsageError`.
        """
        if self.writer is None:
            self.lock.acquire()
            try:
                # Checked again under the lock: the folder may have changed since the run's first check.
                self.writer = ResultsWriter(self.out_dir, resume=self.resume, overwrite=self.overwrite)
                check_manifest(self.out_dir, settings, self.resume)
            except BaseException:
                self.close()
                raise
            return self
        check_manifest(self.out_dir, settings, self.resume)
        return self

    def _open_writer(self) -> ResultsWriter:
        if self.writer is None:
            raise RuntimeError("ResultsSink.start() must be called before rows are written")
        return self.writer

    @property
    def rows(self) -> list[ResultRow]:
        """Every row of ``results.csv``: the resumed run's first, then this run's."""
        return self._open_writer().rows

    @property
    def previous(self) -> list[ResultRow]:
        """Rows that were already in ``results.csv`` when this run resumed."""
        return self._open_writer().previous

    @property
    def failed(self) -> int:
        """Files with status ``error`` in ``results.csv`` (resumed rows included)."""
        return sum(1 for row in self.rows if row.status == ERROR)

    def pending(self, items: Iterable[MediaItem]) -> list[MediaItem]:
        """The files of ``items`` that have no row yet, in order."""
        items = list(items)
        done = self._open_writer().done()
        todo = [item for item in items if item.name not in done]
        if done:
            logger.info("resuming: %d files already in results.csv, %d to go", len(items) - len(todo), len(todo))
        return todo

    def write(self, row: ResultRow) -> None:
        """Append one finished file's row to ``results.csv`` (durable when this returns)."""
        self._open_writer().write(row)

    def write_predictions(self) -> Path:
        """Rewrite ``predictions.csv`` from the rows so far (atomic); safe after an abort."""
        return write_predictions(self.out_dir, self.rows, self.error_label)

    def finish(self, report: Mapping[str, Any]) -> None:
        """Write ``predictions.csv`` and ``summary.json`` (``report``, JSON-serialisable)."""
        self.write_predictions()
        self.write_summary(report)

    def write_summary(self, report: Mapping[str, Any]) -> Path:
        atomic_write_text(self.summary_path, json.dumps(dict(report), indent=2) + "\n")
        return self.summary_path

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.lock.release()

    def __enter__(self) -> ResultsSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
