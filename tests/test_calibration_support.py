"""Helpers shared by the calibration / quantisation / threshold tests (this module holds no tests).

* :func:`build_toy_vit`: a small hand-built ONNX graph with the op types of the real model (Conv with
  GroupNorm and a residual Add, two convs reading one tensor (a bottleneck's conv and its downsample), a
  depthwise blur feeding a Sub, LayerNorm, linear MatMul + bias Add,
  attention MatMuls and Softmax, GELU, a Gemm head, a ``features`` output) and the contract embedded.
* :func:`synthetic_set`: a calibration set of smooth random clips written through the package's writer,
  optionally with the calibration split scaled (a deliberately wrong range).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mmdet_deploy.calibration.dataset import CalibrationClip, CalibrationSet, assign_holdout, write_calibration_set
from mmdet_deploy.contract import METADATA_KEY, ModelContract

TOY_FRAMES = 2
TOY_SIZE = 16


def toy_contract(**changes: object) -> ModelContract:
    return ModelContract(config="tiny", frames=TOY_FRAMES, image_size=TOY_SIZE, demo_weights=True).replace(**changes)


def build_toy_vit(path: Path, *, features: bool = True, dim: int = 32, seed: int = 0,
                  contract: ModelContract | None = None) -> Path:
    """Write the toy model (opset 21, inputs (B, 2, 3, 16, 16)) to ``path`` and return it."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    inits: list = []
    nodes: list = []

    def const(name: str, value: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def weight(name: str, *shape: int, scale: float | None = None) -> str:
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else shape[0]
        s = scale if scale is not None else 1.0 / np.sqrt(fan_in)
        return const(name, (rng.standard_normal(shape) * s).astype(np.float32))

    def node(op: str, inputs: list[str], outputs: list[str], **attrs: object) -> None:
        nodes.append(helper.make_node(op, inputs, outputs, name=f"{op}_{outputs[0]}", **attrs))

    size, patch, frames = TOY_SIZE, 4, TOY_FRAMES
    n = (size // patch) ** 2
    const("img_shape", np.array([-1, 3, size, size], np.int64))
    const("tok_shape", np.array([-1, frames * n, dim], np.int64))
    ones, zeros = const("ones", np.ones(dim, np.float32)), const("zeros", np.zeros(dim, np.float32))
    blur = np.outer([0.25, 0.5, 0.25], [0.25, 0.5, 0.25]).astype(np.float32)
    const("blur", np.tile(blur, (dim, 1, 1, 1)))
    for src in ("original", "recons"):
        node("Reshape", [src, "img_shape"], [f"{src}_img"])
        node("Conv", [f"{src}_img", weight(f"{src}_w0", dim, 3, patch, patch), weight(f"{src}_b0", dim, scale=0.1)],
             [f"{src}_c0"], strides=[patch, patch])
        node("GroupNormalization", [f"{src}_c0", ones, zeros], [f"{src}_g0"], num_groups=4)
        node("Relu", [f"{src}_g0"], [f"{src}_r0"])
        # bottleneck-like: conv -> GN -> + shortcut (the shortcut tensor also feeds the conv)
        node("Conv", [f"{src}_r0", weight(f"{src}_w1", dim, dim, 3, 3)], [f"{src}_c1"], pads=[1, 1, 1, 1])
        node("GroupNormalization", [f"{src}_c1", ones, zeros], [f"{src}_g1"], num_groups=4)
        node("Add", [f"{src}_g1", f"{src}_r0"], [f"{src}_res0"])
        # a 1x1 "downsample" conv reading the same tensor as the 3x3 conv (only the larger one is quantised)
        node("Conv", [f"{src}_r0", weight(f"{src}_wd", dim, dim, 1, 1)], [f"{src}_ds"])
        node("GroupNormalization", [f"{src}_ds", ones, zeros], [f"{src}_gds"], num_groups=4)
        node("Add", [f"{src}_res0", f"{src}_gds"], [f"{src}_res"])
        node("Relu", [f"{src}_res"], [f"{src}_r1"])
        # high-pass residual: x - depthwise_blur(x), the pattern of the frequency branch
        node("Conv", [f"{src}_r1", "blur"], [f"{src}_blur"], group=dim, pads=[1, 1, 1, 1])
        node("Sub", [f"{src}_r1", f"{src}_blur"], [f"{src}_hp"])
        node("Reshape", [f"{src}_hp", const(f"{src}_flat_shape", np.array([-1, dim, n], np.int64))], [f"{src}_flat"])
        node("Transpose", [f"{src}_flat"], [f"{src}_tok"], perm=[0, 2, 1])
    node("Add", ["original_tok", "recons_tok"], ["tok"])
    node("Reshape", ["tok", "tok_shape"], ["x0"])
    x = "x0"
    for b in range(2):
        p = f"b{b}_"
        node("LayerNormalization", [x, ones, zeros], [p + "ln1"], axis=-1, epsilon=1e-6)
        node("MatMul", [p + "ln1", weight(p + "wqkv", dim, 3 * dim)], [p + "qkv0"])
        node("Add", [p + "qkv0", weight(p + "bqkv", 3 * dim, scale=0.1)], [p + "qkv"])
        node("Split", [p + "qkv", const(p + "split", np.array([dim, dim, dim], np.int64))],
             [p + "q", p + "k", p + "v"], axis=-1)
        node("Transpose", [p + "k"], [p + "kt"], perm=[0, 2, 1])
        node("MatMul", [p + "q", p + "kt"], [p + "s0"])
        node("Mul", [p + "s0", const(p + "scale", np.array(1 / np.sqrt(dim), np.float32))], [p + "s"])
        node("Softmax", [p + "s"], [p + "a"], axis=-1)
        node("MatMul", [p + "a", p + "v"], [p + "o"])
        node("MatMul", [p + "o", weight(p + "wproj", dim, dim)], [p + "proj"])
        node("Add", [x, p + "proj"], [p + "x1"])
        node("LayerNormalization", [p + "x1", ones, zeros], [p + "ln2"], axis=-1, epsilon=1e-6)
        node("MatMul", [p + "ln2", weight(p + "wfc1", dim, 4 * dim)], [p + "h0"])
        node("Gelu", [p + "h0"], [p + "h"])
        node("MatMul", [p + "h", weight(p + "wfc2", 4 * dim, dim)], [p + "m"])
        node("Add", [p + "x1", p + "m"], [p + "x2"])
        x = p + "x2"
    node("LayerNormalization", [x, ones, zeros], ["xn"], axis=-1, epsilon=1e-6)
    node("ReduceMean", ["xn", const("axis1", np.array([1], np.int64))], ["features"], keepdims=0)
    node("Gemm", ["features", weight("head_w", 2, dim), weight("head_b", 2, scale=0.1)], ["logits"], transB=1)
    node("Softmax", ["logits"], ["probs"], axis=-1)
    node("Gather", ["probs", const("fake", np.array(1, np.int64))], ["prob_fake"], axis=1)
    clip = ["batch", frames, 3, size, size]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 2]),
               helper.make_tensor_value_info("prob_fake", TensorProto.FLOAT, ["batch"])]
    if features:
        outputs.append(helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", dim]))
    graph = helper.make_graph(
        nodes, "toy_vit", [helper.make_tensor_value_info(s, TensorProto.FLOAT, clip) for s in ("original", "recons")],
        outputs, inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], producer_name="tests")
    model.ir_version = 10
    helper.set_model_props(model, {METADATA_KEY: (contract or toy_contract()).to_json()})
    onnx.checker.check_model(model, full_check=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def smooth_clip(rng: np.random.Generator, frames: int, size: int, cells: int = 4) -> np.ndarray:
    """A normalised (T, 3, S, S) clip of blocky random colours (image-like statistics, not white noise)."""
    base = rng.random((frames, 3, cells, cells)).astype(np.float32)
    img = np.repeat(np.repeat(base, size // cells, axis=2), size // cells, axis=3)
    return ((img - 0.45) / 0.225).astype(np.float32)


def synthetic_set(out: Path, contract: ModelContract, *, sources: int = 16, seed: int = 0, holdout: float = 0.25,
                  calibration_scale: float = 1.0, min_clips: int = 16) -> CalibrationSet:
    """A calibration set of one smooth random clip per source file (``f00.mp4`` ...).

    ``calibration_scale`` multiplies the clips that land in the calibration split (the split is computed
    with the writer's own rule first), so a value like 1e-4 gives ranges far too small for real inputs.
    """
    rng = np.random.default_rng(seed)
    names = [f"f{i:02d}.mp4" for i in range(sources)]
    splits, _ = assign_holdout(names, holdout, seed)
    clips = []
    for name, split in zip(names, splits, strict=True):
        x = smooth_clip(rng, contract.frames, contract.image_size)
        if split == "calibration":
            x = (x * calibration_scale).astype(np.float32)
        clips.append(CalibrationClip(name, 0, tuple(range(contract.frames)), x, x))
    return write_calibration_set(out, clips, contract=contract, seed=seed, holdout=holdout, min_clips=min_clips,
                                 provenance={"data": "synthetic (tests)"})
