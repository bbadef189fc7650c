"""The PyTorch reference backend: CPU runs of the tiny model always, CUDA precisions and graphs on a GPU."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from mmdet_deploy.errors import BackendError, UsageError  # noqa: E402
from mmdet_deploy.runtime.backends import create_backend  # noqa: E402
from mmdet_deploy.runtime.backends.base import softmax_fake  # noqa: E402


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mmdet_deploy.model import write_demo_checkpoint

    return write_demo_checkpoint(tmp_path_factory.mktemp("torch") / "tiny.pth", config="tiny", seed=1)


@pytest.fixture(scope="module")
def clips() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(5)
    return {n: rng.normal(size=(2, 10, 3, 224, 224)).astype(np.float32) for n in ("original", "recons")}


@pytest.fixture(scope="module")
def reference(tiny_weights: Path, clips: dict[str, np.ndarray]) -> np.ndarray:
    from mmdet_deploy.model import load_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = load_model(tiny_weights, config="tiny")
    with torch.inference_mode():
        return model(torch.from_numpy(clips["original"]), torch.from_numpy(clips["recons"])).numpy()


def open_backend(weights: Path, device: str = "cpu", **options: object):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # demo-weights warning
        return create_backend("torch", weights, device=device, config="tiny", **options).open()


def test_cpu_fp32_matches_the_model_and_builds_its_contract(tiny_weights, clips, reference) -> None:
    from mmdet_deploy.model import sha256_file

    backend = open_backend(tiny_weights)
    try:
        out = backend.infer(clips)
        np.testing.assert_allclose(out["logits"], reference, rtol=0, atol=1e-6)
        np.testing.assert_allclose(out["prob_fake"], softmax_fake(reference), atol=1e-6)
        c = backend.contract
        assert (c.head, c.config, c.precision, c.exporter) == ("simplified", "tiny", "fp32", "torch")
        assert c.checkpoint_sha256 == sha256_file(tiny_weights) and c.demo_weights is True
        assert backend.describe()["precision"] == "fp32"
    finally:
        backend.close()


def test_cpu_bf16_autocast_is_close(tiny_weights, clips, reference) -> None:
    with open_backend(tiny_weights, precision="bf16") as backend:
        out = backend.infer(clips)
        assert backend.contract.extra["autocast"] == "bf16" and backend.contract.precision == "fp32"
    assert np.abs(out["logits"] - reference).max() <= 5e-2
    assert not np.array_equal(out["logits"], reference)  # bf16 really ran


@pytest.mark.parametrize(
    ("device", "options", "message"),
    [
        ("cpu", {"precision": "fp16"}, "fp16 autocast needs a CUDA device"),
        ("cpu", {"cuda_graphs": True}, "cuda_graphs needs a CUDA device"),
        ("cpu", {"precision": "int8"}, "torch precision must be one of"),
        ("cpu", {"graphs": True}, "unknown options"),
        ("cpu", {"head": "pooled"}, "unknown head"),
        ("tpu", {}, "torch device must be"),
    ],
)
def test_option_errors(tiny_weights, device: str, options: dict, message: str) -> None:
    with pytest.raises(UsageError) as info:
        create_backend("torch", tiny_weights, device=device, config="tiny", **options)
    assert message in str(info.value)


def test_missing_checkpoint(tmp_path) -> None:
    with pytest.raises(UsageError, match="checkpoint not found"):
        create_backend("torch", tmp_path / "none.pth", config="tiny").open()


def test_cuda_requested_without_gpu(tiny_weights) -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is available")
    with pytest.raises(BackendError, match="PyTorch sees no CUDA GPU"):
        create_backend("torch", tiny_weights, device="cuda", config="tiny").open()


@pytest.mark.gpu
@pytest.mark.parametrize("cuda_graphs", [False, True])
@pytest.mark.parametrize(("precision", "atol"), [("fp32", 1e-3), ("fp16", 5e-2), ("bf16", 5e-2)])
def test_cuda_precisions_and_graphs(
    tiny_weights, clips, reference, precision: str, atol: float, cuda_graphs: bool
) -> None:
    with open_backend(tiny_weights, device="cuda", precision=precision, cuda_graphs=cuda_graphs) as backend:
        first = backend.infer(clips)
        second = backend.infer(clips)  # replays the captured graph when cuda_graphs
        single = backend.infer({k: v[:1] for k, v in clips.items()})  # another batch size: another graph
    assert np.abs(first["logits"] - reference).max() <= atol
    assert np.abs(first["prob_fake"] - softmax_fake(reference)).max() <= (1e-4 if precision == "fp32" else 1e-2)
    np.testing.assert_allclose(second["logits"], first["logits"], atol=1e-6)
    assert np.abs(single["logits"][0] - reference[0]).max() <= atol
