"""One inference interface for every engine (Polygraphy-style runner lifecycle).

A backend is opened, fed dicts of named float32 arrays, and closed::

    with create_backend("onnxruntime", "model.onnx") as backend:
        outputs = backend.infer({"original": clip, "recons": clip})
        outputs["logits"], outputs["prob_fake"]

Every backend exposes the artefact's :class:`~mmdet_deploy.contract.ModelContract` and returns at least
``logits`` and ``prob_fake``. Implementations live one per file and import their heavy library lazily.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mmdet_deploy import parity
from mmdet_deploy.contract import LOGITS, PROB_FAKE, ModelContract
from mmdet_deploy.errors import BackendError, ContractError, UsageError


def softmax_fake(logits: np.ndarray) -> np.ndarray:
    """Probability of class 1 (fake) from (B, 2) logits as float32 (computed in float64 by :mod:`parity`)."""
    return parity.softmax_fake(logits).astype(np.float32)


class Backend(ABC):
    """Base class of inference backends. Subclasses implement :meth:`_open`, :meth:`_infer`, :meth:`_close`."""

    #: Registry name (``onnxruntime``, ``tensorrt``, ``torch``, ``openvino``).
    name: str = ""
    #: The options a backend accepts, with their defaults; None accepts any option without defaults.
    default_options: Mapping[str, Any] | None = None

    def __init__(self, model_path: str | Path, device: str = "cpu", **options: Any) -> None:
        if self.default_options is not None:
            unknown = sorted(set(options) - set(self.default_options))
            if unknown:
                raise UsageError(
                    f"{self.name} backend: unknown options {unknown}; known: {sorted(self.default_options)}"
                )
            options = {**self.default_options, **options}
        self.model_path = Path(model_path)
        self.device = device
        self.options = dict(options)
        self.contract: ModelContract | None = None
        self._is_open = False

    # -- lifecycle -------------------------------------------------------------------------------
    def open(self) -> Backend:
        if not self._is_open:
            self._open()
            self._is_open = True
        return self

    def close(self) -> None:
        if self._is_open:
            self._close()
            self._is_open = False

    def __enter__(self) -> Backend:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def infer(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one batch. Inputs are float32 arrays keyed by the contract's input names."""
        if not self._is_open:
            self.open()
        assert self.contract is not None  # set by _open (a bug otherwise, not user input)
        missing = [n for n in self.contract.input_names if n not in inputs]
        if missing:
            raise BackendError(f"{self.name}: missing inputs {missing}; expected {list(self.contract.input_names)}")
        batch = {n: np.ascontiguousarray(inputs[n], dtype=np.float32) for n in self.contract.input_names}
        sizes = {a.shape[0] for a in batch.values()}
        if len(sizes) != 1:
            raise BackendError(f"{self.name}: inputs disagree on the batch size: {sorted(sizes)}")
        out = self._infer(batch)
        if PROB_FAKE not in out:
            out[PROB_FAKE] = softmax_fake(out[LOGITS])
        return out

    # -- informational ---------------------------------------------------------------------------
    @property
    def max_batch(self) -> int | None:
        """Largest batch the artefact accepts (None: unlimited)."""
        return None

    def describe(self) -> dict[str, Any]:
        """Backend facts for logs and benchmark reports (providers, precision, device...)."""
        return {"backend": self.name, "device": self.device, "model": str(self.model_path)}

    @abstractmethod
    def _open(self) -> None: ...

    @abstractmethod
    def _infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def _close(self) -> None:  # noqa: B027 - optional hook
        """Release resources (optional)."""


#: Backend name -> "module:Class", imported only when that backend is asked for.
BACKENDS: dict[str, str] = {
    "onnxruntime": "mmdet_deploy.runtime.backends.onnxruntime:OnnxRuntimeBackend",
    "tensorrt": "mmdet_deploy.runtime.backends.tensorrt:TensorRTBackend",
    "torch": "mmdet_deploy.runtime.backends.torch:TorchBackend",
    "openvino": "mmdet_deploy.runtime.backends.openvino:OpenVinoBackend",
}


def check_signature(source: str | Path, inputs: Mapping[str, Sequence[Any]], outputs: Sequence[str],
                    contract: ModelContract) -> int | None:
    """A loaded graph must have exactly the contract's inputs, their shapes past the batch axis, and ``logits``.

    ``inputs`` maps each input name to its shape as the engine reports it (an ``int`` per static dimension);
    returns the smallest static batch size of the inputs, None when every batch axis is dynamic.
    """
    expected = {spec.name: spec for spec in contract.inputs}
    if set(inputs) != set(expected):
        raise ContractError(f"{source}: inputs {sorted(inputs)} do not match the contract's {sorted(expected)}")
    static = set()
    for name, spec in expected.items():
        shape = list(inputs[name])
        if len(shape) != len(spec.shape) or shape[1:] != list(spec.shape[1:]):
            raise ContractError(f"{source}: input '{name}' has shape {shape}, the contract says {spec.shape}")
        if isinstance(shape[0], int):
            static.add(shape[0])
    if LOGITS not in outputs:
        raise ContractError(f"{source}: no '{LOGITS}' output (outputs: {list(outputs)})")
    return min(static) if static else None


def check_backend_name(name: str) -> None:
    """Raise :class:`UsageError` unless ``name`` is a registered backend (imports nothing)."""
    if name not in BACKENDS:
        raise UsageError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")


def backend_class(name: str) -> type[Backend]:
    check_backend_name(name)
    module_name, _, cls_name = BACKENDS[name].partition(":")
    return getattr(importlib.import_module(module_name), cls_name)


def create_backend(name: str, model_path: str | Path, device: str = "cpu", **options: Any) -> Backend:
    """Instantiate a backend by registry name (not yet opened)."""
    return backend_class(name)(model_path, device=device, **options)
