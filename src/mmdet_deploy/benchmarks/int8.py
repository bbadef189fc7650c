"""ONNX Runtime fp32 vs INT8 on the same inputs: latency per clip, agreement, cosine, file size.

For the issue's closing figures on the base model (run by hand, minutes on 2 cores)::

    mmdet-bench int8 --fp32 model.onnx --int8 model.int8.onnx --calib calibration/NAME --threads 2 \\
        --out bench/int8.json

Both models are timed with the package's one timing method (:func:`mmdet_deploy.benchmarks.timing.measure`)
on the same clip (batch 1, the first held-out clip), in one process, alternating fp32 and INT8 rounds so
that machine load drifts hit both alike. Agreement and cosine come from the accuracy gate over the whole
held-out split.
"""

from __future__ import annotations

import platform
import sys
from pathlib import Path
from typing import Any

from mmdet_deploy.benchmarks.timing import TimingPolicy, TimingResult, as_dict, measure
from mmdet_deploy.calibration.dataset import HOLDOUT, CalibrationSet, CalibrationSetError
from mmdet_deploy.calibration.gate import DEFAULT_MIN_AGREEMENT, compare, output_names, run_split, session
from mmdet_deploy.contract import LOGITS, PROB_FAKE, ModelContract
from mmdet_deploy.deps import require


def int8_benchmark(
    fp32_path: str | Path,
    int8_path: str | Path,
    calib_dir: str | Path,
    *,
    threads: int | None = None,
    policy: TimingPolicy | None = None,
    rounds: int = 2,
    split: str = HOLDOUT,
    profile_runs: int = 0,
) -> dict[str, Any]:
    """Latency of both models on one clip, and the gate's figures over ``split``; a JSON-ready dict.

    ``rounds``: alternating fp32/INT8 timing rounds (each under ``policy``); the reported latency pools the
    samples of all rounds. ``speedup`` is fp32 median / INT8 median. ``profile_runs`` > 0 adds ONNX Runtime's
    kernel-time breakdown of both models on the same clip (:mod:`mmdet_deploy.benchmarks.profile`), after
    the timing, so that profiling overhead never enters the latency figures.
    """
    require("onnx", "the INT8 benchmark")

    calib = CalibrationSet.open(calib_dir)
    entries = calib.split(split)
    if not entries:
        raise CalibrationSetError(f"{calib.root}: the {split} split is empty")
    policy = policy or TimingPolicy(warmup=1, min_reps=3, time_budget_s=10.0)
    sessions = {"fp32": session(fp32_path, threads), "int8": session(int8_path, threads)}
    clip = calib.load(entries[0])
    feeds = {i.name: clip[i.name][None] for i in sessions["fp32"].get_inputs()}
    samples: dict[str, list[int]] = {"fp32": [], "int8": []}
    warm: dict[str, list[int]] = {"fp32": [], "int8": []}
    for _ in range(max(1, rounds)):
        for name, sess in sessions.items():
            result: TimingResult = measure(lambda s=sess: s.run([PROB_FAKE], feeds), policy)
            samples[name].extend(result.samples_ns)
            warm[name].extend(result.warmup_ns)
    timing = {k: TimingResult(tuple(v), tuple(warm[k])).summary() for k, v in samples.items()}
    shared = set(output_names(sessions["fp32"])) & set(output_names(sessions["int8"]))
    cosine_on = "features" if "features" in shared else LOGITS
    names = [LOGITS, PROB_FAKE] + (["features"] if cosine_on == "features" else [])
    contract = ModelContract.from_onnx(fp32_path)
    gate = compare(run_split(sessions["fp32"], calib, split, names), run_split(sessions["int8"], calib, split, names),
                   contract.threshold, DEFAULT_MIN_AGREEMENT, cosine_on)
    profiles = None
    if profile_runs > 0:
        from mmdet_deploy.benchmarks.profile import profile_onnx

        profiles = {name: profile_onnx(path, feeds, threads=threads, runs=profile_runs)
                    for name, path in (("fp32", fp32_path), ("int8", int8_path))}
    return {
        "fp32_model": str(fp32_path),
        "int8_model": str(int8_path),
        "fp32_size_bytes": Path(fp32_path).stat().st_size,
        "int8_size_bytes": Path(int8_path).stat().st_size,
        "fp32_latency_ms": {k: timing["fp32"][k] for k in ("p50_ms", "p95_ms", "mean_ms", "min_ms", "reps")},
        "int8_latency_ms": {k: timing["int8"][k] for k in ("p50_ms", "p95_ms", "mean_ms", "min_ms", "reps")},
        "speedup": timing["fp32"]["p50_ms"] / timing["int8"]["p50_ms"],
        "gate": gate.to_dict(),
        "demo_weights": bool(contract.demo_weights),
        "threads": threads,
        "timing_policy": {"rounds": rounds, **as_dict(policy)},
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "python": sys.version.split()[0]},
        "onnxruntime": require("onnxruntime").__version__,
        "profile": profiles,
    }
