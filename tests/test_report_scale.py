"""A run folder of 10,000 rows builds a report under 20 MB; the build time is recorded, not asserted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmdet_deploy.benchmarks.report_scale import measure
from report_fixtures import parse_report

pytest.importorskip("skimage")


def test_ten_thousand_rows_build_a_bounded_page(tmp_path: Path, record_property: pytest.RecordProperty) -> None:
    figures = measure(tmp_path / "run", files=10_000, max_files=500, reuse_thumbnails=True)
    record_property("report_figures", json.dumps(figures))
    print(f"\n10,000 rows: report {figures['report_mb']} MB built in {figures['build_report_s']} s")
    assert figures["report_bytes"] < 20_000_000
    page = parse_report(Path(figures["report"]))
    assert len(page.rows) == 500 and sum(r.has_crops for r in page.rows) == 500  # the extremes, with pictures
    assert "the other 9500 are in" in " ".join(page.text)
