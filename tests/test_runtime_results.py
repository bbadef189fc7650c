"""results.csv durability and repair, predictions.csv format, the resume manifest."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from mmdet_deploy.errors import UsageError
from mmdet_deploy.runtime.results import (
    COLUMNS,
    ResultRow,
    ResultsWriter,
    check_manifest,
    load_results,
    write_predictions,
)

ROWS = [
    ResultRow("a.mp4", 1, 0.91, "ok", "", "video", 10, 1, "haar", 0, 0.5),
    ResultRow("b c é.jpg", 0, 0.12, "no_face", "no face found, whole frames used", "image", 1, 1, "", 1, 0.1),
    ResultRow("d.mp4", None, None, "error", 'bad, "quoted"\nreason', "video", 0, 0, "", 0, 0.0),
    ResultRow("e.txt", None, None, "skipped", "not media", "other"),
]


def _write(out: Path, rows: list[ResultRow]) -> Path:
    with ResultsWriter(out) as writer:
        for row in rows:
            writer.write(row)
    return out / "results.csv"


def test_rows_round_trip_one_line_each(tmp_path: Path) -> None:
    path = _write(tmp_path, ROWS)
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == ",".join(COLUMNS) and len(lines) == 5  # the newline inside a reason was flattened
    loaded = load_results(path)
    assert [r.filename for r in loaded] == [r.filename for r in ROWS]
    assert loaded[0].prob_fake == pytest.approx(0.91) and loaded[0].label == 1
    assert loaded[2].reason == 'bad, "quoted" reason' and loaded[2].label is None


def test_partial_last_line_is_dropped_and_repaired(tmp_path: Path) -> None:
    path = _write(tmp_path, ROWS[:2])
    with open(path, "a", encoding="utf-8") as handle:
        handle.write("d.mp4,,,err")  # killed mid-write: no newline
    rows = load_results(path)
    assert [r.filename for r in rows] == ["a.mp4", "b c é.jpg"]
    text = path.read_text(encoding="utf-8")
    assert text.endswith("\n") and text.splitlines()[-1].startswith("b c é.jpg,") and text.count("\n") == 3
    assert load_results(path) == rows  # the repair was written back: reading again changes nothing


def test_garbled_rows_and_a_torn_header_are_dropped(tmp_path: Path) -> None:
    path = _write(tmp_path, ROWS[:1])
    with open(path, "a", encoding="utf-8") as handle:
        handle.write("x.mp4,7,0.5,ok,,video,1,1,,0,0.1\n")  # label 7: invalid
        handle.write("y.mp4,1,0.5,ok\n")  # too few fields
        handle.write("\x00\x00\x00\n")  # zeros left by a power loss
    assert [r.filename for r in load_results(path)] == ["a.mp4"]
    torn = tmp_path / "torn" / "results.csv"
    torn.parent.mkdir()
    torn.write_text("filename,label,prob", encoding="utf-8")
    assert load_results(torn) == [] and torn.read_text(encoding="utf-8") == ",".join(COLUMNS) + "\n"


def test_foreign_header_is_refused(tmp_path: Path) -> None:
    (tmp_path / "results.csv").write_text("filename,label\na.mp4,1\n", encoding="utf-8")
    with pytest.raises(UsageError, match="not a results file"):
        ResultsWriter(tmp_path, resume=True)


def test_existing_results_need_resume_or_overwrite(tmp_path: Path) -> None:
    _write(tmp_path, ROWS[:1])
    with pytest.raises(UsageError, match="--resume"):
        ResultsWriter(tmp_path)
    with pytest.raises(UsageError, match="contradict"):
        ResultsWriter(tmp_path, resume=True, overwrite=True)
    with ResultsWriter(tmp_path, resume=True) as writer:
        assert writer.done() == {"a.mp4"}
        writer.write(ROWS[1])
    assert [r.filename for r in load_results(tmp_path / "results.csv")] == ["a.mp4", "b c é.jpg"]
    with ResultsWriter(tmp_path, overwrite=True) as writer:
        assert writer.done() == set()
    assert load_results(tmp_path / "results.csv") == []


def test_predictions_never_call_an_error_real(tmp_path: Path) -> None:
    path = write_predictions(tmp_path, ROWS)
    assert path.read_text(encoding="utf-8") == "filename,label\na.mp4,1\nb c é.jpg,0\n"
    write_predictions(tmp_path, ROWS, error_label=1)
    with open(path, encoding="utf-8", newline="") as handle:
        assert list(csv.reader(handle)) == [["filename", "label"], ["a.mp4", "1"], ["b c é.jpg", "0"], ["d.mp4", "1"]]
    with pytest.raises(UsageError):
        write_predictions(tmp_path, ROWS, error_label=2)


def test_resume_with_other_settings_is_refused(tmp_path: Path) -> None:
    settings: dict[str, object] = {
        "checkpoint_sha256": "abc", "head": "simplified", "config": "tiny", "precision": "fp32", "preset": "faces",
        "threshold": 0.5, "frames": 10, "image_size": 224, "max_windows": None, "face_detectors": ["haar"],
        "face_chain": "custom", "model": "/models/a.onnx", "input": "/data/videos", "recons": {"mode": "original"},
    }
    check_manifest(tmp_path, settings, resume=False)
    check_manifest(tmp_path, settings | {"model": "/elsewhere/a.onnx"}, resume=True)  # informational key
    with pytest.raises(UsageError, match="preset: 'faces' -> 'frames'"):
        check_manifest(tmp_path, settings | {"preset": "frames"}, resume=True)
    with pytest.raises(UsageError, match="threshold"):
        check_manifest(tmp_path, settings | {"threshold": 0.7}, resume=True)
    with pytest.raises(UsageError, match="recons"):
        check_manifest(tmp_path, settings | {"recons": {"mode": "vqvae", "jpeg": True}}, resume=True)
