"""Run one benchmark row: open the backend, time it at each batch size, keep its outputs for fidelity.

:func:`run_row` does the work in the current process. The matrix normally runs each row in a fresh
process (``python -m mmdet_deploy.benchmarks.worker JOB.json RESULT.json``) so that the row's peak RSS
is its own (see :mod:`.memory`) and a crashing backend fails only its row.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mmdet_deploy.benchmarks.memory import GpuMemory, RssSampler, current_rss_mb, max_rss_mb
from mmdet_deploy.benchmarks.status import failed, not_applicable, ok, status_of
from mmdet_deploy.benchmarks.timing import TimingPolicy, measure, no_sync
from mmdet_deploy.contract import LOGITS, PROB_FAKE
from mmdet_deploy.errors import MMDetError

#: Builds a backend: (registry name, artefact path, device, options) -> Backend (not opened).
BackendFactory = Callable[..., Any]


@dataclass(frozen=True)
class RowJob:
    """Everything a worker needs to benchmark one row (JSON-serialisable).

    ``inputs``: path of a ``.npy`` array of clips (N, T, 3, H, W) float32, N >= every batch size and
    ``fidelity_clips``. ``threads``: intra-op threads (None: the library default). ``isolated``: the
    worker owns its process, so its high-water RSS (``VmHWM``) is the row's own peak.
    """

    key: str
    backend: str
    device: str
    artefact: str
    batch_sizes: tuple[int, ...]
    inputs: str
    policy: TimingPolicy = field(default_factory=TimingPolicy)
    options: dict[str, Any] = field(default_factory=dict)
    fidelity_clips: int = 4
    threads: int | None = None
    isolated: bool = False

    def to_json(self) -> str:
        return json.dumps(asdict(self), default=list)

    @classmethod
    def from_json(cls, text: str) -> RowJob:
        data = json.loads(text)
        data["policy"] = TimingPolicy(**data["policy"])
        data["batch_sizes"] = tuple(data["batch_sizes"])
        return cls(**data)


def _default_factory(name: str, path: str, device: str, **options: Any) -> Any:
    from mmdet_deploy.runtime.backends import create_backend

    return create_backend(name, path, device=device, **options)


def _synchronizer(device: str) -> Callable[[], None]:
    """``torch.cuda.synchronize`` for CUDA rows when PyTorch is loaded, else a no-op.

    Every backend returns host arrays from ``infer``, which already waits for the device; the explicit
    synchronisation guards against a backend that returns before its stream is drained.
    """
    if device == "cuda" and "torch" in sys.modules:
        torch = sys.modules["torch"]
        if torch.cuda.is_available():
            return torch.cuda.synchronize
    return no_sync


def _set_threads(job: RowJob) -> None:
    if job.threads and job.backend == "torch":
        import torch

        torch.set_num_threads(job.threads)


def _run(job: RowJob, factory: BackendFactory) -> dict[str, Any]:
    clips = np.load(job.inputs, mmap_mode="r")
    need = max(max(job.batch_sizes), job.fidelity_clips)
    if clips.shape[0] < need:
        raise MMDetError(f"{job.inputs}: {clips.shape[0]} clips, the job needs {need}")
    _set_threads(job)
    gpu = GpuMemory(job.device)
    rss_before = current_rss_mb()
    # In its own process the kernel's high-water mark is exact; in-process, sample (see memory.py).
    sampler = None if job.isolated else RssSampler()
    result: dict[str, Any] = {"batches": {}}
    with sampler or contextlib.nullcontext():
        t0 = time.perf_counter()
        backend = factory(job.backend, job.artefact, job.device, **job.options)
        backend.open()
        result["load_s"] = time.perf_counter() - t0
        gpu.sample()
        try:
            names = backend.contract.input_names
            sync = _synchronizer(job.device)
            last: dict[int, dict[str, np.ndarray]] = {}
            for bs in job.batch_sizes:
                if backend.max_batch is not None and bs > backend.max_batch:
                    result["batches"][str(bs)] = {"status": not_applicable(f"artefact max batch {backend.max_batch}")}
                    continue
                feed = {n: np.ascontiguousarray(clips[:bs]) for n in names}

                def call(feed: dict[str, np.ndarray] = feed, bs: int = bs) -> None:
                    last[bs] = backend.infer(feed)

                try:
                    timing = measure(call, job.policy, synchronize=sync)
                except Exception as exc:  # e.g. out of memory at a large batch: keep the smaller batches
                    result["batches"][str(bs)] = {"status": failed(f"{type(exc).__name__}: {exc}")}
                    last.pop(bs, None)
                    continue
                gpu.sample()
                summary = timing.summary()
                summary.update(
                    status=ok(),
                    p50_ms_per_clip=timing.p50_ms / bs,
                    p95_ms_per_clip=timing.p95_ms / bs,
                    clips_per_s=bs / (timing.p50_ms / 1e3),
                )
                result["batches"][str(bs)] = summary
            if not last:
                failures = [status_of(b).detail for b in result["batches"].values()]
                raise MMDetError(failures[0] if failures else "no batch size could run")
            result["outputs"] = _fidelity_outputs(backend, clips, names, job.fidelity_clips, last)
            result["describe"] = _jsonable(backend.describe())
        finally:
            backend.close()
    result["memory"] = {
        "rss_before_mb": rss_before,
        "peak_rss_mb": (max_rss_mb() if sampler is None else sampler.peak_mb) or current_rss_mb(),
        "rss_method": "VmHWM of the worker process" if job.isolated else "psutil sampling every 5 ms",
        **gpu.summary(),
    }
    result["memory"]["rss_delta_mb"] = result["memory"]["peak_rss_mb"] - rss_before
    result["status"] = ok()
    return result


def _fidelity_outputs(
    backend: Any, clips: np.ndarray, names: tuple[str, ...], n: int, last: dict[int, dict[str, np.ndarray]]
) -> dict[str, list[Any]]:
    """Outputs on the first ``n`` clips, in chunks of the largest timed batch <= n (reusing timed outputs)."""
    timed = sorted(b for b in last if b <= n) or [1]
    chunk = timed[-1]
    logits, probs = [], []
    for start in range(0, n, chunk):
        size = min(chunk, n - start)
        if start == 0 and size in last:
            out = last[size]
        else:
            out = backend.infer({k: np.ascontiguousarray(clips[start : start + size]) for k in names})
        logits.append(np.asarray(out[LOGITS], np.float64))
        probs.append(np.asarray(out[PROB_FAKE], np.float64))
    return {LOGITS: np.concatenate(logits).tolist(), PROB_FAKE: np.concatenate(probs).tolist()}


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def run_row(job: RowJob, factory: BackendFactory | None = None) -> dict[str, Any]:
    """Benchmark one row; never raises for a backend failure (the result's ``status`` says ``failed: ...``)."""
    try:
        return _run(job, factory or _default_factory)
    except MMDetError as exc:
        return {"status": failed(str(exc))}
    except Exception as exc:  # a backend that cannot run here still gets its row, with the reason
        return {
            "status": failed(f"{type(exc).__name__}: {exc}"),
            "traceback": traceback.format_exc(limit=8),
        }


def main(argv: list[str] | None = None) -> int:
    """Worker entry point: ``python -m mmdet_deploy.benchmarks.worker JOB.json RESULT.json``."""
    job_path, result_path = (argv if argv is not None else sys.argv[1:])[:2]
    job = RowJob.from_json(Path(job_path).read_text())
    result = run_row(job)
    Path(result_path).write_text(json.dumps(result, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
