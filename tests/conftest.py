"""Shared fixtures and the automatic skips for hardware-bound tests."""

from __future__ import annotations

import importlib.util

import pytest


def _has_cuda() -> bool:
    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return bool(torch.cuda.is_available())


def _has_tensorrt() -> bool:
    try:
        import tensorrt  # noqa: F401
    except Exception:
        return False
    return True


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    skip_trt = pytest.mark.skip(reason="needs TensorRT (pip install 'mmdet-deploy[gpu]' on a GPU machine)")
    has_gpu = has_trt = None
    for item in items:
        if "gpu" in item.keywords:
            has_gpu = _has_cuda() if has_gpu is None else has_gpu
            if not has_gpu:
                item.add_marker(skip_gpu)
        if "trt" in item.keywords:
            has_trt = _has_tensorrt() if has_trt is None else has_trt
            if not has_trt:
                item.add_marker(skip_trt)


# --- shared artefacts of the tiny configuration (built once per test session) -------------------------


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory):
    """A full-format demo checkpoint of the tiny configuration (all heads load from it)."""
    pytest.importorskip("torch")
    from mmdet_deploy.model import write_demo_checkpoint

    return write_demo_checkpoint(tmp_path_factory.mktemp("weights") / "tiny.pth", config="tiny", seed=0)


@pytest.fixture(scope="session")
def tiny_onnx_factory(tiny_checkpoint, tmp_path_factory: pytest.TempPathFactory):
    """``factory(head="simplified", **export_kwargs)`` -> ExportResult, cached per arguments."""
    from mmdet_deploy.export import export_onnx

    cache: dict = {}
    folder = tmp_path_factory.mktemp("onnx")

    def make(head: str = "simplified", **kwargs):
        key = (head, tuple(sorted(kwargs.items())))
        if key not in cache:
            name = f"tiny_{head}_{len(cache)}.onnx"
            cache[key] = export_onnx(tiny_checkpoint, folder / name, head=head, config="tiny", **kwargs)
        return cache[key]

    return make


@pytest.fixture(scope="session")
def tiny_onnx(tiny_onnx_factory):
    """Path of the tiny model exported with head ``simplified`` (fp32, parity-checked)."""
    return tiny_onnx_factory("simplified").path


# --- the VQ-VAE of the recons input (issue 16): tiny, seeded, exported once per session ----------------


@pytest.fixture(scope="session")
def tiny_vqvae_checkpoint(tmp_path_factory: pytest.TempPathFactory):
    """Seeded demo weights of the tiny VQ-VAE (width 16, 64 codes) with the reference's keys."""
    pytest.importorskip("torch")
    from mmdet_deploy.model.vqvae_io import write_vqvae_demo

    return write_vqvae_demo(tmp_path_factory.mktemp("vqvae") / "tiny_vqvae.pt", config="tiny", seed=0)


@pytest.fixture(scope="session")
def tiny_vqvae_onnx(tiny_vqvae_checkpoint, tmp_path_factory: pytest.TempPathFactory):
    """The tiny VQ-VAE exported by ``export_vqvae`` (parity-checked); returns the export result."""
    from mmdet_deploy.export.vqvae_export import export_vqvae

    return export_vqvae(tiny_vqvae_checkpoint, tmp_path_factory.mktemp("vqvae_onnx") / "tiny_vqvae.onnx")
