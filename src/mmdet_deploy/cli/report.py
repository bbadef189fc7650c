"""``mmdet-report OUT_DIR``: (re)build ``report.html``, the self-contained review page of a run folder.

Works on a finished, partial (interrupted or still running) or resumed run: every row of results.csv is
counted and, up to ``--max-files``, shown. Exit status: 0 when the page was written, 1 on an error (one line
on stderr), 2 for a wrong command line (OUT_DIR holds no run).
"""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from mmdet_deploy.cli.common import setup_logging, user_errors

logger = logging.getLogger("mmdet_deploy.report")

app = typer.Typer(
    name="mmdet-report",
    help="Build report.html, a self-contained review page, from an mmdet-run --out folder.",
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.command()
@user_errors
def report(
    out_dir: Path = typer.Argument(..., metavar="OUT_DIR", help="The --out folder of an mmdet-run."),
    max_files: int = typer.Option(500, "--max-files", min=2,
                                  help="Rows shown at most; past it, the highest- and lowest-scoring files."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Where to write the page (OUT_DIR/report.html)."),
    screenshot: Path | None = typer.Option(
        None, "--screenshot", help="Also save a PNG of the page as headless Chromium draws it (needs chromium)."
    ),
    width: int = typer.Option(1400, "--width", min=320, help="--screenshot: viewport width in CSS pixels."),
    height: int = typer.Option(1000, "--height", min=240, help="--screenshot: viewport height in CSS pixels."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Warnings and errors only."),
) -> None:
    """(Re)build OUT_DIR/report.html from results.csv, run.json, summary.json, faces.csv, windows.csv, thumbs/."""
    setup_logging(quiet=quiet)
    from mmdet_deploy.runtime.report import build_report

    path = build_report(out_dir, max_files=max_files, output=output)
    if not quiet:
        typer.echo(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")
    if screenshot is not None:
        from mmdet_deploy.runtime.report.browser import check_page

        check = check_page(path, width=width, height=height)
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        screenshot.write_bytes(check.screenshot)
        for problem in check.errors + [f"request: {url}" for url in check.requests]:
            logger.warning("%s: %s", path, problem)
        if not quiet:
            typer.echo(f"wrote {screenshot}")


def main() -> None:
    app()
