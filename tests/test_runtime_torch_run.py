"""``mmdet-run --backend torch``: a checkpoint scored by the run loop gives the ONNX Runtime backend's scores."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from mmdet_deploy.errors import UsageError
from mmdet_deploy.runtime.results import load_results
from mmdet_deploy.runtime.run import RunConfig, run_folder
from runtime_fixtures import astronaut, face_frames, write_video

pytest.importorskip("torch")
pytest.importorskip("mmdet_deploy.export")

#: |prob_fake(torch) - prob_fake(onnxruntime)| allowed on the same files (both fp32 on the CPU).
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("torch-run")
    Image.fromarray(astronaut()).save(root / "astronaut.png")
    write_video(root / "face clip.mp4", face_frames(25), fps=10)
    (root / "notes.txt").write_text("not media")
    return root


def _run(config: RunConfig) -> dict[str, object]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # demo weights
        summary = run_folder(config)
    assert summary.exit_code == 0, summary.message
    return {r.filename: r for r in load_results(summary.results_path)}


def test_torch_backend_scores_like_onnxruntime(media: Path, tiny_checkpoint: Path, tiny_onnx: Path,
                                                tmp_path: Path) -> None:
    torch_rows = _run(RunConfig(media, tiny_checkpoint, tmp_path / "torch", backend="torch", model_config="tiny",
                                batch_size=2, workers=2, face_detectors="haar"))
    ort_rows = _run(RunConfig(media, tiny_onnx, tmp_path / "ort", batch_size=2, workers=2, face_detectors="haar"))
    assert set(torch_rows) == set(ort_rows) == {"astronaut.png", "face clip.mp4", "notes.txt"}
    diffs = []
    for name, row in torch_rows.items():
        other = ort_rows[name]
        assert (row.status, row.label, row.frames, row.detector) == (other.status, other.label, other.frames,
                                                                     other.detector)
        if row.prob_fake is not None:
            diffs.append(abs(row.prob_fake - other.prob_fake))
    assert len(diffs) == 2 and max(diffs) <= TOLERANCE, diffs
    manifest = json.loads((tmp_path / "torch" / "run.json").read_text())
    backend = manifest["backend"]
    assert manifest["config"] == "tiny" and backend["backend"] == "torch"
    assert backend["config"] == "tiny" and backend["precision"] == "fp32"


def test_torch_backend_in_worker_processes(media: Path, tiny_checkpoint: Path, tmp_path: Path) -> None:
    threads = _run(RunConfig(media, tiny_checkpoint, tmp_path / "t", backend="torch", model_config="tiny",
                             workers=2, face_detectors="haar"))
    processes = _run(RunConfig(media, tiny_checkpoint, tmp_path / "p", backend="torch", model_config="tiny",
                               workers=2, face_detectors="haar", decode_processes=True))
    assert {n: r.prob_fake for n, r in threads.items()} == {n: r.prob_fake for n, r in processes.items()}
    summary = json.loads((tmp_path / "p" / "summary.json").read_text())
    assert summary["worker_kind"] == "processes" and summary["videos_decoded"] == 1
    assert summary["frames_decoded"] == 25


def test_cli_torch_backend(media: Path, tiny_checkpoint: Path, tmp_path: Path) -> None:
    from mmdet_deploy.cli.run import app

    out = tmp_path / "cli"
    result = CliRunner().invoke(app, [str(media), "--model", str(tiny_checkpoint), "--out", str(out), "--backend",
                                      "torch", "--config", "tiny", "--precision", "bf16", "--batch-size", "2", "-q"])
    assert result.exit_code == 0, result.output
    rows = load_results(out / "results.csv")
    assert sorted(r.status for r in rows) == ["ok", "ok", "skipped"]
    assert all(0.0 <= r.prob_fake <= 1.0 for r in rows if r.status == "ok")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"backend": "onnxruntime", "model_config": "tiny"}, "--config only apply to --backend torch"),
        ({"backend": "onnxruntime", "precision": "bf16", "cuda_graphs": True},
         "--precision only apply to --backend openvino or torch; --cuda-graphs only apply to --backend torch"),
        ({"backend": "torch", "providers": "cpu"}, "--providers only apply to --backend onnxruntime"),
    ],
)
def test_torch_only_options_are_refused_elsewhere(tmp_path: Path, options: dict, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        RunConfig(tmp_path, tmp_path / "m", tmp_path / "out", **options)


def test_torch_options_reach_the_backend(tmp_path: Path) -> None:
    config = RunConfig(tmp_path, tmp_path / "m.pth", tmp_path / "out", backend="torch", model_config="tiny",
                       head="fc", precision="bf16", threshold=0.3)
    assert config.backend_options() == {"config": "tiny", "head": "fc", "precision": "bf16", "cuda_graphs": False,
                                        "threshold": 0.3}
    fp16_on_cpu = RunConfig(tmp_path, tmp_path / "m.pth", tmp_path / "out", backend="torch", precision="fp16")
    from mmdet_deploy.runtime.run import open_backend

    with pytest.raises(UsageError, match="fp16 autocast needs a CUDA device"):
        open_backend(fp16_on_cpu)


def test_identical_inputs_reach_the_device_once(tiny_checkpoint: Path) -> None:
    """original and recons given as one array: one host-to-device copy, and the same logits as two copies."""
    from mmdet_deploy.runtime.backends import create_backend

    clip = np.random.default_rng(0).normal(size=(1, 10, 3, 224, 224)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        backend = create_backend("torch", tiny_checkpoint, config="tiny").open()
    try:
        seen: list[int] = []
        original_forward = backend.forward_tensors
        backend.forward_tensors = lambda *t: seen.extend(id(x) for x in t) or original_forward(*t)  # type: ignore
        shared = backend.infer({"original": clip, "recons": clip})["logits"]
        assert len(set(seen)) == 1
        separate = backend.infer({"original": clip, "recons": clip.copy()})["logits"]
        np.testing.assert_array_equal(shared, separate)
    finally:
        backend.close()
