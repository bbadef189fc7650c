"""FLOPs per clip, counted analytically from the configuration, and the machine's measured peak.

Convention (the one of ``torch.utils.flop_counter``): one multiply-accumulate = 2 FLOPs; only
convolutions, linear layers and the two attention matrix products are counted; normalisation,
activations, softmax, pooling, padding and additions are not. With this convention the base model
costs about 1.05e12 FLOPs per clip of 10 frames (model-spec section 1: 105 GFLOP per CNN branch,
823 GFLOP in the 12 blocks). :func:`count_flops_torch` counts the real module with PyTorch's own
counter; the tests check that both agree on the tiny configuration.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from mmdet_deploy.benchmarks.timing import TimingPolicy, measure
from mmdet_deploy.deps import require
from mmdet_deploy.errors import UsageError

if TYPE_CHECKING:  # pragma: no cover
    from mmdet_deploy.model.config import MMDetConfig


def _out(n: int, stride: int) -> int:
    """Output side of a TensorFlow-SAME convolution (``ceil(n / stride)``)."""
    return math.ceil(n / stride)


def _bottleneck_macs(in_chs: int, out_chs: int, width: int, stride: int, n: int) -> int:
    m = _out(n, stride)
    macs = n * n * in_chs * width + m * m * width * width * 9 + m * m * width * out_chs
    if stride != 1 or in_chs != out_chs:
        macs += m * m * in_chs * out_chs  # 1x1 downsample
    return macs


def _stage_macs(in_chs: int, out_chs: int, width: int, depth: int, stride: int, n: int) -> int:
    total = _bottleneck_macs(in_chs, out_chs, width, stride, n)
    m = _out(n, stride)
    return total + (depth - 1) * _bottleneck_macs(out_chs, out_chs, width, 1, m)


def _branch_macs(cfg: MMDetConfig) -> int:
    """Multiply-accumulates of one CNN branch on one image."""
    s2 = _out(cfg.image_size, 2)
    s4 = _out(s2, 2)
    w = cfg.stem_width
    (c0, c1, c2), (w0, w1, w2), (d0, d1, d2) = cfg.stage_channels, cfg.stage_widths, cfg.stage_depths
    stems = 2 * s2 * s2 * w * 3 * 7 * 7  # stem + freq_stem
    blur = s4 * s4 * w * sum(k * k for k, _ in cfg.blur_kernels)  # depthwise
    freq = _stage_macs(w * len(cfg.blur_kernels), c0, w0, cfg.freq_depth, 1, s4)
    stages = (
        _stage_macs(w, c0, w0, d0, 1, s4)
        + _stage_macs(c0, c1, w1, d1, 2, s4)
        + _stage_macs(c1, c2, w2, d2, 2, _out(s4, 2))
    )
    transition = s4 * s4 * 2 * c0 * c0
    return stems + blur + freq + stages + transition


def _block_macs(cfg: MMDetConfig) -> int:
    """Multiply-accumulates of one IAFA block on one clip (both sub-blocks)."""
    d, hid, t = cfg.embed_dim, cfg.mlp_hidden, cfg.frames
    n = t * cfg.patches  # across-frame attention: all patch tokens of all frames
    group = n // t + 1  # within-group attention: 1 frame token + n / t patches, t groups
    lt = t * group

    def sub_block(tokens: int, attn_pairs: int) -> int:
        return tokens * d * 3 * d + 2 * attn_pairs * d + tokens * d * d + 2 * tokens * d * hid

    return sub_block(n, n * n) + sub_block(lt, t * group * group)


def _head_macs(cfg: MMDetConfig, head: str) -> int:
    d = cfg.embed_dim
    macs = d * cfg.num_classes
    if head == "fusion":
        tokens = cfg.frames + 1 + cfg.mm_tokens
        macs += cfg.clip_dim * d + cfg.mm_tokens * cfg.mm_dim * d
        macs += tokens * d * 3 * d + 2 * tokens * tokens * d + tokens * d  # qkv, q k^T and a v, proj 768->1
    return macs


def flops_breakdown(config: str | MMDetConfig = "base", head: str = "simplified") -> dict[str, int]:
    """FLOPs per clip (batch 1) by part: ``cnn_branch`` (one of two), ``embed``, ``blocks``, ``head``, ``total``."""
    from mmdet_deploy.model.config import get_config

    cfg = get_config(config)
    if head not in ("simplified", "fc", "fusion"):
        raise UsageError(f"unknown head {head!r}")
    c2, d = cfg.stage_channels[2], cfg.embed_dim
    branch = 2 * cfg.frames * _branch_macs(cfg)
    embed = 2 * cfg.frames * cfg.patches * (2 * c2 * c2 + c2 * d)
    blocks = 2 * cfg.depth * _block_macs(cfg)
    head_flops = 2 * _head_macs(cfg, head)
    return {
        "cnn_branch": branch,
        "embed": embed,
        "blocks": blocks,
        "head": head_flops,
        "total": 2 * branch + embed + blocks + head_flops,
    }


def flops_per_clip(config: str | MMDetConfig = "base", head: str = "simplified") -> int:
    """FLOPs of one forward pass on one clip (10 frames, both inputs); about 1.05e12 for ``base``."""
    return flops_breakdown(config, head)["total"]


def count_flops_torch(model: Any, config: str | MMDetConfig, batch: int = 1) -> int:
    """FLOPs of ``model(original, recons)`` on a batch of random clips, by ``torch.utils.flop_counter``.

    Attention runs on PyTorch's math path during counting, because the counter does not register the
    fused CPU kernel; this changes what is counted, not what is computed.
    """
    torch = require("torch", "counting FLOPs")
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    from mmdet_deploy.model.config import get_config

    cfg = get_config(config)
    x = torch.randn(batch, cfg.frames, 3, cfg.image_size, cfg.image_size)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), counter:
        model(x, x)
    return int(counter.get_total_flops())


def measure_peak_tflops(
    device: str = "cpu", dtype: str = "float32", size: int | None = None, policy: TimingPolicy | None = None
) -> dict[str, Any]:
    """Measured matrix-multiplication throughput of this machine (TFLOP/s), the same run's peak reference.

    A ``size`` x ``size`` x ``size`` matmul (2 size^3 FLOPs) is timed with :func:`~.timing.measure`;
    the figure is FLOPs / median seconds. Defaults: 2048 on CPU, 8192 on CUDA. Uses the current
    ``torch`` thread setting, the same one as the rows. TF32 is disabled for the fp32 figure on CUDA.
    """
    torch = require("torch", "measuring the peak matmul throughput")
    tdtype = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}.get(dtype)
    if tdtype is None:
        raise UsageError(f"unknown dtype {dtype!r} for the peak measurement")
    n = size or (8192 if device == "cuda" else 2048)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    gen = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, dtype=tdtype, generator=gen)
    b = torch.randn(n, n, device=device, dtype=tdtype, generator=gen)
    out = torch.empty(n, n, device=device, dtype=tdtype)
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        result = measure(lambda: torch.mm(a, b, out=out), policy or TimingPolicy(2, 5, 1.0), synchronize=sync)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32
    flops = 2.0 * n**3
    candidates = {"torch.mm": flops / (result.p50_ms / 1e3) / 1e12}
    method = f"torch.mm {n}x{n}x{n} {dtype}, median of {result.reps} after {len(result.warmup_ns)} warm-up"
    if device == "cpu" and dtype == "float32":
        # torch's CPU BLAS and ONNX Runtime's MLAS use different kernels (on AMD EPYC here, MLAS was ~1.7x
        # faster), so a torch-only peak understates the machine: take the faster of the two.
        ort_ms = _onnxruntime_matmul_ms(n, policy or TimingPolicy(2, 5, 1.0), torch.get_num_threads())
        if ort_ms is not None:
            candidates["onnxruntime MatMul"] = flops / (ort_ms / 1e3) / 1e12
            method += f"; onnxruntime MatMul {n}x{n}x{n} median {ort_ms:.1f} ms; peak = the faster"
    return {
        "device": device,
        "dtype": dtype,
        "size": n,
        "p50_ms": result.p50_ms,
        "tflops": max(candidates.values()),
        "by_method": candidates,
        "method": method,
    }


def _onnxruntime_matmul_ms(n: int, policy: TimingPolicy, threads: int) -> float | None:
    """Median milliseconds of an n x n x n fp32 MatMul in ONNX Runtime (None when it is not installed)."""
    try:
        import numpy as np
        import onnx
        import onnxruntime as ort
    except ImportError:
        return None
    h = onnx.helper
    graph = h.make_graph(
        [h.make_node("MatMul", ["a", "b"], ["c"])],
        "peak",
        [h.make_tensor_value_info(x, onnx.TensorProto.FLOAT, [n, n]) for x in ("a", "b")],
        [h.make_tensor_value_info("c", onnx.TensorProto.FLOAT, [n, n])],
    )
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 18)])
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feeds = {x: rng.standard_normal((n, n), dtype=np.float32) for x in ("a", "b")}
    return measure(lambda: session.run(None, feeds), policy).p50_ms
