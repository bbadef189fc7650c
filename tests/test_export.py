"""ONNX export: contract, graph hygiene for TensorRT, parity, atomic writes and clear errors."""

from __future__ import annotations

import errno
import json
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from typer.testing import CliRunner  # noqa: E402

from mmdet_deploy.cli.export import app  # noqa: E402
from mmdet_deploy.contract import METADATA_KEY, ModelContract  # noqa: E402
from mmdet_deploy.errors import ExportError, ParityError, StateDictMismatchError, UsageError  # noqa: E402
from mmdet_deploy.export import example_inputs, export_onnx, trt_compatibility  # noqa: E402
from mmdet_deploy.model import load_model, write_demo_checkpoint  # noqa: E402


def ort_logits(path: Path, inputs: dict[str, np.ndarray]) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["logits"], inputs)[0]


@pytest.mark.parametrize("head", ["simplified", "fc", "fusion"])
def test_export_each_head_matches_pytorch(tiny_onnx_factory, tiny_checkpoint: Path, head: str) -> None:
    result = tiny_onnx_factory(head)
    assert result.parity["passed"] and result.parity["overall"]["max_abs"] <= 1e-5
    contract = ModelContract.from_metadata({p.key: p.value for p in onnx.load(str(result.path)).metadata_props}, "x")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = load_model(tiny_checkpoint, head=head, config="tiny")
    for batch in (1, 3):  # one file, two batch sizes
        inputs = example_inputs(contract, batch, seed=batch)
        with torch.inference_mode():
            ref = model(*[torch.from_numpy(inputs[n]) for n in contract.input_names]).numpy()
        got = ort_logits(result.path, inputs)
        assert got.shape == (batch, 2)
        np.testing.assert_allclose(got, ref, atol=1e-5, rtol=0)


def test_contract_round_trip(tiny_onnx_factory, tiny_checkpoint: Path) -> None:
    result = tiny_onnx_factory("simplified")
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    from_ort = ModelContract.from_metadata(session.get_modelmeta().custom_metadata_map, str(result.path))
    from_onnx = ModelContract.from_metadata({p.key: p.value for p in onnx.load(str(result.path)).metadata_props}, "x")
    assert from_ort == from_onnx == result.contract
    c = from_ort
    assert (c.head, c.config, c.frames, c.image_size, c.channel_order, c.preset) == (
        "simplified",
        "tiny",
        10,
        224,
        "RGB",
        "faces",
    )
    assert c.mean == (0.485, 0.456, 0.406) and c.std == (0.229, 0.224, 0.225)
    assert c.demo_weights is True and len(c.checkpoint_sha256) == 64
    assert c.exporter in ("dynamo", "torchscript") and c.opset >= 17
    assert {"mmdet_deploy", "torch", "onnx"} <= set(c.versions)
    assert [i.name for i in session.get_inputs()] == ["original", "recons"]
    assert [o.name for o in session.get_outputs()][:2] == ["logits", "prob_fake"]


def test_graph_is_clean_for_tensorrt(tiny_onnx_factory) -> None:
    result = tiny_onnx_factory("fusion")
    model = onnx.load(str(result.path))
    report = trt_compatibility(model)
    assert report["compatible"], report
    assert report["non_batch_dynamic_dims"] == []
    assert report["shape_arithmetic_nodes"] == []
    ops = report["op_counts"]
    assert ops.get("LayerNormalization", 0) == 2 * 2 * 2 + 1  # 2 blocks x 2 sub-blocks x 2 norms + final norm
    assert "BatchNormalization" not in ops, "eval BatchNorm must be folded into the 1x1 convs"
    for vi in list(model.graph.input) + list(model.graph.output):
        dims = vi.type.tensor_type.shape.dim
        assert dims[0].dim_param, f"{vi.name}: batch axis must be dynamic"
        assert all(d.dim_value > 0 for d in dims[1:]), f"{vi.name}: only the batch axis may be dynamic"
    assert json.loads(result.trt_report_path.read_text())["compatible"] is True


def test_trt_report_flags_an_unsupported_op(tiny_onnx_factory) -> None:
    model = onnx.load(str(tiny_onnx_factory("simplified").path))
    node = onnx.helper.make_node("Unique", ["prob_fake"], ["uniq"])
    model.graph.node.append(node)
    model.graph.node.append(onnx.helper.make_node("Gelu", ["logits"], ["g"], domain="com.microsoft"))
    model.graph.input[0].type.tensor_type.shape.dim[2].dim_param = "channels"
    report = trt_compatibility(model)
    assert not report["compatible"]
    assert "Unique" in report["unsupported_ops"] and "com.microsoft::Gelu" in report["unsupported_ops"]
    assert report["non_batch_dynamic_dims"] == ["original[2]=channels"]


def test_features_output(tiny_onnx_factory) -> None:
    result = tiny_onnx_factory("simplified", with_features=True)
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    outs = session.run(None, example_inputs(result.contract, 2))
    assert [o.name for o in session.get_outputs()] == ["logits", "prob_fake", "features"]
    assert outs[2].shape == (2, 64)
    np.testing.assert_allclose(outs[1], torch.softmax(torch.from_numpy(outs[0]), 1)[:, 1].numpy(), atol=1e-6)


def test_torchscript_exporter_also_passes(tiny_checkpoint: Path, tmp_path: Path) -> None:
    result = export_onnx(tiny_checkpoint, tmp_path / "ts.onnx", config="tiny", exporter="torchscript", simplify=False)
    assert result.exporter == "torchscript" and result.contract.exporter == "torchscript"
    assert result.parity["overall"]["max_abs"] <= 1e-5


def test_parity_failure_keeps_files_and_exits_3(tiny_checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "strict.onnx"
    with pytest.raises(ParityError, match="report"):
        export_onnx(tiny_checkpoint, out, config="tiny", atol=-1.0, simplify=False)  # no error can be < 0
    assert out.exists() and (tmp_path / "strict.parity.json").exists()
    assert json.loads((tmp_path / "strict.parity.json").read_text())["passed"] is False


def test_errors_are_clear(tiny_checkpoint: Path, tmp_path: Path) -> None:
    with pytest.raises(Exception, match="no such checkpoint"):
        export_onnx(tmp_path / "nope.pth", tmp_path / "a.onnx", config="tiny")
    simple = tmp_path / "simple.pth"
    full = torch.load(tiny_checkpoint, weights_only=True)["model_state_dict"]
    torch.save({k: v for k, v in full.items() if k.startswith(("backbone.", "head."))}, simple)
    with pytest.raises(StateDictMismatchError, match="head 'fusion' needs the full checkpoint"):
        export_onnx(simple, tmp_path / "f.onnx", head="fusion", config="tiny")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ExportError, match="cannot create the output folder"):
        export_onnx(tiny_checkpoint, tmp_path / "file" / "m.onnx", config="tiny")
    with pytest.raises(UsageError, match="opset 13"):
        export_onnx(tiny_checkpoint, tmp_path / "o.onnx", config="tiny", opset=13)


def test_disk_full_leaves_no_half_written_model(tiny_checkpoint: Path, tmp_path: Path, monkeypatch) -> None:
    def full_disk(model, path, *a, **k):
        Path(path).write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(onnx, "save", full_disk)
    with pytest.raises(ExportError, match="disk full"):
        export_onnx(tiny_checkpoint, tmp_path / "m.onnx", config="tiny", check=False, simplify=False)
    assert list(tmp_path.iterdir()) == []


def test_cli_onnx(tiny_checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "cli.onnx"
    res = CliRunner().invoke(app, ["onnx", "--weights", str(tiny_checkpoint), "--out", str(out), "--config", "tiny"])
    assert res.exit_code == 0, res.output
    assert "PASSED" in res.output and "exporter dynamo" in res.output or "exporter torchscript" in res.output
    assert METADATA_KEY in {p.key for p in onnx.load(str(out)).metadata_props}
    bad = CliRunner().invoke(app, ["onnx", "--weights", str(tmp_path / "missing.pth"), "--out", str(out)])
    assert bad.exit_code == 1 and "no such checkpoint" in bad.output


def test_cli_demo_weights(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["demo-weights", str(tmp_path / "d.safetensors"), "--config", "tiny"])
    assert res.exit_code == 0 and "demo weights" in res.output
    assert (tmp_path / "d.safetensors").stat().st_size > 0


@pytest.mark.slow
def test_base_export_parity(tmp_path: Path) -> None:
    """The full-size demo checkpoint exports and matches PyTorch within 1e-4 (slow: about 1-2 minutes)."""
    weights = write_demo_checkpoint(tmp_path / "base.pth", config="base")
    start = time.perf_counter()
    result = export_onnx(weights, tmp_path / "base.onnx", config="base", parity_clips=1)
    total = time.perf_counter() - start
    o = result.parity["overall"]
    print(
        f"\nbase export: {result.export_seconds:.1f} s export, {total:.1f} s with parity; "
        f"{result.size_bytes / 1e6:.1f} MB, {result.node_count} nodes, {result.exporter}; "
        f"max|d logit| {o['max_abs']:.2e}"
    )
    assert result.parity["passed"] and o["max_abs"] <= 1e-4
    assert result.trt_report["compatible"]
