"""A small recording fake of the ``tensorrt`` module (CUDA memory: ``fake_cuda``), for testing OUR logic only.

It implements only the calls mmdet-deploy makes, with the shapes of the documented TensorRT 10.x /
11.x Python API (11.x lacks the weak-typing flags, ``platform_has_fast_*`` and calibration), records
every call in ``module.calls``, and "builds" an engine that is a JSON description of what it was asked
for. It proves nothing about TensorRT itself: a test passing against it shows that our code makes the
calls we intended, in the combinations we intended, and handles the answers we expect.
"""

from __future__ import annotations

import json
import types
from pathlib import Path
from typing import Any

import numpy as np


class _Sentinel:
    def __init__(self, kind: str, name: str, value: int = 0) -> None:
        self.kind, self.name, self.value = kind, name, value

    def __int__(self) -> int:
        return self.value

    def __repr__(self) -> str:
        return f"{self.kind}.{self.name}"


def _enum(kind: str, *names: str) -> types.SimpleNamespace:
    return types.SimpleNamespace(**{n: _Sentinel(kind, n, i) for i, n in enumerate(names)})


LAYER_OF_OP = {
    "LayerNormalization": ("NORMALIZATION", None),
    "GroupNormalization": ("NORMALIZATION", None),
    "Softmax": ("SOFTMAX", None),
    "ReduceMean": ("REDUCE", None),
    "ReduceSum": ("REDUCE", None),
    "MatMul": ("MATRIX_MULTIPLY", None),
    "Conv": ("CONVOLUTION", None),
    "Pow": ("ELEMENTWISE", "POW"),
    "Add": ("ELEMENTWISE", "SUM"),
    "Mul": ("ELEMENTWISE", "PROD"),
    "Exp": ("UNARY", "EXP"),
    "Sqrt": ("UNARY", "SQRT"),
    "Erf": ("UNARY", "ERF"),
    "Shape": ("SHAPE", None),
    "Cast": ("CAST", None),
}


def make_fake_tensorrt(
    version: str = "10.3.0",
    *,
    fast_fp16: bool = True,
    fast_int8: bool = True,
    parse_errors: tuple[tuple[str, str, int], ...] = (),
    build_fails: bool = False,
    device_memory: dict[int, np.ndarray] | None = None,
) -> types.ModuleType:
    """A fake ``tensorrt`` module of ``version`` (10.x: weak typing present; >= 11: strongly typed only)."""
    major = int(version.split(".")[0])
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    calls: list[tuple[Any, ...]] = []
    trt.calls = calls
    memory = device_memory if device_memory is not None else {}

    trt.float32, trt.float16, trt.int32, trt.int64 = (
        _Sentinel("DataType", n) for n in ("FLOAT", "HALF", "INT32", "INT64")
    )
    trt.nptype = lambda dt: {"FLOAT": np.float32, "HALF": np.float16, "INT32": np.int32, "INT64": np.int64}[dt.name]
    trt.LayerType = _enum("LayerType", *{v[0] for v in LAYER_OF_OP.values()}, "GATHER", "OTHER")
    trt.UnaryOperation = _enum("UnaryOperation", "EXP", "LOG", "SQRT", "RECIP", "ERF", "ABS")
    trt.ElementWiseOperation = _enum("ElementWiseOperation", "SUM", "PROD", "POW", "DIV", "SUB")
    trt.TensorIOMode = _enum("TensorIOMode", "NONE", "INPUT", "OUTPUT")
    trt.MemoryPoolType = _enum("MemoryPoolType", "WORKSPACE")
    trt.NetworkDefinitionCreationFlag = types.SimpleNamespace(
        EXPLICIT_BATCH=_Sentinel("NetworkDefinitionCreationFlag", "EXPLICIT_BATCH", 0),
        STRONGLY_TYPED=_Sentinel("NetworkDefinitionCreationFlag", "STRONGLY_TYPED", 1),
    )
    flag_names = ["TF32", "REFIT", "SPARSE_WEIGHTS"]
    if major < 11:
        flag_names += ["FP16", "BF16", "INT8", "OBEY_PRECISION_CONSTRAINTS", "PREFER_PRECISION_CONSTRAINTS"]
    trt.BuilderFlag = _enum("BuilderFlag", *flag_names)

    class ILogger:
        Severity = _enum("Severity", "INTERNAL_ERROR", "ERROR", "WARNING", "INFO", "VERBOSE")

        def __init__(self) -> None:
            calls.append(("ILogger.__init__",))

    trt.ILogger = ILogger

    class Tensor:
        def __init__(self, name: str, shape: tuple[int, ...], dtype: Any) -> None:
            self.name, self.shape, self.dtype = name, shape, dtype

    class Layer:
        def __init__(self, name: str, ltype: Any, op: Any, out_dtype: Any, strongly_typed: bool) -> None:
            self.name, self.type, self._op, self._strong = name, ltype, op, strongly_typed
            self.num_outputs = 1
            self._outputs = [Tensor(f"{name}:0", (), out_dtype)]
            self._precision = None

        def get_output(self, j: int) -> Tensor:
            return self._outputs[j]

        @property
        def precision(self) -> Any:
            return self._precision

        @precision.setter
        def precision(self, value: Any) -> None:
            if self._strong:
                raise RuntimeError("setting layer precision is not allowed in a strongly typed network")
            calls.append(("layer.precision", self.name, value))
            self._precision = value

        def set_output_type(self, j: int, dtype: Any) -> None:
            if self._strong:
                raise RuntimeError("setting output types is not allowed in a strongly typed network")
            calls.append(("layer.set_output_type", self.name, j, dtype))

    class IUnaryLayer(Layer):
        @property
        def op(self) -> Any:
            return self._op

    class IElementWiseLayer(Layer):
        @property
        def op(self) -> Any:
            return self._op

    trt.IUnaryLayer, trt.IElementWiseLayer = IUnaryLayer, IElementWiseLayer

    class Network:
        def __init__(self, flags: int) -> None:
            self.flags = flags
            self.strongly_typed = bool(flags & 2) or major >= 11
            self.inputs: list[Tensor] = []
            self.outputs: list[str] = []
            self.layers: list[Layer] = []

        num_inputs = property(lambda self: len(self.inputs))
        num_layers = property(lambda self: len(self.layers))

        def get_input(self, i: int) -> Tensor:
            return self.inputs[i]

        def get_layer(self, i: int) -> Layer:
            return self.layers[i]

    class ParserError:
        def __init__(self, code: str, desc: str, node: int) -> None:
            self._code, self._desc, self._node = code, desc, node

        def code(self) -> str:
            return self._code

        def desc(self) -> str:
            return self._desc

        def node(self) -> int:
            return self._node

    class OnnxParser:
        def __init__(self, network: Network, logger: Any) -> None:
            self.network = network
            self.errors = [ParserError(*e) for e in parse_errors]

        num_errors = property(lambda self: len(self.errors))

        def get_error(self, i: int) -> ParserError:
            return self.errors[i]

        def parse_from_file(self, path: str) -> bool:
            calls.append(("parse_from_file", path))
            if self.errors:
                return False
            import onnx

            model = onnx.load(path)
            for vi in model.graph.input:
                dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in vi.type.tensor_type.shape.dim)
                self.network.inputs.append(Tensor(vi.name, dims, trt.float32))
            self.network.outputs = [o.name for o in model.graph.output]
            for i, node in enumerate(model.graph.node):
                ltype, op = LAYER_OF_OP.get(node.op_type, ("OTHER", None))
                op_value = (
                    getattr(trt.UnaryOperation if ltype == "UNARY" else trt.ElementWiseOperation, op) if op else None
                )
                out = trt.int64 if node.op_type == "Shape" else trt.float32
                layer = Layer(node.name or f"{node.op_type}_{i}", getattr(trt.LayerType, ltype), op_value, out,
                              self.network.strongly_typed)  # fmt: skip
                self.network.layers.append(layer)  # a plain ILayer, as TensorRT's get_layer returns
            return True

    trt.OnnxParser = OnnxParser

    class TimingCache:
        def __init__(self, data: bytes) -> None:
            self.data = bytes(data)

        def serialize(self) -> bytes:
            return f"FAKECACHE-{version}:".encode() + b"entries"

    class Profile:
        def __init__(self) -> None:
            self.shapes: dict[str, tuple[tuple[int, ...], ...]] = {}

        def set_shape(self, name: str, mn: Any, opt: Any, mx: Any) -> None:
            calls.append(("profile.set_shape", name, tuple(mn), tuple(opt), tuple(mx)))
            self.shapes[name] = (tuple(mn), tuple(opt), tuple(mx))

    class Config:
        def __init__(self) -> None:
            self.flags: set[str] = {"TF32"}  # TensorRT enables TF32 by default
            self.profiles: list[Profile] = []
            self.cache: TimingCache | None = None
            self._opt_level = 3

        def set_flag(self, flag: Any) -> None:
            calls.append(("config.set_flag", flag.name))
            self.flags.add(flag.name)

        def clear_flag(self, flag: Any) -> None:
            calls.append(("config.clear_flag", flag.name))
            self.flags.discard(flag.name)

        def set_memory_pool_limit(self, pool: Any, size: int) -> None:
            calls.append(("config.set_memory_pool_limit", pool.name, size))

        builder_optimization_level = property(
            lambda self: self._opt_level,
            lambda self, v: (calls.append(("config.builder_optimization_level", v)), setattr(self, "_opt_level", v)),
        )

        def add_optimization_profile(self, profile: Profile) -> int:
            self.profiles.append(profile)
            return len(self.profiles) - 1

        def create_timing_cache(self, data: bytes) -> TimingCache:
            calls.append(("config.create_timing_cache", bytes(data)))
            return TimingCache(data)

        def set_timing_cache(self, cache: TimingCache, ignore_mismatch: bool) -> bool:
            ok = not cache.data or cache.data.startswith(f"FAKECACHE-{version}:".encode())
            calls.append(("config.set_timing_cache", ok))
            if ok:
                self.cache = cache
            return ok

        def get_timing_cache(self) -> TimingCache | None:
            return self.cache

    if major < 11:

        def _set_calibrator(self: Config, value: Any) -> None:
            calls.append(("config.int8_calibrator", value))

        Config.int8_calibrator = property(lambda self: None, _set_calibrator)
        Config.set_calibration_profile = lambda self, p: calls.append(("config.set_calibration_profile", p))

    class Builder:
        def __init__(self, logger: Any) -> None:
            self.logger = logger
            calls.append(("Builder",))
            if major < 11:
                self.platform_has_fast_fp16 = fast_fp16
                self.platform_has_fast_int8 = fast_int8

        def create_network(self, flags: int = 0) -> Network:
            calls.append(("create_network", flags))
            return Network(flags)

        def create_builder_config(self) -> Config:
            return Config()

        def create_optimization_profile(self) -> Profile:
            return Profile()

        def build_serialized_network(self, network: Network, config: Config) -> bytes | None:
            calls.append(("build_serialized_network",))
            if build_fails:
                self.logger.log(ILogger.Severity.ERROR, "fake: no implementation for layer X")
                return None
            profile = config.profiles[0].shapes
            desc = {
                "inputs": {k: [list(s) for s in v] for k, v in profile.items()},
                "outputs": network.outputs,
                "flags": sorted(config.flags),
                "strongly_typed": network.strongly_typed,
            }
            return b"FAKE-ENGINE" + json.dumps(desc).encode()

    trt.Builder = Builder

    class Context:
        def __init__(self, engine: Engine) -> None:
            self.engine = engine
            self.shapes: dict[str, tuple[int, ...]] = {}
            self.addresses: dict[str, int] = {}

        def set_input_shape(self, name: str, shape: Any) -> bool:
            calls.append(("context.set_input_shape", name, tuple(shape)))
            mn, _, mx = self.engine.desc["inputs"][name]
            if not mn[0] <= shape[0] <= mx[0]:
                return False
            self.shapes[name] = tuple(shape)
            return True

        def get_tensor_shape(self, name: str) -> tuple[int, ...]:
            if name in self.shapes:
                return self.shapes[name]
            batch = next(iter(self.shapes.values()))[0]
            return (batch, 2) if name == "logits" else (batch,)

        def set_tensor_address(self, name: str, ptr: int) -> bool:
            self.addresses[name] = ptr
            return True

        def execute_async_v3(self, stream_handle: int) -> bool:
            calls.append(("context.execute_async_v3", stream_handle))
            ins = {}
            for name in self.engine.inputs:
                shape = self.shapes[name]
                ins[name] = memory[self.addresses[name]][: int(np.prod(shape))].reshape(shape)
            logits = fake_engine_logits(ins)
            batch = logits.shape[0]
            memory[self.addresses["logits"]][: logits.size] = logits.ravel()
            if "prob_fake" in self.addresses:
                e = np.exp(logits - logits.max(axis=1, keepdims=True))
                memory[self.addresses["prob_fake"]][:batch] = e[:, 1] / e.sum(axis=1)
            return True

    class Engine:
        def __init__(self, desc: dict[str, Any]) -> None:
            self.desc = desc
            self.inputs = list(desc["inputs"])
            self.names = self.inputs + list(desc["outputs"])

        num_io_tensors = property(lambda self: len(self.names))

        def get_tensor_name(self, i: int) -> str:
            return self.names[i]

        def get_tensor_mode(self, name: str) -> Any:
            return trt.TensorIOMode.INPUT if name in self.inputs else trt.TensorIOMode.OUTPUT

        def get_tensor_dtype(self, name: str) -> Any:
            return trt.float32

        def get_tensor_profile_shape(self, name: str, index: int) -> tuple[tuple[int, ...], ...]:
            return tuple(tuple(s) for s in self.desc["inputs"][name])

        def create_execution_context(self) -> Context:
            return Context(self)

    class Runtime:
        def __init__(self, logger: Any) -> None:
            self.logger = logger

        def deserialize_cuda_engine(self, data: bytes) -> Engine | None:
            data = bytes(data)
            if not data.startswith(b"FAKE-ENGINE"):
                self.logger.log(ILogger.Severity.ERROR, "fake: not an engine")
                return None
            return Engine(json.loads(data[len(b"FAKE-ENGINE") :]))

    trt.Runtime = Runtime
    return trt


def fake_engine_logits(inputs: dict[str, np.ndarray]) -> np.ndarray:
    """What the fake engine "computes": per clip, the mean of ``original`` and of ``recons``."""
    o, r = inputs["original"], inputs["recons"]
    axes = tuple(range(1, o.ndim))
    return np.stack([o.mean(axis=axes), r.mean(axis=axes)], axis=1).astype(np.float32)


def engine_description(engine: Path) -> dict[str, Any]:
    """The JSON a fake build wrote into ``engine`` (flags, typing, profile)."""
    return json.loads(Path(engine).read_bytes()[len(b"FAKE-ENGINE") :])
