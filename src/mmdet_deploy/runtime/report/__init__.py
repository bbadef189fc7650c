"""The review report: ``report.html``, one self-contained page per run folder for the people who act on the scores.

::

    from mmdet_deploy.runtime.report import build_report
    path = build_report("runs/x")             # -> runs/x/report.html; max_files=500 rows at most

It reads ``results.csv`` (every row), ``run.json``, ``summary.json``, ``faces.csv`` / ``windows.csv`` and the
JPEG thumbnails in ``thumbs/`` (written by ``mmdet-run --report``; rebuilt from ``crops/`` after
``--save-crops``), works on partial and resumed runs, and never writes anything but the page. No torch, no
network: the page embeds its pictures, styles and script.
"""

from __future__ import annotations

from pathlib import Path

from mmdet_deploy.runtime.report.data import RunData, load_run
from mmdet_deploy.runtime.report.page import MAX_FILES, render
from mmdet_deploy.runtime.results import atomic_write_text

__all__ = ["MAX_FILES", "REPORT_NAME", "RunData", "build_report", "load_run", "render"]

REPORT_NAME = "report.html"


def build_report(out_dir: str | Path, *, max_files: int = MAX_FILES, output: str | Path | None = None) -> Path:
    """(Re)build the review page of run folder ``out_dir``; returns its path (``out_dir/report.html`` unless
    ``output`` says otherwise). Raises :class:`~mmdet_deploy.errors.UsageError` when ``out_dir`` holds no run."""
    from mmdet_deploy.errors import UsageError

    if max_files < 2:
        raise UsageError(f"--max-files must be at least 2 (the highest- and lowest-scoring), got {max_files}")
    data = load_run(out_dir)
    path = Path(output) if output is not None else Path(out_dir) / REPORT_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, render(data, max_files=max_files, report_dir=path.parent))
    return path
