"""What a run reports: :class:`RunSummary` (returned by :func:`~mmdet_deploy.runtime.run.run_folder`) and
the :class:`ProgressHook` it reports progress to. Re-exported by :mod:`mmdet_deploy.runtime.run`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from mmdet_deploy.runtime.pipeline import PipelineStats
from mmdet_deploy.runtime.results import ResultRow


@runtime_checkable
class ProgressHook(Protocol):
    """What :func:`run_folder` reports progress to: ``start(total files)``, ``advance(row)`` per finished
    file, ``stop()`` at the end (also after an error). A plain ``callable(row)`` is accepted too."""

    def start(self, total: int) -> None: ...

    def advance(self, row: ResultRow) -> None: ...

    def stop(self) -> None: ...


class _CallbackHook:
    def __init__(self, callback: Callable[[ResultRow], None] | None) -> None:
        self.callback = callback

    def start(self, total: int) -> None:
        pass

    def advance(self, row: ResultRow) -> None:
        if self.callback is not None:
            self.callback(row)

    def stop(self) -> None:
        pass


@dataclass(frozen=True)
class RunSummary:
    """What :func:`run_folder` did.

    ``stats`` covers this run's files (counts by status, stage seconds, wall time); ``previous_rows`` the
    rows a resumed run already had; ``failed`` the ``error`` rows in ``results.csv`` (both runs).
    ``exit_code`` is what ``mmdet-run`` exits with: 0 when every media file was scored, 1 when some could
    not be or INPUT held no media (then ``message`` says so and no output paths are set).
    """

    exit_code: int
    out_dir: Path
    stats: PipelineStats
    previous_rows: int = 0
    failed: int = 0
    results_path: Path | None = None
    predictions_path: Path | None = None
    manifest_path: Path | None = None
    summary_path: Path | None = None
    report_path: Path | None = None
    backend: dict[str, Any] = field(default_factory=dict)
    message: str = ""

    @property
    def counts(self) -> dict[str, int]:
        """This run's files by status (``ok``, ``no_face``, ``error``, ``skipped``)."""
        return dict(self.stats.counts)

    @property
    def files_per_s(self) -> float:
        """Media files finished per second of wall time."""
        return self.stats.files_per_s

    @property
    def wall_s(self) -> float:
        return self.stats.wall_s


def as_hook(progress: ProgressHook | Callable[[ResultRow], None] | None) -> ProgressHook:
    """``progress`` as a :class:`ProgressHook` (a plain ``callable(row)`` or None is wrapped)."""
    return progress if isinstance(progress, ProgressHook) else _CallbackHook(progress)
