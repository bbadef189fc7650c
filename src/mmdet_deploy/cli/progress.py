"""``mmdet-run``'s progress bar (files/s, counts by status) and end-of-run summary, on stderr so stdout stays
clean. The runtime reports to it through :class:`~mmdet_deploy.runtime.run.ProgressHook`."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from mmdet_deploy.runtime.pipeline import STAGES
from mmdet_deploy.runtime.results import ERROR, NO_FACE, OK, SKIPPED, ResultRow
from mmdet_deploy.runtime.run import RunSummary


class RunProgress:
    """A rich progress bar advanced once per finished file; a no-op when ``enabled`` is False.

    A :class:`~mmdet_deploy.runtime.run.ProgressHook`: :func:`~mmdet_deploy.runtime.run.run_folder` calls
    :meth:`start` with the number of files to do, :meth:`advance` per file and :meth:`stop`.
    """

    def __init__(self, total: int = 0, enabled: bool = True, console: Console | None = None) -> None:
        self.enabled = enabled
        self.counts = {OK: 0, NO_FACE: 0, ERROR: 0, SKIPPED: 0}
        self._progress = Progress(
            TextColumn("[bold]scoring"),
            BarColumn(),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[rate]}"),
            TextColumn("{task.fields[counts]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console or Console(stderr=True),
            disable=not enabled,
        )
        self._task = self._progress.add_task("scoring", total=total, rate="", counts="")

    def start(self, total: int) -> None:
        self._progress.update(self._task, total=total)
        self._progress.start()

    def stop(self) -> None:
        self._progress.stop()

    def advance(self, row: ResultRow) -> None:
        """Count one finished file (called by the pipeline for every row it writes)."""
        self.counts[row.status] = self.counts.get(row.status, 0) + 1
        task = self._progress.tasks[0]
        elapsed = task.elapsed or 0.0
        done = task.completed + 1
        rate = f"{done / elapsed:.2f} files/s" if elapsed > 0 else ""
        failed = f" error {self.counts[ERROR]}" if self.counts[ERROR] else ""
        self._progress.update(self._task, advance=1, rate=rate, counts=f"ok {self.counts[OK]}{failed}")


def format_summary(run: RunSummary) -> str:
    """Human-readable end-of-run report: counts by status, throughput, where the time went."""
    summary, out, failed_total, previous = run.stats, run.out_dir, run.failed, run.previous_rows
    counts = ", ".join(f"{status} {summary.counts[status]}" for status in (OK, NO_FACE, ERROR, SKIPPED))
    lines = [
        f"{summary.files} files in {summary.wall_s:.1f} s ({counts}); {summary.files_per_s:.2f} media files/s, "
        f"{summary.windows} clips in {summary.batches} batches",
        "busy seconds by stage: " + ", ".join(f"{s} {summary.stage_s[s]:.2f}" for s in STAGES),
        f"wrote {out / 'results.csv'} and {out / 'predictions.csv'}",
    ]
    if previous:
        lines.insert(1, f"resumed: {previous} files were already done in an earlier run")
    if failed_total:
        lines.append(f"{failed_total} file(s) could not be scored: see status 'error' in results.csv")
    return "\n".join(lines)


def print_summary(run: RunSummary) -> None:
    Console(stderr=True, highlight=False, soft_wrap=True).print(format_summary(run))
