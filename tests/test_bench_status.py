"""Benchmark statuses: typed in code, text only in records; the text parses back to the same status."""

from __future__ import annotations

import pytest

from mmdet_deploy.benchmarks.status import E2E_DISABLED, RowStatus, Status, failed, is_ok, not_run, status_of
from mmdet_deploy.errors import one_line


@pytest.mark.parametrize(
    ("status", "text"),
    [
        (RowStatus(Status.OK), "ok"),
        (RowStatus(Status.FAILED, "RuntimeError: boom: twice"), "failed: RuntimeError: boom: twice"),
        (RowStatus(Status.UNAVAILABLE, "no CUDA device"), "unavailable: no CUDA device"),
        (RowStatus(Status.SKIPPED, "--device cuda"), "skipped: --device cuda"),
        (RowStatus(Status.NOT_APPLICABLE, "artefact max batch 1"), "n/a: artefact max batch 1"),
        (RowStatus(Status.NOT_MET), "not met"),
        (RowStatus(Status.NOT_RUN, "no row to run the pipeline on (x did not run)"),
         "no row to run the pipeline on (x did not run)"),
    ],
)
def test_text_round_trip(status: RowStatus, text: str) -> None:
    assert status.text == str(status) == text
    assert RowStatus.parse(text) == status


def test_records_are_judged_by_kind_not_by_string() -> None:
    assert is_ok({"status": "ok"}) and not is_ok({"status": "okay"}) and not is_ok(None) and not is_ok({})
    assert status_of({}).kind is Status.FAILED and status_of({"status": failed("x")}).detail == "x"
    assert status_of({"status": E2E_DISABLED}).kind is Status.NOT_RUN and not_run("why") == "why"


def test_one_line() -> None:
    assert one_line(ValueError("a\n  b\tc")) == "a b c" and one_line(KeyError()) == "KeyError"
    assert one_line(FileNotFoundError(2, "No such file or directory", "/x/y")) == "No such file or directory"
    assert one_line("x" * 20, limit=10) == "x" * 7 + "..." and len(one_line("y" * 500)) == 300
