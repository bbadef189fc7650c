"""``mmdet-export vqvae``: dynamic shapes, folded BatchNorm, the tie rule in the graph, contract, parity, refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from typer.testing import CliRunner  # noqa: E402

from mmdet_deploy.errors import ParityError  # noqa: E402
from mmdet_deploy.export.vqvae_export import export_vqvae  # noqa: E402
from mmdet_deploy.runtime.recons import VQVAEReconstructor  # noqa: E402
from mmdet_deploy.runtime.vqvae_contract import VQVAEContract  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:.*DEMO VQ-VAE")
runner = CliRunner()


def export_cli(*args: str | Path) -> tuple[int, str]:
    from mmdet_deploy.cli.export import app

    result = runner.invoke(app, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


def test_graph_is_dynamic_folded_and_ties_to_the_lowest_index(tiny_vqvae_onnx) -> None:
    proto = onnx.load(str(tiny_vqvae_onnx.path))
    ops = [n.op_type for n in proto.graph.node]
    assert "BatchNormalization" not in ops and ops.count("ArgMin") == 1
    argmin = next(n for n in proto.graph.node if n.op_type == "ArgMin")
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in argmin.attribute}
    assert attrs["select_last_index"] == 0 and attrs["axis"] == 1
    dims = [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims[1] == 3 and all(isinstance(d, str) and d for d in (dims[0], dims[2], dims[3]))
    meta = {p.key: p.value for p in proto.metadata_props}
    contract = VQVAEContract.from_metadata(meta, "test")
    assert contract.width == 16 and contract.codes == 64 and contract.demo_weights and contract.margin == 24
    assert contract.exporter == tiny_vqvae_onnx.exporter and contract.checkpoint_sha256


def test_parity_report(tiny_vqvae_onnx) -> None:
    report = json.loads(tiny_vqvae_onnx.parity_path.read_text())
    assert report["passed"] and report["crop_equals_full"] and report["worst_share_over_1"] <= 0.005
    for group in report["groups"].values():
        assert group["postprocess_exact"] and group["code_agreement"] > 0.99 and group["output_cosine"] > 0.9999
    assert "noise_333x251" in report["groups"] and report["tolerance"]["max_share_over_1_grey_level"] == 0.005


def test_onnx_runtime_reproduces_exact_ties(tmp_path: Path, tiny_vqvae_checkpoint) -> None:
    """A codebook of identical rows: every distance ties, torch.min takes index 0; so must ArgMin."""
    from mmdet_deploy.model.vqvae_io import load_vqvae

    model, _ = load_vqvae(tiny_vqvae_checkpoint)
    state = model.state_dict()
    state["codebook.embedding.weight"] = state["codebook.embedding.weight"][3:4].repeat(64, 1).clone()
    torch.save(state, tmp_path / "tied.pt")
    export_vqvae(tmp_path / "tied.pt", tmp_path / "tied.onnx", config="tiny", check=False)
    rec = VQVAEReconstructor(tmp_path / "tied.onnx")
    x = np.random.default_rng(0).uniform(-1, 1, (2, 3, 40, 56)).astype(np.float32)
    recons, codes = rec.run_model(x)
    assert codes.shape == (2, 10, 14) and int(codes.max()) == 0 and recons.shape == (2, 3, 40, 56)


def test_parity_gate_fails_with_exit_code_3_and_keeps_the_files(tmp_path: Path, tiny_vqvae_checkpoint) -> None:
    out = tmp_path / "gate.onnx"
    with pytest.raises(ParityError) as info:
        export_vqvae(tiny_vqvae_checkpoint, out, max_share=-1.0)  # no share can be below -1: the gate must trip
    assert info.value.exit_code == 3 and out.is_file()
    assert json.loads((tmp_path / "gate.parity.json").read_text())["passed"] is False


def test_cli_exports_and_refuses_a_bad_checkpoint_naming_the_key(tmp_path: Path, tiny_vqvae_checkpoint) -> None:
    code, output = export_cli("vqvae", "--weights", tiny_vqvae_checkpoint, "--out", tmp_path / "v.onnx", "--no-check")
    assert code == 0, output
    assert "wrote" in output and (tmp_path / "v.onnx").is_file()
    from mmdet_deploy.model.vqvae_io import load_vqvae

    state = load_vqvae(tiny_vqvae_checkpoint)[0].state_dict()
    state["encoder.3.weight"] = state["encoder.3.weight"][:, :8].clone()
    torch.save(state, tmp_path / "bad.pt")
    code, output = export_cli("vqvae", "--weights", tmp_path / "bad.pt", "--out", tmp_path / "bad.onnx",
                              "--config", "tiny")  # fmt: skip
    assert code == 1 and "encoder.3.weight (checkpoint (16, 8, 4, 4) vs model (16, 16, 4, 4))" in output
    assert not (tmp_path / "bad.onnx").exists() and not list(tmp_path.glob(".bad.onnx*"))


def test_demo_weights_command(tmp_path: Path) -> None:
    code, output = export_cli("vqvae-demo-weights", tmp_path / "d.pt", "--config", "tiny", "--seed", "3")
    assert code == 0 and "VQ-VAE demo weights (tiny, seed 3)" in output and (tmp_path / "d.pt").is_file()


def test_detector_export_stamps_the_recons_mode(tiny_onnx_factory) -> None:
    from mmdet_deploy.contract import METADATA_KEY, ModelContract

    result = tiny_onnx_factory("simplified", recons="vqvae", check=False)
    meta = {p.key: p.value for p in onnx.load(str(result.path)).metadata_props}
    assert ModelContract.from_json(meta[METADATA_KEY]).recons == "vqvae"
    assert ModelContract.from_dict({"contract_version": 1}).recons == "original"  # contracts from before the field
