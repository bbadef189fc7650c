"""OpenVINO backend on the tiny model: fp32 parity, bf16 tolerance, INT8 (ORT Q/DQ and NNCF), cache, errors."""

from __future__ import annotations

import json
import logging
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from mmdet_deploy.contract import ModelContract
from mmdet_deploy.errors import ContractError, MissingDependencyError, UsageError
from mmdet_deploy.parity import TOLERANCES, compare_logits
from mmdet_deploy.runtime.backends import create_backend
from mmdet_deploy.runtime.backends import openvino as ov_backend
from runtime_fixtures import build_synthetic_model, reference_prob

pytest.importorskip("openvino")

#: OpenVINO kernels that compute in int8 (e.g. brgconv_avx512_amx_i8, jit_avx512_I8, brgemm_avx512_u8).
INT8_KERNEL = re.compile(r"(^|_)[iu]8($|_)", re.IGNORECASE)


def _clips(n: int = 3, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).normal(size=(n, 10, 3, 224, 224)) * 0.5).astype(np.float32)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_synthetic_model(tmp_path_factory.mktemp("ov") / "synthetic.onnx")


@pytest.fixture(scope="module")
def torch_logits(tiny_checkpoint: Path) -> np.ndarray:
    """PyTorch fp32 logits of the tiny model on :func:`_clips` (the reference of every parity test)."""
    x = _clips()
    with create_backend("torch", tiny_checkpoint, config="tiny") as ref:
        return ref.infer({"original": x, "recons": x})["logits"]


def _run(path: Path, n: int = 3, **options: object) -> tuple[dict[str, np.ndarray], dict]:
    x = _clips(n)
    with create_backend("openvino", path, threads=2, **options) as backend:
        return backend.infer({"original": x, "recons": x}), backend.describe()


def test_synthetic_model_matches_numpy(synthetic: Path) -> None:
    out, facts = _run(synthetic)
    np.testing.assert_allclose(out["prob_fake"], reference_prob(_clips()), atol=1e-5)
    assert facts["inference_precision"] == "f32" and facts["cache"] == "off" and facts["max_batch"] is None
    assert facts["artefact_precision"] == "fp32" and not facts["int8"]


def test_fp32_parity_with_pytorch(tiny_onnx: Path, torch_logits: np.ndarray) -> None:
    out, facts = _run(tiny_onnx)
    stats = compare_logits(torch_logits, out["logits"])
    assert facts["inference_precision"] == "f32"  # pinned, although this CPU may prefer bf16
    assert stats.within(*TOLERANCES["fp32"]), stats


def test_bf16_within_its_tolerance(tiny_onnx: Path, torch_logits: np.ndarray) -> None:
    out, facts = _run(tiny_onnx, precision="bf16")
    stats = compare_logits(torch_logits, out["logits"])
    assert facts["inference_precision"] == "bf16" and facts["precision"] == "bf16"
    assert stats.within(*TOLERANCES["bf16"]) and stats.agreement == 1.0, stats
    assert stats.max_abs > 0  # really bf16: fp32 would agree to ~1e-7


def test_throughput_requests_in_flight_give_the_same_outputs(tiny_onnx: Path) -> None:
    single, _ = _run(tiny_onnx, n=4)
    many, facts = _run(tiny_onnx, n=4, hint="throughput", requests=0)
    assert facts["hint"] == "throughput" and facts["optimal_requests"] >= 1
    np.testing.assert_allclose(many["logits"], single["logits"], atol=1e-5)
    assert many["prob_fake"].shape == (4,)


#: Many throughput-hint backends opened, used and dropped with the garbage collector running on every
#: allocation and cyclic garbage around. With an AsyncInferQueue callback this aborted the interpreter
#: ("terminate called after throwing an instance of 'std::system_error': Resource deadlock avoided") within a
#: few iterations; it ran in a child process so that the abort fails this test instead of killing pytest.
_GC_STRESS = """
import gc, sys
import numpy as np
from pathlib import Path
from mmdet_deploy.runtime.backends import create_backend
gc.set_threshold(1, 1, 1)
x = np.random.default_rng(0).normal(size=(4, 10, 3, 224, 224)).astype(np.float32)
for i in range(40):
    backend = create_backend("openvino", Path(sys.argv[1]), threads=2, hint="throughput", requests=0)
    backend.open()
    garbage = [[j] for j in range(1000)]
    garbage.append(garbage)
    out = backend.infer({"original": x, "recons": x})
    assert out["prob_fake"].shape == (4,)
    if i % 2:
        backend.close()
    del backend, garbage
print("survived")
"""


def test_requests_in_flight_survive_garbage_collection_anywhere(synthetic: Path) -> None:
    import subprocess

    done = subprocess.run([sys.executable, "-c", _GC_STRESS, str(synthetic)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0 and "survived" in done.stdout, (done.returncode, done.stderr[-2000:])


@pytest.fixture(scope="module")
def int8_models(tiny_onnx: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny model quantised by ONNX Runtime's quantiser and by NNCF, from one synthetic calibration set."""
    pytest.importorskip("onnx")
    from mmdet_deploy.calibration.quantize import quantize_onnx
    from test_calibration_support import synthetic_set

    folder = tmp_path_factory.mktemp("int8")
    contract = ModelContract.from_onnx(tiny_onnx)
    synthetic_set(folder / "calib", contract)
    return {engine: quantize_onnx(tiny_onnx, folder / "calib", folder / f"tiny.{engine}.onnx", engine=engine).path
            for engine in ("ort", "nncf")}


def test_nncf_file_carries_its_own_weights(int8_models: dict[str, Path]) -> None:
    """NNCF ran on a copy with external weights (memory); the file it wrote must not point back into that copy."""
    import onnx

    model = onnx.load(str(int8_models["nncf"]), load_external_data=False)
    external = [t.name for t in model.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    assert not external, external[:5]
    assert not [p for p in int8_models["nncf"].parent.iterdir() if p.suffix == ".bin"]


@pytest.mark.parametrize("engine", ["ort", "nncf"])
def test_int8_qdq_runs_as_int8_on_openvino(int8_models: dict[str, Path], tiny_onnx: Path, engine: str) -> None:
    """Both quantisers' Q/DQ files run on OpenVINO, in int8 kernels, and give the fp32 model's decisions."""
    import onnxruntime as ort

    path = int8_models[engine]
    x = _clips(2)
    with create_backend("openvino", path, threads=2, profile=True) as backend:
        out = backend.infer({"original": x, "recons": x})
        layers = backend.profile({"original": x[:1], "recons": x[:1]}, runs=1)
        assert backend.describe()["int8"] is True
    int8_layers = [la for la in layers if INT8_KERNEL.search(la["exec_type"])
                   and la["type"] in ("Convolution", "FullyConnected", "MatMul")]
    assert int8_layers, sorted({la["exec_type"] for la in layers})
    session = ort.InferenceSession(str(tiny_onnx), providers=["CPUExecutionProvider"])
    fp32 = session.run(["logits"], {"original": x, "recons": x})[0]
    stats = compare_logits(fp32, out["logits"])
    assert stats.agreement == 1.0 and stats.max_abs_prob < 0.02 and stats.nonfinite == 0, stats


def test_cache_hit_and_rebuilds(tiny_onnx: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = tmp_path / "m.onnx"
    shutil.copy(tiny_onnx, model)
    cache = tmp_path / "cache"

    def status() -> tuple[str, np.ndarray]:
        out, facts = _run(model, n=1, cache_dir=cache)
        return facts["cache"], out["logits"]

    first, logits = status()
    assert first == "built (no entry)" and len(list(cache.glob("*.ovblob"))) == 1
    hit, again = status()
    assert hit == "hit"
    np.testing.assert_array_equal(again, logits)
    real = ov_backend.openvino_version()
    monkeypatch.setattr(ov_backend, "openvino_version", lambda: "2099.0.0-other")
    assert status()[0] == f"rebuilt: built by OpenVINO {real}"
    assert status()[0] == "hit"  # the entry now records the "other" version
    monkeypatch.undo()
    assert status()[0] == "rebuilt: built by OpenVINO 2099.0.0-other"
    assert status()[0] == "hit"
    from mmdet_deploy.calibration.scoring import store_threshold

    store_threshold(model, 0.42, "test")  # same path, other bytes: another artefact
    rebuilt, _ = status()
    assert rebuilt == "rebuilt: artefact changed"
    with create_backend("openvino", model, threads=2, cache_dir=cache) as backend:
        assert backend.cache_status == "hit" and backend.contract.threshold == 0.42
    blob = next(cache.glob("*.ovblob"))
    blob.write_bytes(blob.read_bytes()[:-16] + b"\0" * 16)
    assert status()[0] == "rebuilt: blob does not match its manifest"
    manifest = json.loads(next(cache.glob("*.json")).read_text())
    assert manifest["artefact_sha256"] and manifest["config"]["INFERENCE_PRECISION_HINT"] == "f32"
    _run(model, n=1, cache_dir=cache, precision="bf16")
    assert len(list(cache.glob("*.ovblob"))) == 2  # another configuration is another entry


def test_openvino_not_installed(synthetic: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'mmdet-deploy\[openvino\]'") as info:
        create_backend("openvino", synthetic).open()
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("content", [b"", b"this is not a model", bytes(range(256)) * 8])
def test_file_openvino_cannot_read(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "model.onnx"
    path.write_bytes(content)
    with pytest.raises(ContractError, match=rf"{re.escape(str(path))}: OpenVINO cannot read this model \(.+\)") as info:
        create_backend("openvino", path).open()
    assert "\n" not in str(info.value) and "Exception from" not in str(info.value)


def test_model_without_contract_or_with_a_wrong_one(tmp_path: Path) -> None:
    bare = build_synthetic_model(tmp_path / "bare.onnx", with_contract=False)
    with pytest.raises(ContractError, match="no 'mmdet_deploy.contract' contract"):
        create_backend("openvino", bare).open()
    wrong = build_synthetic_model(tmp_path / "wrong.onnx", ModelContract(config="tiny", frames=8))
    import onnx

    model = onnx.load(str(wrong))
    model.metadata_props[0].value = ModelContract(config="tiny").to_json()  # contract says 10 frames, graph 8
    onnx.save(model, str(wrong))
    with pytest.raises(ContractError, match="input 'original' has shape .* the contract says"):
        create_backend("openvino", wrong).open()


def test_bf16_without_native_support_warns(synthetic: Path, monkeypatch: pytest.MonkeyPatch,
                                           caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(ov_backend, "native_bf16", lambda core: False)
    with caplog.at_level(logging.WARNING, logger=ov_backend.__name__):
        _run(synthetic, n=1, precision="bf16")
    assert any("emulates it, which is slow" in r.getMessage() for r in caplog.records)


def test_bad_options() -> None:
    for options, message in (({"precision": "fp16"}, "openvino precision must be one of fp32, bf16"),
                             ({"hint": "fast"}, "openvino hint must be one of latency, throughput"),
                             ({"requests": -1}, "openvino requests must be >= 0"),
                             ({"streams": 2}, "unknown options")):
        with pytest.raises(UsageError, match=message):
            create_backend("openvino", "m.onnx", **options)
    with pytest.raises(UsageError, match="runs on --device cpu"):
        create_backend("openvino", "m.onnx", device="cuda")
