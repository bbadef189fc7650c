"""report.html from a real run of the tiny exported model on the bad-input folder of test_runtime_cli.py."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from urllib.parse import unquote

import pytest
from typer.testing import CliRunner

import test_runtime_cli
from mmdet_deploy.runtime.report import build_report
from mmdet_deploy.runtime.report.rows import choose_rows
from mmdet_deploy.runtime.results import ResultRow, load_results
from report_fixtures import parse_report

pytest.importorskip("torch")
pytest.importorskip("mmdet_deploy.export")

#: The bad-input folder of test_runtime_cli.py (the same pytest fixture, registered in this module too).
bad_folder = test_runtime_cli.bad_folder


def invoke(app_module: str, *args: str | Path) -> tuple[int, str]:
    module = __import__(f"mmdet_deploy.cli.{app_module}", fromlist=["app"])
    result = CliRunner().invoke(module.app, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def tiny_run(tiny_onnx: Path, bad_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tiny run") / "out"
    code, output = invoke("run", bad_folder, "--model", tiny_onnx, "--out", out, "--preset", "faces", "--report",
                          "--workers", "2", "-q")
    assert code == 1, output  # the bad inputs could not be scored
    return out


def test_every_file_appears_with_its_status(tiny_run: Path) -> None:
    results = {r.filename: r for r in load_results(tiny_run / "results.csv")}
    assert set(results) == set(test_runtime_cli.EXPECTED_BAD)
    page = parse_report(tiny_run / "report.html")
    shown = {row.name: row for row in page.rows}
    assert set(shown) == set(results) and len(page.rows) == len(results)
    for name, (status, reason, _) in test_runtime_cli.EXPECTED_BAD.items():
        row = shown[name]
        assert row.status == status == results[name].status, name
        assert reason in " ".join(row.text), (name, row.text)  # the reason of each error and skip is shown
        if status in ("ok", "no_face"):
            assert row.has_crops and row.has_frame and row.prob == f"{results[name].prob_fake:.6f}", name
        else:
            assert not row.has_crops and row.prob == "", name
    # Faces were found on the two good files: their frame thumbnail has the box from faces.csv drawn on it.
    assert shown["astronaut photo é.png"].has_face_box and shown["faces 人.mp4"].has_face_box
    text = " ".join(page.text)
    assert "demo weights" in text  # the tiny model was exported from demo weights: the banner says so
    assert "threshold 0.50" in text and "config tiny" in text and "onnxruntime" in text
    assert page.tags.count("script") == 1  # the page's own script only


def test_links_open_the_original_files_relative_to_the_report(tiny_run: Path, bad_folder: Path) -> None:
    for row in parse_report(tiny_run / "report.html").rows:
        assert row.href is not None and not row.href.startswith(("/", "file:")), row
        target = os.path.normpath(os.path.join(tiny_run, unquote(row.href)))
        assert target == os.path.normpath(bad_folder / row.name), row


def test_mmdet_report_rebuilds_a_partial_run(tiny_run: Path, tmp_path: Path) -> None:
    out = shutil.copytree(tiny_run, tmp_path / "partial")
    (out / "summary.json").unlink()
    (out / "report.html").unlink()
    with open(out / "results.csv", "a", encoding="utf-8") as handle:
        handle.write("half written.mp4,1,0.4")  # a run killed (or still writing) mid-row
    before = (out / "results.csv").read_bytes()
    code, output = invoke("report", out)
    assert code == 0 and "report.html" in output, output
    assert (out / "results.csv").read_bytes() == before  # the report never repairs or rewrites the run
    page = parse_report(out / "report.html")
    assert {r.name for r in page.rows} == {r.filename for r in load_results(tiny_run / "results.csv")}
    text = " ".join(page.text)
    assert "did not finish" in text and "1 incomplete line" in text


def test_max_files_shows_the_extremes_and_links_the_csv(tiny_run: Path, tmp_path: Path) -> None:
    code, output = invoke("report", tiny_run, "--max-files", "2", "--output", tmp_path / "small.html")
    assert code == 0, output
    page = parse_report(tmp_path / "small.html")
    scored = sorted((r for r in load_results(tiny_run / "results.csv") if r.prob_fake is not None),
                    key=lambda r: -(r.prob_fake or 0))
    assert [r.name for r in page.rows] == [scored[0].filename, scored[-1].filename]
    assert "the other 8 are in" in " ".join(page.text)
    assert invoke("report", tiny_run, "--max-files", "1")[0] == 2
    assert invoke("report", tmp_path / "no run here")[0] == 2


def test_choose_rows_keeps_the_highest_and_lowest_scores() -> None:
    rows = [ResultRow(f"f{i}", label=0, prob_fake=i / 10) for i in range(10)]
    rows += [ResultRow("bad", status="error", reason="x"), ResultRow("md", status="skipped")]
    assert [r.filename for r in choose_rows(rows, 5)] == ["f9", "f8", "f7", "f1", "f0"]
    assert [r.filename for r in choose_rows(rows, 11)][-1] == "bad"  # room left: unscored files fill it
    assert len(choose_rows(rows, 100)) == 12


def test_build_report_api_returns_the_page(tiny_run: Path, tmp_path: Path) -> None:
    path = build_report(tiny_run, output=tmp_path / "r.html")
    assert path == tmp_path / "r.html" and path.stat().st_size > 10_000
