"""End to end with a real exported model (tiny configuration): mmdet-run agrees with PyTorch on the same clips."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from mmdet_deploy.runtime.backends.onnxruntime import OnnxRuntimeBackend
from mmdet_deploy.runtime.preprocess import Preprocessor
from mmdet_deploy.runtime.results import load_results
from runtime_fixtures import astronaut, face_frames, write_video

torch = pytest.importorskip("torch")
pytest.importorskip("mmdet_deploy.export")


@pytest.mark.parametrize("preset", ["faces", "frames"])
def test_mmdet_run_with_the_tiny_exported_model(tiny_onnx: Path, tiny_checkpoint: Path, tmp_path: Path,
                                                preset: str) -> None:
    from mmdet_deploy.cli.run import app
    from mmdet_deploy.model import load_model

    root = tmp_path / "in"
    root.mkdir()
    Image.fromarray(astronaut()).save(root / "astronaut.png")
    write_video(root / "face clip.mp4", face_frames(25), fps=10)
    out = tmp_path / "out"
    result = CliRunner().invoke(app, [str(root), "--model", str(tiny_onnx), "--out", str(out), "--preset", preset,
                                      "--batch-size", "2", "-q"])
    assert result.exit_code == 0, result.output
    rows = {r.filename: r for r in load_results(out / "results.csv")}
    assert set(rows) == {"astronaut.png", "face clip.mp4"}

    with OnnxRuntimeBackend(tiny_onnx) as backend:
        contract = backend.contract
    assert contract is not None and contract.config == "tiny"
    pre = Preprocessor(contract, preset)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = load_model(tiny_checkpoint, head=contract.head, config="tiny").eval()
    for name, row in rows.items():
        item = pre(root / name)
        with torch.inference_mode():
            logits = model(torch.from_numpy(item.clips), torch.from_numpy(item.recons))
        prob = float(torch.softmax(logits.double(), dim=1)[:, 1].mean())
        assert row.status == "ok" and row.prob_fake == pytest.approx(prob, abs=1e-5)
        assert row.label == int(prob >= contract.threshold)
        assert row.windows == item.windows and row.detector == (item.detector or "")
    assert rows["face clip.mp4"].windows == (2 if preset == "frames" else 1)
    predictions = (out / "predictions.csv").read_text(encoding="utf-8").splitlines()
    assert predictions[0] == "filename,label" and len(predictions) == 3
    assert np.isfinite([r.prob_fake for r in rows.values()]).all()
