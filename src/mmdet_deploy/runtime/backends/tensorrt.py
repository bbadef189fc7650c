"""TensorRT backend: runs a ``FILE.engine`` built by ``mmdet-export build`` (TensorRT 10.x / 11.x).

Lifecycle (Polygraphy-style): ``open`` reads the sidecar and refuses an engine built for another
TensorRT version or GPU (:class:`~mmdet_deploy.errors.EngineMismatchError`, with the rebuild command),
deserialises the engine, creates one execution context, allocates pinned host buffers and device
buffers once at the profile's maximum batch and binds their addresses; ``infer`` copies a batch in,
sets the input shapes, runs ``execute_async_v3`` on the stream (or replays a CUDA graph captured for
one fixed batch size) and copies the outputs back; batches larger than the engine's maximum are split.

Options (keyword arguments of the constructor / ``create_backend``):

* ``memory``: ``"cuda-bindings"`` (default) or ``"torch"`` (PyTorch CUDA tensors and stream).
* ``cuda_graph``: capture and replay a CUDA graph for batches of size ``graph_batch``.
* ``graph_batch``: the batch size the graph is captured for (default: the engine's maximum batch).
* ``strict_device``: refuse an engine built on another GPU model of the same compute capability
  (default True; False only warns).
* ``verify_engine``: check the engine file's sha256 against the sidecar (default True).

Neither ``tensorrt`` nor CUDA is imported until :meth:`open`. Unverified on hardware here (no GPU and no
TensorRT on the development machines); the binding logic is tested against fakes.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import numpy as np

from mmdet_deploy.contract import LOGITS
from mmdet_deploy.errors import BackendError, ContractError, UsageError
from mmdet_deploy.runtime.backends.base import Backend
from mmdet_deploy.tensorrt import compat, cuda_memory, gpu
from mmdet_deploy.tensorrt.sidecar import EngineSidecar, check_compatible, read_sidecar

log = logging.getLogger(__name__)

DEFAULT_OPTIONS: dict[str, Any] = {
    "memory": "cuda-bindings",
    "cuda_graph": False,
    "graph_batch": None,
    "strict_device": True,
    "verify_engine": True,
}


class TensorRTBackend(Backend):
    """Run a serialized TensorRT engine on one CUDA device (``device="cuda"`` or ``"cuda:N"``)."""

    name = "tensorrt"
    default_options = DEFAULT_OPTIONS

    def __init__(self, model_path: str | Path, device: str = "cuda", **options: Any) -> None:
        super().__init__(model_path, device=device, **options)
        if str(device).lower() == "cpu":
            raise UsageError("the tensorrt backend runs on a CUDA GPU; pass --device cuda (or cuda:N)")
        if self.options["memory"] not in cuda_memory.MEMORY_KINDS:
            raise UsageError(f"memory must be one of {', '.join(cuda_memory.MEMORY_KINDS)}")
        self.sidecar: EngineSidecar | None = None
        self._max_batch: int | None = None
        self._reset()

    def _reset(self) -> None:
        self._trt: Any = None
        self._runtime: Any = None
        self._engine: Any = None
        self._context: Any = None
        self._memory: cuda_memory.CudaMemory | None = None
        self._buffers: dict[str, cuda_memory.HostDeviceBuffer] = {}
        self._inputs: list[str] = []
        self._outputs: list[str] = []
        self._dtypes: dict[str, np.dtype] = {}
        self._current_batch: int | None = None
        self._graph: Any = None
        self._graph_failed = False
        self._gpu: gpu.GpuInfo | None = None

    # -- open --------------------------------------------------------------------------------------
    def _open(self) -> None:
        trt = compat.load_tensorrt()
        index = gpu.parse_device(self.device)
        sidecar = read_sidecar(self.model_path)
        memory = cuda_memory.make_memory(self.options["memory"], index)
        try:
            self._gpu = memory.gpu_info()
            warnings = check_compatible(
                sidecar, self.model_path, tensorrt_version=str(trt.__version__), gpu_name=self._gpu.name,
                compute_capability=self._gpu.capability, strict_device=bool(self.options["strict_device"]),
            )  # fmt: skip
            for w in warnings:
                log.warning("%s: built for %s; running anyway (strict_device=False)", self.model_path, w)
            self.contract = sidecar.model_contract(str(self.model_path))
            data = self.model_path.read_bytes()
            if self.options["verify_engine"] and hashlib.sha256(data).hexdigest() != sidecar.engine_sha256:
                raise ContractError(
                    f"{self.model_path} does not match its sidecar (sha256 differs): the engine or the sidecar was "
                    "replaced; rebuild both with `mmdet-export build`"
                )
            self._trt, self._memory, self.sidecar = trt, memory, sidecar
            self._load_engine(data)
            self._allocate()
        except BaseException:
            memory.close()
            self._reset()
            raise

    def _load_engine(self, data: bytes) -> None:
        trt = self._trt
        logger = compat.make_logger(trt)
        self._runtime = trt.Runtime(logger)
        self._engine = self._runtime.deserialize_cuda_engine(data)
        if self._engine is None:
            details = "; ".join(logger.errors[-3:]) or "no details"
            raise BackendError(f"TensorRT could not deserialize {self.model_path} ({details}); rebuild the engine")
        self._context = self._engine.create_execution_context()
        if self._context is None:
            raise BackendError(f"TensorRT could not create an execution context for {self.model_path}")
        engine = self._engine
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self._inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self._outputs = [n for n in names if n not in self._inputs]
        assert self.contract is not None
        if sorted(self._inputs) != sorted(self.contract.input_names) or LOGITS not in self._outputs:
            raise ContractError(
                f"{self.model_path}: engine tensors (inputs {self._inputs}, outputs {self._outputs}) do not match "
                f"the contract (inputs {list(self.contract.input_names)}, output {LOGITS!r})"
            )
        self._dtypes = {n: np.dtype(trt.nptype(engine.get_tensor_dtype(n))) for n in names}
        self._max_batch = int(engine.get_tensor_profile_shape(self._inputs[0], 0)[2][0])

    def _allocate(self) -> None:
        """Pinned host + device buffers at the maximum batch, allocated once, addresses bound once."""
        assert self.contract is not None and self._memory is not None and self._max_batch is not None
        specs = {s.name: s for s in self.contract.inputs}
        for name in self._inputs:
            self._context.set_input_shape(name, specs[name].concrete(self._max_batch))
        self._current_batch = self._max_batch
        for name in self._inputs + self._outputs:
            shape = tuple(int(d) for d in self._context.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise BackendError(f"{self.model_path}: output {name} has an unresolved shape {shape}")
            buf = self._memory.alloc(int(np.prod(shape)), self._dtypes[name])
            self._buffers[name] = buf
            if not self._context.set_tensor_address(name, buf.device_ptr):
                raise BackendError(f"TensorRT refused the device address of {name}")

    # -- infer -------------------------------------------------------------------------------------
    @property
    def max_batch(self) -> int | None:
        if self._max_batch is None:
            try:
                self._max_batch = int(read_sidecar(self.model_path).profile["max"])
            except (ContractError, KeyError, ValueError):
                return None
        return self._max_batch

    def _infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        assert self._max_batch is not None
        total = next(iter(inputs.values())).shape[0]
        if total == 0:
            raise BackendError("tensorrt: empty batch")
        parts = []
        for start in range(0, total, self._max_batch):
            parts.append(self._run({k: v[start : start + self._max_batch] for k, v in inputs.items()}))
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def _run(self, chunk: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        memory, context = self._memory, self._context
        assert memory is not None and self.contract is not None
        batch = next(iter(chunk.values())).shape[0]
        specs = {s.name: s for s in self.contract.inputs}
        for name in self._inputs:
            array = chunk[name]
            expected = specs[name].concrete(batch)
            if tuple(array.shape) != expected:
                raise BackendError(f"tensorrt: input {name} has shape {array.shape}, expected {expected}")
            buf = self._buffers[name]
            np.copyto(buf.host[: array.size].reshape(array.shape), array, casting="same_kind")
            memory.to_device(buf, array.size)
        if batch != self._current_batch:
            for name in self._inputs:
                if not context.set_input_shape(name, specs[name].concrete(batch)):
                    raise BackendError(f"tensorrt: batch {batch} is outside the engine's profile")
            self._current_batch = batch
            if self._graph is not None:  # a graph is only valid for the shapes it was captured with
                self._graph.close()
                self._graph = None
        self._execute(batch)
        shapes = {n: tuple(int(d) for d in context.get_tensor_shape(n)) for n in self._outputs}
        for name in self._outputs:
            memory.to_host(self._buffers[name], int(np.prod(shapes[name])))
        memory.synchronize()
        return {
            n: self._buffers[n].host[: int(np.prod(shapes[n]))].reshape(shapes[n]).astype(np.float32, copy=True)
            for n in self._outputs
        }

    def _execute(self, batch: int) -> None:
        assert self._memory is not None
        stream = self._memory.stream_handle
        use_graph = bool(self.options["cuda_graph"]) and not self._graph_failed
        graph_batch = self.options["graph_batch"] or self._max_batch
        if use_graph and batch == graph_batch:
            if self._graph is None:
                self._capture(stream)
            if self._graph is not None:
                self._graph.launch(stream)
                return
        if not self._context.execute_async_v3(stream):
            raise BackendError("tensorrt: execute_async_v3 failed (see the TensorRT log)")

    def _capture(self, stream: int) -> None:
        """Capture one graph of ``execute_async_v3`` (after one plain run that flushes deferred work)."""
        if not self._context.execute_async_v3(stream):
            raise BackendError("tensorrt: execute_async_v3 failed (see the TensorRT log)")
        graph = cuda_memory.CudaGraph()
        try:
            graph.capture(stream, lambda: self._context.execute_async_v3(stream))
        except BackendError as exc:
            graph.close()
            self._graph_failed = True
            log.warning("CUDA graph capture failed (%s); running without a graph", exc)
            return
        self._graph = graph

    # -- close / describe --------------------------------------------------------------------------
    def _close(self) -> None:
        if self._graph is not None:
            self._graph.close()
        memory = self._memory
        self._context = None  # context before engine before runtime (TensorRT's lifetime rules)
        self._engine = None
        self._runtime = None
        if memory is not None:
            memory.close()
        self._reset()

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        side = self.sidecar
        info.update(
            {
                "memory": self.options["memory"],
                "cuda_graph": bool(self.options["cuda_graph"]),
                "max_batch": self._max_batch,
                "precision": side.precision if side else None,
                "tensorrt": side.tensorrt_version if side else None,
                "gpu": self._gpu.name if self._gpu else None,
            }
        )
        return info
