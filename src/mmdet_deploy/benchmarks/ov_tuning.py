"""OpenVINO settings for ``mmdet-run``: batch size x performance hint x requests in flight, measured side by side.

Run by hand on the model a deployment uses (minutes for the base model on 2 cores)::

    python -m mmdet_deploy.benchmarks.ov_tuning --model M.onnx [--model M.int8-nncf.onnx] --precision bf16 \\
        --threads 2 --batch-sizes 1,2,4 --media DIR --out ov-tuning.json

Model level: each (artefact, hint) is compiled once; each batch size is timed with the package's one timer
(:func:`~mmdet_deploy.benchmarks.timing.measure`) in alternating rounds over every compilation, so load
drifts hit all alike. ``latency`` runs a batch as one request; ``throughput`` splits it over the compiled
model's optimal number of requests in flight (one per stream). Pipeline level (``--media``): the
``mmdet-run`` pipeline (:func:`~mmdet_deploy.runtime.pipeline.run_inference`) over the folder with each
hint at each batch size, files/s and the busy seconds of each stage, so the choice is made on what a run
really does (decoding and face detection share the cores with inference).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mmdet_deploy.benchmarks.interleave import round_policy
from mmdet_deploy.benchmarks.timing import TimingPolicy, TimingResult, as_dict, measure

HINTS = {"latency": {"hint": "latency", "requests": 1}, "throughput": {"hint": "throughput", "requests": 0}}


def _open(path: Path, precision: str, threads: int, hint: str) -> Any:
    from mmdet_deploy.runtime.backends import create_backend

    return create_backend("openvino", path, precision=precision, threads=threads, **HINTS[hint]).open()


def model_level(models: Sequence[Path], precision: str, threads: int, batch_sizes: Sequence[int],
                clips: np.ndarray, policy: TimingPolicy, rounds: int = 2) -> list[dict[str, Any]]:
    """ms per clip for every (model, hint, batch size), interleaved over the compilations."""
    opened = [(m, h, _open(m, precision, threads, h)) for m in models for h in HINTS]
    cells: list[dict[str, Any]] = []
    try:
        for bs in batch_sizes:
            feed = {n: np.ascontiguousarray(np.resize(clips, (bs, *clips.shape[1:]))) for n in ("original", "recons")}
            pooled: dict[int, list[int]] = {i: [] for i in range(len(opened))}
            for r in range(rounds):
                for i, (_, _, backend) in enumerate(opened):
                    timing = measure(lambda b=backend, f=feed: b.infer(f), round_policy(policy, rounds, r == 0))
                    pooled[i].extend(timing.samples_ns)
            for i, (model, hint, backend) in enumerate(opened):
                summary = TimingResult(tuple(pooled[i])).summary()
                facts = backend.describe()
                cells.append({"model": model.name, "hint": hint, "batch": bs, "streams": facts["streams"],
                              "requests": facts["optimal_requests"] if hint == "throughput" else 1,
                              "ms_per_clip": summary["p50_ms"] / bs, "p50_ms": summary["p50_ms"],
                              "reps": summary["reps"]})
    finally:
        for _, _, backend in opened:
            backend.close()
    return cells


def pipeline_level(model: Path, precision: str, threads: int, batch_sizes: Sequence[int], media: Path,
                   workers: int, work: Path) -> list[dict[str, Any]]:
    """``mmdet-run``'s pipeline over ``media`` for each hint and batch size (after one warm-up call each)."""
    from mmdet_deploy.runtime.discovery import discover
    from mmdet_deploy.runtime.pipeline import run_inference
    from mmdet_deploy.runtime.preprocess import Preprocessor
    from mmdet_deploy.runtime.results import ResultsWriter

    items = [i for i in discover(media) if i.is_media]
    runs = []
    for hint in HINTS:
        backend = _open(model, precision, threads, hint)
        try:
            pre = Preprocessor(backend.contract)
            for bs in batch_sizes:
                warm = np.zeros((bs, *backend.contract.inputs[0].shape[1:]), np.float32)
                backend.infer({n: warm for n in backend.contract.input_names})
                with ResultsWriter(work / f"{hint}-{bs}", overwrite=True, fsync=False) as writer:
                    t0 = time.perf_counter()
                    stats = run_inference(items, pre, backend, writer=writer, batch_size=bs, workers=workers)
                    wall = time.perf_counter() - t0
                d = stats.to_dict()
                runs.append({"model": model.name, "hint": hint, "batch": bs, "files": len(items),
                             "files_per_s": len(items) / wall, "wall_s": wall, "stage_s": d.get("stage_s"),
                             "windows": d.get("windows")})
        finally:
            backend.close()
    return runs


def main(argv: list[str] | None = None) -> int:
    """Command line of the tuning run; prints and writes the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, action="append", required=True)
    parser.add_argument("--precision", default="bf16", choices=("fp32", "bf16"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-sizes", default="1,2,4")
    parser.add_argument("--clips", type=Path, default=None, help=".npy of input clips (default: synthetic faces)")
    parser.add_argument("--media", type=Path, default=None, help="folder for the pipeline-level runs")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--min-reps", type=int, default=2)
    parser.add_argument("--budget-s", type=float, default=6.0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    sizes = [int(b) for b in args.batch_sizes.split(",")]
    if args.clips is not None:
        clips = np.load(args.clips)
    else:
        from mmdet_deploy.benchmarks.synthetic_media import sample_clips

        clips = sample_clips(max(sizes))
    policy = TimingPolicy(warmup=1, min_reps=args.min_reps, time_budget_s=args.budget_s)
    result: dict[str, Any] = {"precision": args.precision, "threads": args.threads, "policy": as_dict(policy),
                              "load_average_start": _load()}
    result["model_level"] = model_level(args.model, args.precision, args.threads, sizes, clips, policy)
    if args.media is not None:
        work = args.out.with_suffix(".work")
        result["pipeline"] = pipeline_level(args.model[-1], args.precision, args.threads, sizes, args.media,
                                            args.workers, work)
    result["load_average_end"] = _load()
    text = json.dumps(result, indent=1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    print(text)
    return 0


def _load() -> float | None:
    from mmdet_deploy.benchmarks.machine import load_average

    return load_average()


if __name__ == "__main__":
    raise SystemExit(main())
