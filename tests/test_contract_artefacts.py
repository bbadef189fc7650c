"""The contract reads and writes itself in artefacts: ONNX metadata_props and engine sidecars."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmdet_deploy.contract import DEMO_WEIGHTS_KEY, METADATA_KEY, PRODUCER, ModelContract, read_contract
from mmdet_deploy.errors import ContractError
from mmdet_deploy.tensorrt.sidecar import EngineSidecar

onnx = pytest.importorskip("onnx")


def _model() -> object:
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    model = helper.make_model(graph, producer_name="tests")
    helper.set_model_props(model, {"other.tool": "kept"})
    return model


def test_onnx_round_trip_keeps_other_metadata_and_stamps_flag_and_provenance(tmp_path: Path) -> None:
    model = _model()
    contract = ModelContract(config="tiny", demo_weights=True, threshold=0.3)
    assert contract.to_onnx(model) is model
    props = {p.key: p.value for p in model.metadata_props}
    assert props["other.tool"] == "kept" and props[DEMO_WEIGHTS_KEY] == "true"
    assert model.producer_name == PRODUCER and "DEMO WEIGHTS" in model.doc_string
    assert ModelContract.from_onnx(model) == contract
    # A later stage rewrites the contract: the flag and the doc string follow it, no stale copy remains.
    contract.replace(demo_weights=False, precision="int8").to_onnx(model)
    props = {p.key: p.value for p in model.metadata_props}
    assert props[DEMO_WEIGHTS_KEY] == "false" and "DEMO" not in model.doc_string and "int8" in model.doc_string
    assert [p.key for p in model.metadata_props].count(METADATA_KEY) == 1
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    assert ModelContract.from_onnx(path).precision == "int8" == read_contract(str(path)).precision


def test_onnx_errors_name_the_file(tmp_path: Path) -> None:
    bare = tmp_path / "bare.onnx"
    onnx.save(_model(), str(bare))
    with pytest.raises(ContractError, match=r"bare\.onnx: no 'mmdet_deploy.contract' contract"):
        ModelContract.from_onnx(bare)
    junk = tmp_path / "junk.onnx"
    junk.write_text("not protobuf", encoding="utf-8")
    with pytest.raises(ContractError, match=r"junk\.onnx: not a readable ONNX model"):
        ModelContract.from_onnx(junk)


def test_sidecar_round_trip_for_the_dataclass_and_its_dict() -> None:
    contract = ModelContract(config="tiny", precision="fp16")
    sidecar = EngineSidecar("10.9", "NVIDIA H200", "9.0", "fp16", {"min": 1, "opt": 1, "max": 4}, "a" * 64,
                            "b" * 64, contract={})
    stamped = contract.replace(threshold=0.7).to_sidecar(sidecar)
    assert isinstance(stamped, EngineSidecar) and sidecar.contract == {}  # a copy, the original untouched
    assert ModelContract.from_sidecar(stamped).threshold == 0.7 == stamped.model_contract().threshold
    as_dict = contract.to_sidecar(sidecar.to_dict())
    assert ModelContract.from_sidecar(as_dict) == contract
    with pytest.raises(ContractError, match="records no model contract"):
        ModelContract.from_sidecar({"precision": "fp16"}, "x.engine.json")
