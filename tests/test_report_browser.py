"""report.html in a real browser (Debian's headless Chromium), and hostile file names as plain text.

Chromium is driven over the DevTools protocol (``mmdet_deploy.runtime.report.browser``): console errors,
uncaught exceptions, CSP violations and every request are recorded, and a screenshot is decoded to check that
the table was drawn. Without Chromium these tests skip, except in CI (``CI=true``), where they fail:
``.ci/run`` installs it with apt-get.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import test_runtime_cli
from mmdet_deploy.contract import ModelContract
from mmdet_deploy.runtime.report.browser import check_page, find_chromium
from mmdet_deploy.runtime.results import load_results
from report_fixtures import HOSTILE, add_hostile_files, copy_folder, parse_report
from runtime_fixtures import build_synthetic_model, face_frames, write_video

#: The bad-input folder of test_runtime_cli.py (the same pytest fixture, registered in this module too).
bad_folder = test_runtime_cli.bad_folder

IN_CI = os.environ.get("CI", "").lower() == "true"
needs_chromium = pytest.mark.skipif(find_chromium() is None and not IN_CI,
                                    reason="no chromium (apt-get install -y chromium); required in CI")


@pytest.fixture(scope="module")
def runs(bad_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Report folders of the faces and frames presets over the bad inputs plus hostile names and a longer video."""
    base = tmp_path_factory.mktemp("browser")
    root = add_hostile_files(copy_folder(bad_folder, base / "in put"))
    write_video(root / "long faces.mp4", face_frames(45), fps=10)  # 4 windows in the frames preset
    model = build_synthetic_model(base / "demo.onnx", ModelContract(config="tiny", demo_weights=True))
    from mmdet_deploy.cli.run import app

    outs = {}
    for preset in ("faces", "frames"):
        out = base / f"out {preset}"
        result = CliRunner().invoke(app, [str(root), "--model", str(model), "--out", str(out), "--preset", preset,
                                          "--report", "-q"])
        assert result.exit_code == 1, result.output
        outs[preset] = out
    return outs


def test_hostile_names_are_text_not_markup(runs: dict[str, Path]) -> None:
    for out in runs.values():
        results = load_results(out / "results.csv")
        page = parse_report(out / "report.html")
        assert sorted(r.name for r in page.rows) == sorted(r.filename for r in results)
        assert set(HOSTILE) <= {r.name for r in page.rows}
        assert page.tags.count("script") == 1 and "onerror" not in page.attributes
        assert page.tags.count("img") == sum(r.has_crops for r in page.rows)  # no img element from a name
    timelines = {r.name for r in parse_report(runs["frames"] / "report.html").rows if r.has_timeline}
    assert timelines == {"faces 人.mp4", "long faces.mp4"}  # the frames preset's videos


def _variance(png: bytes, box: dict[str, float]) -> float:
    """Grey-level variance of the screenshot inside ``box`` (CSS pixels = device pixels here), clipped."""
    image = np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=np.float64)
    top, left = max(0, int(box["y"])), max(0, int(box["x"]))
    bottom = min(image.shape[0], int(box["y"] + box["height"]))
    right = min(image.shape[1], int(box["x"] + box["width"]))
    assert bottom - top > 50 and right - left > 50, f"the region {box} is not on screen"
    return float(image[top:bottom, left:right].var())


BODY_BOX = "(() => { const r = document.querySelector('#rows').getBoundingClientRect(); " \
           "return {x: r.x, y: r.y, width: r.width, height: r.height}; })()"


@needs_chromium
@pytest.mark.parametrize("preset", ["faces", "frames"])
def test_chromium_loads_the_report_without_errors_and_draws_the_table(runs: dict[str, Path], preset: str) -> None:
    if find_chromium() is None:
        pytest.fail("CI=true but no chromium: .ci/run installs it with apt-get (Debian package 'chromium')")
    report = runs[preset] / "report.html"
    rows = parse_report(report).rows
    errors = sum(1 for r in rows if r.status == "error")
    check = check_page(report, width=1400, height=1100, keys="jjk", timeout=90, expressions={
        "ready": "document.body.dataset.ready",
        "selected": "document.querySelector('tr.sel').dataset.name",
        "first": "document.querySelector('#rows tr').dataset.name",
        "box": BODY_BOX,
        "after_filter": "document.querySelector('input[data-filter=error]').click(); "
                        "document.querySelectorAll('#rows tr:not([hidden])').length",
        "sorted_by_name": "document.querySelector('th[data-key=name] button').click(); "
                          "Array.from(document.querySelectorAll('#rows tr')).map(r => r.dataset.name)"
                          ".every((n, i, all) => i === 0 || all[i - 1].localeCompare(n) <= 0)",
        "demo": "document.querySelector('.banner.demo') !== null",
    })
    assert check.errors == [], check.errors
    assert check.requests == [], check.requests  # self-contained: nothing fetched, not even a font or favicon
    values = check.values
    assert values["ready"] == "1" and values["demo"] is True
    assert values["selected"] == values["first"] == rows[0].name  # j, j, k: back on the first file
    assert values["after_filter"] == len(rows) - errors  # unticking 'error' hides exactly the errors
    assert values["sorted_by_name"] is True
    assert _variance(check.screenshot, values["box"]) > 200, "the table area of the screenshot is blank"


@needs_chromium
def test_the_browser_check_catches_errors_and_blank_pages(tmp_path: Path) -> None:
    if find_chromium() is None:
        pytest.fail("CI=true but no chromium: .ci/run installs it with apt-get (Debian package 'chromium')")
    page = tmp_path / "throws.html"
    page.write_text('<!DOCTYPE html><html><body><div id="rows">x</div><img src="http://127.0.0.1:9/pixel.png">'
                    '<script>console.error("broken"); null.x;</script></body></html>', encoding="utf-8")
    check = check_page(page, width=600, height=400, expressions={"box": BODY_BOX})
    assert any("console.error: broken" in e for e in check.errors), check.errors
    assert any(e.startswith("uncaught: TypeError") for e in check.errors), check.errors
    assert check.requests == ["http://127.0.0.1:9/pixel.png"]
    blank = tmp_path / "blank.html"
    blank.write_text('<!DOCTYPE html><html><body style="margin:0;background:#fff">'
                     '<div id="rows" style="width:400px;height:300px"></div></body></html>', encoding="utf-8")
    check = check_page(blank, width=600, height=400, expressions={"box": BODY_BOX})
    assert check.errors == [] and _variance(check.screenshot, check.values["box"]) < 1.0


@pytest.mark.parametrize("kind", ["folder", "single file", "list"])
def test_links_reach_the_original_for_every_kind_of_input(tmp_path: Path, kind: str) -> None:
    from urllib.parse import unquote_to_bytes

    from mmdet_deploy.runtime.discovery import discover
    from mmdet_deploy.runtime.report.rows import original_href

    (tmp_path / "in").mkdir()
    root = add_hostile_files(tmp_path / "in")  # the names are the hostile ones, raw bytes included
    files = sorted(p for p in os.listdir(os.fsencode(root)) if p.endswith(b".png"))
    if kind == "folder":
        given = root
    elif kind == "single file":
        given = Path(os.fsdecode(os.path.join(os.fsencode(root), files[0])))
    else:
        given = tmp_path / "list.txt"
        given.write_text(f"in/{HOSTILE[1]}\n{root / HOSTILE[2]}\n", encoding="utf-8")
    report_dir = tmp_path / "runs" / "x"
    report_dir.mkdir(parents=True)
    items = [item for item in discover(given) if item.is_media]
    assert items
    for item in items:
        href = original_href({"input": str(given.resolve())}, item.name, report_dir)
        assert href is not None and "<" not in href and '"' not in href and " " not in href
        target = os.path.normpath(os.path.join(os.fsencode(report_dir), unquote_to_bytes(href)))
        assert target == os.path.normpath(os.fsencode(item.path)), (item.name, href)
