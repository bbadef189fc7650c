"""``mmdet-run`` end to end: every bad input gets its row, exit codes, outputs, errors before any work."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from mmdet_deploy.contract import ModelContract
from mmdet_deploy.runtime.results import load_results
from runtime_fixtures import (
    astronaut,
    build_synthetic_model,
    write_bad_folder,
    write_index_video,
)

runner = CliRunner()


def invoke(*args: str | Path) -> tuple[int, str]:
    from mmdet_deploy.cli.run import app

    result = runner.invoke(app, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_synthetic_model(tmp_path_factory.mktemp("model") / "synthetic.onnx")


def _predictions(out: Path) -> list[list[str]]:
    with open(out / "predictions.csv", encoding="utf-8", newline="") as handle:
        return list(csv.reader(handle))


@pytest.fixture(scope="module")
def bad_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One good image, one good face video, and every kind of bad input the issue lists."""
    return write_bad_folder(tmp_path_factory.mktemp("bad") / "in put")


EXPECTED_BAD = {
    "astronaut photo é.png": ("ok", "", "blazeface-full"),
    "faces 人.mp4": ("ok", "", "blazeface-full"),
    "zero.mp4": ("error", "empty file", ""),
    "noise.mp4": ("error", "not a readable video", ""),
    "truncated.mp4": ("error", "not a readable video", ""),
    "audio only.mp4": ("error", "no video stream", ""),
    "short.mp4": ("no_face", "only 4 frames", ""),
    "text.jpg": ("error", "not an image", ""),
    "broken link.mp4": ("error", "broken symbolic link", ""),
    "readme.md": ("skipped", "not an image or video", ""),
}


def test_every_bad_input_gets_its_row_and_the_run_continues(model: Path, bad_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    code, output = invoke(bad_folder, "--model", model, "--out", out, "--preset", "faces", "--workers", "2")
    assert code == 1, output  # some files could not be scored
    rows = {r.filename: r for r in load_results(out / "results.csv")}
    assert set(rows) == set(EXPECTED_BAD)
    for name, (status, reason, detector) in EXPECTED_BAD.items():
        row = rows[name]
        assert row.status == status and reason in row.reason and row.detector == detector, row
        assert (row.label is None) == (status in ("error", "skipped")), row
    assert rows["short.mp4"].frames == 4 and rows["faces 人.mp4"].frames_without_face == 0
    predictions = _predictions(out)
    assert predictions[0] == ["filename", "label"]
    assert sorted(p[0] for p in predictions[1:]) == sorted(["astronaut photo é.png", "faces 人.mp4", "short.mp4"])
    assert "could not be scored" in output and "media files/s" in output
    assert (out / "summary.json").exists() and (out / "run.json").exists()


def test_error_label_and_frames_preset(model: Path, bad_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    code, _ = invoke(bad_folder, "--model", model, "--out", out, "--preset", "frames", "--error-label", "1", "-q")
    assert code == 1
    rows = {r.filename: r for r in load_results(out / "results.csv")}
    assert rows["short.mp4"].status == "error" and "needs at least 10" in rows["short.mp4"].reason
    assert rows["faces 人.mp4"].windows == 1 and rows["faces 人.mp4"].detector == ""
    predictions = dict(_predictions(out)[1:])
    assert predictions["short.mp4"] == "1" and predictions["zero.mp4"] == "1"  # the user's chosen error label
    assert "readme.md" not in predictions  # not media: never a prediction
    assert len(predictions) == 9


def test_all_scored_exits_zero_and_quiet_is_quiet(model: Path, tmp_path: Path) -> None:
    root = tmp_path / "good"
    root.mkdir()
    Image.fromarray(astronaut()).save(root / "a.jpg")
    write_index_video(root / "b.avi", 12, fps=10)
    code, output = invoke(root, "--model", model, "--out", tmp_path / "out", "--quiet", "--batch-size", "2")
    assert code == 0 and output.strip() == ""
    assert [p[0] for p in _predictions(tmp_path / "out")] == ["filename", "a.jpg", "b.avi"]


def test_single_file_and_list_inputs(model: Path, tmp_path: Path) -> None:
    image = tmp_path / "media" / "one.png"
    image.parent.mkdir()
    Image.fromarray(astronaut()).save(image)
    write_index_video(tmp_path / "media" / "two.mp4", 12, fps=10)
    code, _ = invoke(image, "--model", model, "--out", tmp_path / "o1", "-q")
    assert code == 0 and [r.filename for r in load_results(tmp_path / "o1" / "results.csv")] == ["one.png"]
    listing = tmp_path / "media" / "list.txt"
    listing.write_text("two.mp4\none.png\nmissing.png\n", encoding="utf-8")
    code, _ = invoke(listing, "--model", model, "--out", tmp_path / "o2", "-q")
    rows = load_results(tmp_path / "o2" / "results.csv")
    assert code == 1 and [r.filename for r in rows] == ["two.mp4", "one.png", "missing.png"]
    assert rows[2].status == "error"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--preset", "crops"], "unknown preset"),
        (["--device", "gpu"], "unknown device"),
        (["--backend", "coreml"], "unknown backend"),
        (["--preset", "frames", "--face-detectors", "haar"], "only apply to --preset faces"),
        (["--face-detectors", "retina"], "unknown face detector"),
        (["--backend", "tensorrt", "--threads", "2"], "only apply to --backend onnxruntime"),
        (["--backend", "openvino", "--spin-wait"], "--spin-wait only apply to --backend onnxruntime"),
        (["--preset", "frames", "--decode-all-frames"], "--decode-all-frames only apply to --preset faces"),
        (["--resume", "--overwrite"], "contradict"),
    ],
)
def test_usage_errors_exit_2(model: Path, tmp_path: Path, extra: list[str], message: str) -> None:
    Image.new("RGB", (8, 8)).save(tmp_path / "x.png")
    code, output = invoke(tmp_path / "x.png", "--model", model, "--out", tmp_path / "out", *extra)
    assert code == 2 and message in output
    assert not (tmp_path / "out" / "results.csv").exists()


def test_missing_input_model_and_bad_option_values_exit_2(model: Path, tmp_path: Path) -> None:
    assert invoke(tmp_path / "nope", "--model", model, "--out", tmp_path / "o")[0] == 2
    code, output = invoke(tmp_path, "--model", tmp_path / "none.onnx", "--out", tmp_path / "o")
    assert code == 2 and "--model file not found" in output
    assert invoke(tmp_path, "--model", model, "--out", tmp_path / "o", "--error-label", "3")[0] == 2
    assert invoke(tmp_path, "--model", model, "--out", tmp_path / "o", "--batch-size", "0")[0] == 2


def test_existing_results_without_resume_exit_2_before_loading_the_model(model: Path, tmp_path: Path) -> None:
    Image.new("RGB", (8, 8)).save(tmp_path / "x.png")
    assert invoke(tmp_path / "x.png", "--model", model, "--out", tmp_path / "out", "-q")[0] == 0
    code, output = invoke(tmp_path / "x.png", "--model", model, "--out", tmp_path / "out")
    assert code == 2 and "--resume" in output
    assert invoke(tmp_path / "x.png", "--model", model, "--out", tmp_path / "out", "--overwrite", "-q")[0] == 0


@pytest.mark.parametrize("kind", ["text", "no_contract"])
def test_bad_model_is_refused_before_any_work(tmp_path: Path, kind: str) -> None:
    Image.new("RGB", (8, 8)).save(tmp_path / "x.png")
    bad = tmp_path / "bad.onnx"
    if kind == "text":
        bad.write_text("definitely not protobuf", encoding="utf-8")
    else:
        build_synthetic_model(bad, with_contract=False)
    code, output = invoke(tmp_path / "x.png", "--model", bad, "--out", tmp_path / "out")
    assert code == 1
    error_lines = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and str(bad) in error_lines[0]
    assert ("not a valid ONNX model" if kind == "text" else "contract") in error_lines[0]
    assert not (tmp_path / "out").exists()  # nothing written


def test_empty_folder_exits_1(model: Path, tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "notes.txt").write_text("x", encoding="utf-8")
    code, output = invoke(tmp_path / "in", "--model", model, "--out", tmp_path / "out")
    assert code == 1 and "found no image or video files" in output


def test_threshold_and_contract_defaults(tmp_path: Path) -> None:
    model = build_synthetic_model(tmp_path / "m.onnx", ModelContract(config="tiny", preset="frames", threshold=0.0))
    Image.new("RGB", (256, 256), (0, 0, 250)).save(tmp_path / "blue.png")  # prob_fake well below 0.5
    code, _ = invoke(tmp_path / "blue.png", "--model", model, "--out", tmp_path / "o1", "-q")
    (row,) = load_results(tmp_path / "o1" / "results.csv")
    assert code == 0 and row.label == 1 and row.prob_fake is not None and row.prob_fake < 0.5  # contract: 0.0
    assert row.detector == "" and row.windows == 1  # the contract's preset: frames
    invoke(tmp_path / "blue.png", "--model", model, "--out", tmp_path / "o2", "-q", "--threshold", "0.5")
    assert load_results(tmp_path / "o2" / "results.csv")[0].label == 0
