"""PyTorch reference backend: the checkpoint itself, for parity checks and benchmarks.

``model_path`` is a checkpoint (``.pth``/``.safetensors``) loaded with
:func:`mmdet_deploy.model.load_model`. Options (keyword arguments):

* ``head`` (``simplified``), ``config`` (``base``): which model to build.
* ``precision``: ``fp32`` (default), ``fp16`` or ``bf16``: autocast on CUDA (attention runs through
  ``scaled_dot_product_attention``, which picks the fused flash / memory-efficient kernels); on CPU
  only ``fp32`` and ``bf16`` (CPU autocast) are offered.
* ``cuda_graphs``: capture one CUDA graph per batch size and replay it (CUDA only).
* ``sdpa``: which scaled-dot-product-attention kernels may run: ``auto`` (PyTorch chooses), ``flash``,
  ``efficient`` (memory-efficient) or ``math``; forcing one that cannot run these shapes / dtypes is a
  :class:`~mmdet_deploy.errors.BackendError` at the first batch.
* ``compile``: ``torch.compile`` the model (with ``cuda_graphs`` it uses ``mode="reduce-overhead"``,
  torch's own graph capture, instead of the manual capture).
* ``tf32``: allow TF32 matmuls/convolutions on CUDA (default False, for strict fp32 parity); the
  process-wide flags are restored on close.
* ``threshold``: decision threshold recorded in the contract (default 0.5).

The backend builds its own :class:`~mmdet_deploy.contract.ModelContract` (head, config, precision,
checkpoint sha256, demo flag). ``bf16`` is not a contract precision: the contract says ``fp32`` with
``extra["autocast"] = "bf16"``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mmdet_deploy.contract import CONFIGS, HEADS, LOGITS, ModelContract
from mmdet_deploy.deps import require
from mmdet_deploy.errors import BackendError, UsageError
from mmdet_deploy.runtime.backends.base import Backend

TORCH_PRECISIONS = ("fp32", "fp16", "bf16")
DEFAULT_OPTIONS: dict[str, Any] = {
    "head": "simplified",
    "config": "base",
    "precision": "fp32",
    "cuda_graphs": False,
    "compile": False,
    "tf32": False,
    "threshold": 0.5,
    "sdpa": "auto",
}
#: ``sdpa`` option -> name of the torch.nn.attention.SDPBackend member (None: no restriction).
SDPA_KERNELS = {"auto": None, "flash": "FLASH_ATTENTION", "efficient": "EFFICIENT_ATTENTION", "math": "MATH"}
#: Warm-up iterations on a side stream before a CUDA graph capture (PyTorch's documented recipe).
GRAPH_WARMUP = 3


class TorchBackend(Backend):
    """Run the PyTorch MM-Det model on ``cpu`` or ``cuda[:N]``."""

    name = "torch"
    default_options = DEFAULT_OPTIONS

    def __init__(self, model_path: str | Path, device: str = "cpu", **options: Any) -> None:
        super().__init__(model_path, device=device, **options)
        opts = self.options
        if opts["head"] not in HEADS:
            raise UsageError(f"unknown head {opts['head']!r}; choose one of {', '.join(HEADS)}")
        if opts["config"] not in CONFIGS:
            raise UsageError(f"unknown config {opts['config']!r}; choose one of {', '.join(CONFIGS)}")
        if opts["precision"] not in TORCH_PRECISIONS:
            raise UsageError(f"torch precision must be one of {', '.join(TORCH_PRECISIONS)}")
        self._cuda = str(device).lower().startswith("cuda")
        if not self._cuda and str(device).lower() != "cpu":
            raise UsageError(f"torch device must be 'cpu', 'cuda' or 'cuda:N' (got {device!r})")
        if not self._cuda and opts["precision"] == "fp16":
            raise UsageError("fp16 autocast needs a CUDA device; on CPU use --precision fp32 or bf16")
        if not self._cuda and opts["cuda_graphs"]:
            raise UsageError("cuda_graphs needs a CUDA device")
        if opts["sdpa"] not in SDPA_KERNELS:
            raise UsageError(f"sdpa must be one of {', '.join(SDPA_KERNELS)} (got {opts['sdpa']!r})")
        self._model: Any = None
        self._torch: Any = None
        self._graphs: dict[int, tuple[Any, list[Any], Any]] = {}
        self._saved_tf32: tuple[bool, bool] | None = None

    # -- lifecycle ---------------------------------------------------------------------------------
    def _open(self) -> None:
        torch = require("torch", "the torch backend")
        from mmdet_deploy.model import load_model

        if not self.model_path.is_file():
            raise UsageError(f"checkpoint not found: {self.model_path}")
        if self._cuda and not torch.cuda.is_available():
            raise BackendError("device cuda requested but PyTorch sees no CUDA GPU (CPU-only build or no driver)")
        opts = self.options
        model = load_model(self.model_path, head=opts["head"], config=opts["config"])
        self._torch = torch
        self._device = torch.device(self.device)
        if self._cuda:
            self._saved_tf32 = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
            torch.backends.cuda.matmul.allow_tf32 = bool(opts["tf32"])
            torch.backends.cudnn.allow_tf32 = bool(opts["tf32"])
        model = model.to(self._device).eval()
        if opts["compile"]:
            mode = "reduce-overhead" if opts["cuda_graphs"] else None
            model = torch.compile(model, mode=mode)
        self._model = model
        self.contract = self._make_contract(model)

    def reconfigure(self, **options: Any) -> None:
        """Change ``precision``, ``sdpa`` or ``cuda_graphs`` of an open backend without reloading the weights
        (benchmarks compare them on one loaded model); captured graphs are dropped."""
        allowed = {"precision", "sdpa", "cuda_graphs"}
        unknown = sorted(set(options) - allowed)
        if unknown:
            raise UsageError(f"torch backend: reconfigure accepts {sorted(allowed)}, not {unknown}")
        check = type(self)(self.model_path, device=self.device, **{**self.options, **options})  # validates only
        self.options = check.options
        self._graphs.clear()
        if self._model is not None:
            self.contract = self._make_contract(self._model)

    def _make_contract(self, model: Any) -> ModelContract:
        info = getattr(model, "checkpoint_info", None) or getattr(
            getattr(model, "_orig_mod", None), "checkpoint_info", None
        )
        opts = self.options
        precision = "fp16" if opts["precision"] == "fp16" else "fp32"
        extra: dict[str, Any] = {"device": str(self.device)}
        if opts["precision"] == "bf16":
            extra["autocast"] = "bf16"
        return ModelContract(
            head=opts["head"],
            config=opts["config"],
            precision=precision,
            threshold=float(opts["threshold"]),
            checkpoint_sha256=getattr(info, "sha256", "") or "",
            demo_weights=bool(getattr(info, "demo", False)),
            exporter="torch",
            versions={"torch": str(self._torch.__version__)},
            extra=extra,
        )

    def _close(self) -> None:
        torch = self._torch
        self._graphs.clear()
        self._model = None
        if torch is not None and self._saved_tf32 is not None:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = self._saved_tf32
            self._saved_tf32 = None
        if torch is not None and self._cuda:
            torch.cuda.empty_cache()

    # -- inference ---------------------------------------------------------------------------------
    def _autocast(self, cache: bool = True) -> Any:
        """Autocast for the configured precision (a no-op for fp32); ``cache=False`` inside graph capture."""
        torch = self._torch
        precision = self.options["precision"]
        dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision)
        return torch.autocast(
            device_type=self._device.type, dtype=dtype, enabled=dtype is not None, cache_enabled=cache
        )

    def _attention(self) -> Any:
        """The SDPA kernel restriction of the ``sdpa`` option (a no-op context for ``auto``)."""
        import contextlib

        member = SDPA_KERNELS[self.options["sdpa"]]
        if member is None:
            return contextlib.nullcontext()
        from torch.nn.attention import SDPBackend, sdpa_kernel

        return sdpa_kernel([getattr(SDPBackend, member)])

    def _infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self._torch
        assert self.contract is not None
        arrays = [inputs[n] for n in self.contract.input_names]
        with torch.inference_mode():
            # recons is often the very same array as original (the seed's identity reconstruction): copy it
            # to the device once (a batch of 32 clips is 385 MB per input)
            copies: dict[int, Any] = {}
            tensors = [copies.setdefault(id(a), torch.from_numpy(a).to(self._device)) for a in arrays]
            logits = self.forward_tensors(*tensors)
            out = logits.float().cpu().numpy()
        return {LOGITS: out}

    def forward_tensors(self, *tensors: Any) -> Any:
        """Logits (B, 2) on the device for input tensors already on it, with this backend's precision, SDPA
        kernels and CUDA graphs: the model-only part of :meth:`infer` (benchmarks time it without the host
        copies). Call inside ``torch.inference_mode()``; the result of a graph replay is a fresh tensor."""
        try:
            if self._cuda and self.options["cuda_graphs"] and not self.options["compile"]:
                return self._replay(list(tensors))
            with self._autocast(), self._attention():
                return self._model(*tensors)
        except RuntimeError as exc:
            if self.options["sdpa"] != "auto" and "kernel" in str(exc).lower():
                raise BackendError(f"torch: sdpa={self.options['sdpa']} cannot run here: {first_line(exc)}") from exc
            raise

    def _replay(self, tensors: list[Any]) -> Any:
        """Copy into the static inputs of this batch size's graph (captured on first use) and replay."""
        batch = int(tensors[0].shape[0])
        if batch not in self._graphs:
            self._graphs[batch] = self._capture(tensors)
        graph, static_in, static_out = self._graphs[batch]
        for dst, src in zip(static_in, tensors, strict=True):
            dst.copy_(src, non_blocking=True)
        graph.replay()
        return static_out.clone()

    def _capture(self, tensors: list[Any]) -> tuple[Any, list[Any], Any]:
        torch = self._torch
        static_in = [t.to(self._device).clone() for t in tensors]
        side = torch.cuda.Stream(device=self._device)
        side.wait_stream(torch.cuda.current_stream(self._device))
        # autocast's weight-cast cache must be off during capture (PyTorch CUDA graphs notes)
        with torch.cuda.stream(side), self._autocast(cache=False), self._attention():
            for _ in range(GRAPH_WARMUP):
                self._model(*static_in)
        torch.cuda.current_stream(self._device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        # one private memory pool per graph
        with torch.cuda.graph(graph), self._autocast(cache=False), self._attention():
            static_out = self._model(*static_in)
        return graph, static_in, static_out

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        opts = self.options
        info.update({k: opts[k] for k in ("head", "config", "precision", "cuda_graphs", "compile", "sdpa")})
        if self._torch is not None:
            info["torch"] = str(self._torch.__version__)
            if self._cuda:
                info["gpu"] = self._torch.cuda.get_device_name(self._device)
        return info


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (PyTorch's kernel errors run to many lines of warnings)."""
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__
