"""The results sink: everything a run writes into its output folder, in one object any engine can feed.

::

    with ResultsSink(out, resume=False, overwrite=False, error_label=None) as sink:
        sink.start(settings)                 # run.json; on resume, refuses changed settings
        todo = sink.pending(items)           # files without a row yet
        for row in rows:                     # from any engine, in any order
            sink.write(row)                  # results.csv: appended and fsync'ed, one line per file
        sink.finish(report)                  # predictions.csv and summary.json, atomically

:meth:`finish` (or :meth:`write_predictions` alone, after an abort) keeps ``predictions.csv`` matching
``results.csv``. File formats and durability: :mod:`mmdet_deploy.runtime.results`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from mmdet_deploy.runtime.discovery import MediaItem
from mmdet_deploy.runtime.results import (
    ERROR,
    MANIFEST_NAME,
    PREDICTIONS_NAME,
    RESULTS_NAME,
    ResultRow,
    ResultsWriter,
    atomic_write_text,
    check_manifest,
    write_predictions,
)

logger = logging.getLogger(__name__)

SUMMARY_NAME = "summary.json"


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
        """Open ``results.csv`` (repairing what a killed run left) and record ``settings`` in ``run.json``.

        ``settings`` must hold every key of :data:`~mmdet_deploy.runtime.results.MANIFEST_KEYS`; on resume,
        a change in any of them is refused (it would mix two runs).
        """
        if self.writer is None:
            self.writer = ResultsWriter(self.out_dir, resume=self.resume, overwrite=self.overwrite)
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

    def __enter__(self) -> ResultsSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
