"""Fake backends and artefact builders shared by the benchmark tests (no tests here; no model, no export)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from mmdet_deploy.benchmarks.artefacts import BuildContext
from mmdet_deploy.benchmarks.capabilities import Environment
from mmdet_deploy.contract import LOGITS, ModelContract
from mmdet_deploy.errors import ExportError
from mmdet_deploy.runtime.backends.base import Backend

#: A CPU machine with the exporters and ONNX Runtime but without CUDA or TensorRT.
CPU_ENV = Environment(
    modules=frozenset({"torch", "onnx", "onnxscript", "onnxruntime"}),
    ort_providers=("CPUExecutionProvider",),
    cxx=True,
)
#: Logit offset each fake artefact adds to the reference computation (by artefact file suffix).
OFFSETS = {".pth": 0.0, "fp32.onnx": 1e-6, "int8.onnx": 0.05, "int8-nncf.onnx": 0.02}


class FakeBackend(Backend):
    """Logits = (-s, s) + offset, s = 10 x mean of the clip; the offset depends on the artefact."""

    name = "fake"

    def _open(self) -> None:
        self.contract = ModelContract(config="tiny")
        self.offset = next(v for k, v in OFFSETS.items() if str(self.model_path).endswith(k))
        self.calls = 0

    def _infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.options.get("explode"):
            raise RuntimeError("the fake accelerator caught fire")
        if inputs["original"].shape[0] > self.options.get("memory_batches", 1 << 30):
            raise RuntimeError("fake out of memory")
        self.calls += 1
        s = 10.0 * inputs["original"].reshape(inputs["original"].shape[0], -1).mean(axis=1)
        return {LOGITS: np.stack([-s, s], axis=1).astype(np.float32) + np.float32(self.offset)}

    @property
    def max_batch(self) -> int | None:
        return self.options.get("max_batch")

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "fake": True}


def fake_factory(**extra: Any) -> Callable[..., FakeBackend]:
    """A backend factory: every registry name gives a :class:`FakeBackend`; ``extra`` options by backend name."""

    def make(name: str, path: str, device: str, **options: Any) -> FakeBackend:
        return FakeBackend(path, device=device, **{**options, **extra.get(name, {})})

    return make


def write_bytes(ctx: BuildContext, src: Path, dst: Path) -> None:
    dst.write_bytes(b"fake artefact from " + src.name.encode())


def failing_builder(ctx: BuildContext, src: Path, dst: Path) -> None:
    raise ExportError("the fake quantiser refused")


FAKE_BUILDERS = {"onnx-fp32": write_bytes, "onnx-int8": write_bytes, "onnx-int8-nncf": write_bytes}
