"""``run_folder`` / ``RunConfig`` from Python (no Typer), the per-file stages and the results sink."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mmdet_deploy.contract import ModelContract
from mmdet_deploy.errors import UsageError
from mmdet_deploy.runtime import RunConfig, RunSummary, run_folder
from mmdet_deploy.runtime.discovery import discover
from mmdet_deploy.runtime.prepare import prepare_file, scored_row
from mmdet_deploy.runtime.preprocess import PreparedFile, Preprocessor
from mmdet_deploy.runtime.results import MANIFEST_KEYS, ResultRow, load_results
from mmdet_deploy.runtime.sink import ResultsSink
from runtime_fixtures import build_synthetic_model, reference_prob, write_index_video


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    contract = ModelContract(config="tiny", preset="frames")
    return build_synthetic_model(tmp_path_factory.mktemp("model") / "synthetic.onnx", contract)


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    """Red reads as fake, blue as real (see runtime_fixtures); plus a 12-frame video and a non-media file."""
    root = tmp_path / "in"
    root.mkdir()
    Image.new("RGB", (256, 256), (250, 0, 0)).save(root / "red.png")
    Image.new("RGB", (256, 256), (0, 0, 250)).save(root / "blue.png")
    write_index_video(root / "clip.mp4", 12, fps=10, size=(256, 240))
    (root / "notes.md").write_text("not media", encoding="utf-8")
    return root


class RecordingProgress:
    def __init__(self) -> None:
        self.events: list[object] = []

    def start(self, total: int) -> None:
        self.events.append(("start", total))

    def advance(self, row: ResultRow) -> None:
        self.events.append(row.filename)

    def stop(self) -> None:
        self.events.append("stop")


def test_run_folder_scores_every_file_and_writes_every_output(model: Path, folder: Path, tmp_path: Path) -> None:
    progress = RecordingProgress()
    summary = run_folder(RunConfig(folder, model, tmp_path / "out", batch_size=2, workers=2), progress=progress)
    assert isinstance(summary, RunSummary)
    assert summary.exit_code == 0 and summary.failed == 0 and summary.previous_rows == 0
    assert summary.counts == {"ok": 3, "no_face": 0, "error": 0, "skipped": 1}
    assert summary.files_per_s > 0 and summary.wall_s > 0 and summary.stats.windows == 3
    assert progress.events == [("start", 4), "blue.png", "clip.mp4", "notes.md", "red.png", "stop"]
    rows = {r.filename: r for r in load_results(tmp_path / "out" / "results.csv")}
    assert rows["red.png"].label == 1 and rows["blue.png"].label == 0 and rows["notes.md"].status == "skipped"
    # The whole path, checked against the synthetic model recomputed in numpy on the same crops.
    pre = Preprocessor(ModelContract(config="tiny", preset="frames"), "frames")
    for name in ("red.png", "blue.png", "clip.mp4"):
        prepared = pre(folder / name)
        assert rows[name].prob_fake == pytest.approx(float(reference_prob(prepared.clips).mean()), abs=2e-6)
    for path in (summary.results_path, summary.predictions_path, summary.manifest_path, summary.summary_path):
        assert path is not None and path.is_file() and path.parent == tmp_path / "out"
    predictions = (tmp_path / "out" / "predictions.csv").read_text(encoding="utf-8").splitlines()
    clip_label = rows["clip.mp4"].label  # grey frames: a probability near 0.5, checked above
    assert predictions == ["filename,label", "blue.png,0", f"clip.mp4,{clip_label}", "red.png,1"]
    report = json.loads(summary.summary_path.read_text(encoding="utf-8"))  # type: ignore[union-attr]
    assert report["counts"] == summary.counts and report["backend"]["backend"] == "onnxruntime"
    manifest = json.loads(summary.manifest_path.read_text(encoding="utf-8"))  # type: ignore[union-attr]
    assert manifest["preset"] == "frames" and manifest["input"] == str(folder.resolve())


def test_resume_skips_done_files_and_refuses_changed_settings(model: Path, folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = run_folder(RunConfig(folder, model, out, workers=1))
    assert first.exit_code == 0
    seen: list[str] = []
    again = run_folder(RunConfig(folder, model, out, workers=1, resume=True), progress=lambda row: seen.append(row))
    assert again.exit_code == 0 and again.previous_rows == 4 and sum(again.counts.values()) == 0 and seen == []
    Image.new("RGB", (256, 256), (250, 0, 0)).save(folder / "new red.png")
    more = run_folder(RunConfig(folder, model, out, workers=1, resume=True))
    assert more.previous_rows == 4 and more.counts["ok"] == 1
    assert [r.filename for r in load_results(out / "results.csv")][-1] == "new red.png"
    with pytest.raises(UsageError, match="different settings"):
        run_folder(RunConfig(folder, model, out, resume=True, threshold=0.9))
    with pytest.raises(UsageError, match="--resume"):
        run_folder(RunConfig(folder, model, out))


def test_failed_files_give_exit_code_1_and_error_label(model: Path, folder: Path, tmp_path: Path) -> None:
    (folder / "broken.png").write_bytes(b"not a png")
    summary = run_folder(RunConfig(folder, model, tmp_path / "out", error_label=1, workers=1))
    assert summary.exit_code == 1 and summary.failed == 1 and summary.counts["error"] == 1
    predictions = dict(line.split(",") for line in summary.predictions_path.read_text().splitlines()[1:])  # type: ignore[union-attr]
    assert predictions["broken.png"] == "1"


def test_no_media_returns_exit_code_1_and_writes_nothing(model: Path, tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "notes.txt").write_text("x", encoding="utf-8")
    summary = run_folder(RunConfig(tmp_path / "in", model, tmp_path / "out"))
    assert summary.exit_code == 1 and "found no image or video files" in summary.message
    assert summary.results_path is None and not (tmp_path / "out").exists()


def test_run_config_normalises_and_is_frozen(tmp_path: Path) -> None:
    config = RunConfig(str(tmp_path), str(tmp_path / "m.onnx"), str(tmp_path / "o"),
                       face_detectors="haar, yunet", providers=["cuda", "cpu"])
    assert config.input_path == tmp_path and config.model == tmp_path / "m.onnx" and config.out == tmp_path / "o"
    assert config.face_detectors == ("haar", "yunet") and config.providers == ("cuda", "cpu")
    assert config.device == "cpu" and RunConfig(tmp_path, tmp_path, tmp_path, backend="tensorrt").device == "cuda"
    assert config.backend_options()["providers"] == ["cuda", "cpu"]
    # ORT's threads do not spin-wait in a run (decoding and faces share the cores) unless asked to.
    assert config.backend_options()["allow_spinning"] is False
    assert RunConfig(tmp_path, tmp_path, tmp_path, spin_wait=True).backend_options()["allow_spinning"] is True
    assert "allow_spinning" not in RunConfig(tmp_path, tmp_path, tmp_path, backend="openvino").backend_options()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.batch_size = 8  # type: ignore[misc]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"batch_size": 0}, "--batch-size must be at least 1"),
        ({"workers": 0}, "--workers must be at least 1"),
        ({"max_windows": 0}, "--max-windows must be at least 1"),
        ({"error_label": 3}, "--error-label must be 0 or 1"),
        ({"threshold": 1.5}, "--threshold must lie in [0, 1]"),
        ({"resume": True, "overwrite": True}, "contradict"),
        ({"backend": "coreml"}, "unknown backend"),
        ({"preset": "crops"}, "unknown preset"),
        ({"decoder": "ffmpeg"}, "unknown video decoder"),
        ({"backend": "tensorrt", "threads": 2}, "--threads only apply to --backend onnxruntime"),
        ({"preset": "frames", "yunet_model": "y.onnx"}, "--yunet-model only apply to --preset faces"),
        ({"preset": "frames", "decode_all_frames": True}, "--decode-all-frames only apply to --preset faces"),
        ({"backend": "openvino", "spin_wait": True}, "--spin-wait only apply to --backend onnxruntime"),
    ],
)
def test_run_config_refuses_bad_options(tmp_path: Path, options: dict[str, object], message: str) -> None:
    with pytest.raises(UsageError) as info:
        RunConfig(tmp_path, tmp_path / "m.onnx", tmp_path / "o", **options)  # type: ignore[arg-type]
    assert message in str(info.value)


def test_faces_only_options_are_refused_when_the_contract_preset_is_frames(model: Path, folder: Path,
                                                                           tmp_path: Path) -> None:
    config = RunConfig(folder, model, tmp_path / "out", face_detectors="haar")  # preset from the contract
    with pytest.raises(UsageError, match="only apply to --preset faces"):
        run_folder(config)
    assert not (tmp_path / "out").exists()


def test_prepare_file_gives_clips_or_the_final_row(folder: Path) -> None:
    pre = Preprocessor(ModelContract(config="tiny", preset="frames"), "frames")
    (folder / "broken.mp4").write_bytes(b"\x00" * 100)
    outcomes = {item.name: prepare_file(pre, item) for item in discover(folder)}
    assert isinstance(outcomes["red.png"], PreparedFile) and outcomes["red.png"].windows == 1
    skipped, broken = outcomes["notes.md"], outcomes["broken.mp4"]
    assert isinstance(skipped, ResultRow) and skipped.status == "skipped" and "not an image or video" in skipped.reason
    assert isinstance(broken, ResultRow) and broken.status == "error" and broken.reason and broken.label is None
    item = next(i for i in discover(folder) if i.name == "red.png")
    row = scored_row(item, outcomes["red.png"], [0.25], threshold=0.2, seconds=1.5)  # type: ignore[arg-type]
    assert (row.label, row.prob_fake, row.status, row.windows, row.seconds) == (1, 0.25, "ok", 1, 1.5)
    with pytest.raises(Exception, match="scores for 1 windows"):
        scored_row(item, outcomes["red.png"], [0.2, 0.3], threshold=0.5, seconds=0.0)  # type: ignore[arg-type]


def test_results_sink_needs_start_and_keeps_predictions_in_step(tmp_path: Path) -> None:
    sink = ResultsSink(tmp_path / "out", error_label=0)
    with pytest.raises(RuntimeError, match="start"):
        sink.write(ResultRow("a.png", label=1, prob_fake=0.9))
    settings = dict.fromkeys(MANIFEST_KEYS)
    with sink.start(settings):
        sink.write(ResultRow("a.png", label=1, prob_fake=0.9))
        sink.write(ResultRow("b.mp4", status="error", reason="empty file", kind="video"))
        sink.finish({"files": 2})
    assert sink.failed == 1
    assert sink.predictions_path.read_text().splitlines() == ["filename,label", "a.png,1", "b.mp4,0"]
    assert json.loads(sink.summary_path.read_text()) == {"files": 2}
    assert np.array_equal([r.filename for r in load_results(sink.results_path)], ["a.png", "b.mp4"])
