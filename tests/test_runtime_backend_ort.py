"""ONNX Runtime backend: the contract from the model, loud failures, provider checks."""

from __future__ import annotations

import importlib.metadata
import logging
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from mmdet_deploy.contract import ModelContract
from mmdet_deploy.errors import BackendError, ContractError, UsageError
from mmdet_deploy.runtime.backends import create_backend
from mmdet_deploy.runtime.backends import onnxruntime as ort_backend
from mmdet_deploy.runtime.backends.onnxruntime import OnnxRuntimeBackend, resolve_providers
from runtime_fixtures import build_synthetic_model, reference_prob


@pytest.fixture(scope="module")
def synthetic_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_synthetic_model(tmp_path_factory.mktemp("model") / "synthetic.onnx")


def test_reads_the_contract_and_infers(synthetic_model: Path) -> None:
    with create_backend("onnxruntime", synthetic_model) as backend:
        assert isinstance(backend, OnnxRuntimeBackend)
        assert backend.contract == ModelContract(config="tiny")
        assert backend.providers == ["CPUExecutionProvider"] and backend.max_batch is None
        clips = np.random.default_rng(0).normal(size=(3, 10, 3, 224, 224)).astype(np.float32)
        out = backend.infer({"original": clips, "recons": clips})
        assert out["logits"].shape == (3, 2)
        np.testing.assert_allclose(out["prob_fake"], reference_prob(clips), atol=1e-5)
        facts = backend.describe()
        assert facts["providers"] == ["CPUExecutionProvider"] and facts["head"] == "simplified"


def test_model_without_contract(tmp_path: Path) -> None:
    path = build_synthetic_model(tmp_path / "bare.onnx", with_contract=False)
    with pytest.raises(ContractError, match="no 'mmdet_deploy.contract' contract"):
        OnnxRuntimeBackend(path).open()


@pytest.mark.parametrize("content", [b"", b"this is not a model", bytes(range(256)) * 8])
def test_file_that_is_not_onnx(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "model.onnx"
    path.write_bytes(content)
    with pytest.raises(ContractError, match=f"{path}: not a valid ONNX model"):
        OnnxRuntimeBackend(path).open()


def test_missing_model_file(tmp_path: Path) -> None:
    with pytest.raises(BackendError, match="model file not found"):
        OnnxRuntimeBackend(tmp_path / "nope.onnx").open()


def test_contract_that_does_not_fit_the_graph(tmp_path: Path) -> None:
    path = build_synthetic_model(tmp_path / "m.onnx")
    import onnx

    model = onnx.load(str(path))
    model.metadata_props[0].value = ModelContract(config="tiny", frames=8).to_json()
    onnx.save(model, str(path))
    with pytest.raises(ContractError, match="input 'original' has shape .* the contract says"):
        OnnxRuntimeBackend(path).open()


def test_static_batch_is_reported(tmp_path: Path) -> None:
    path = build_synthetic_model(tmp_path / "b2.onnx", static_batch=2)
    with OnnxRuntimeBackend(path) as backend:
        assert backend.max_batch == 2


def test_provider_resolution() -> None:
    assert resolve_providers(None, "cpu") == ["CPUExecutionProvider"]
    assert resolve_providers(None, "cuda:1") == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert resolve_providers(["tensorrt", "cuda"], "cuda") == [
        "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"
    ]
    with pytest.raises(UsageError, match="contradicts"):
        resolve_providers(["cuda"], "cpu")
    with pytest.raises(UsageError, match="unknown execution provider"):
        resolve_providers(["metal"], "cuda")
    with pytest.raises(UsageError, match="unknown device"):
        resolve_providers(None, "gpu")


def test_provider_options_for_tensorrt(tmp_path: Path) -> None:
    backend = OnnxRuntimeBackend(tmp_path / "m.onnx", device="cuda:1", trt_fp16=True, trt_engine_cache=tmp_path / "c")
    opts = backend._provider_options(["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"])
    assert opts[0]["trt_fp16_enable"] is True and opts[0]["trt_engine_cache_path"] == str(tmp_path / "c")
    assert opts[0]["device_id"] == "1" and opts[1] == {"device_id": "1"} and opts[2] == {}


def test_cuda_missing_from_this_build_fails_loudly(synthetic_model: Path) -> None:
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime build has CUDA")
    with pytest.raises(BackendError, match="not in this ONNX Runtime build .* install onnxruntime-gpu"):
        OnnxRuntimeBackend(synthetic_model, device="cuda").open()


def test_silent_cpu_fallback_is_detected(synthetic_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """onnxruntime-gpu without CUDA libraries creates a CPU session without an error: we must notice."""
    real_session = ort.InferenceSession

    def fallback_session(path: str, options: Any, providers: list[str], provider_options: Any) -> Any:
        return real_session(path, options, providers=["CPUExecutionProvider"])

    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(ort, "InferenceSession", fallback_session)
    with pytest.raises(BackendError, match="requested CUDAExecutionProvider but ONNX Runtime is running on CPU"):
        OnnxRuntimeBackend(synthetic_model, device="cuda").open()


def test_two_onnxruntime_distributions_are_warned_about(
    synthetic_model: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real = importlib.metadata.distribution

    def fake_distribution(name: str) -> Any:
        return object() if name == "onnxruntime-gpu" else real(name)

    monkeypatch.setattr(ort_backend.importlib.metadata, "distribution", fake_distribution)
    with caplog.at_level(logging.WARNING):
        OnnxRuntimeBackend(synthetic_model).open()
    assert "onnxruntime, onnxruntime-gpu" in caplog.text and "install exactly one" in caplog.text


def test_threads_and_graph_level_options(synthetic_model: Path) -> None:
    with OnnxRuntimeBackend(synthetic_model, intra_op_threads=1, graph_optimization="basic") as backend:
        assert backend.describe()["intra_op_threads"] == 1
        options = backend.session.get_session_options()  # ORT's own default: its threads spin-wait
        assert options.get_session_config_entry("session.intra_op.allow_spinning") == "1"
    with OnnxRuntimeBackend(synthetic_model, allow_spinning=False) as backend:
        options = backend.session.get_session_options()
        assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
        assert options.get_session_config_entry("session.inter_op.allow_spinning") == "0"
        assert backend.describe()["allow_spinning"] is False
    with pytest.raises(UsageError, match="graph optimisation level"):
        OnnxRuntimeBackend(synthetic_model, graph_optimization="max").open()


def test_inference_failure_is_one_clear_error(synthetic_model: Path) -> None:
    with OnnxRuntimeBackend(synthetic_model) as backend:
        wrong = np.zeros((1, 10, 3, 100, 100), np.float32)
        with pytest.raises(BackendError, match="inference failed"):
            backend.infer({"original": wrong, "recons": wrong})
