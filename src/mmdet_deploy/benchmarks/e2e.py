"""End-to-end: ``mmdet-run``'s pipeline on a generated media folder, beside the seed-style baseline.

Both sides get the same files and the same weights, and both have their model loaded and warmed up
(one call) before the clock starts, so the figures are steady-state throughput, not start-up cost.
The pipeline is :func:`mmdet_deploy.runtime.pipeline.run_inference` with the backend of one matrix row;
its overlap efficiency is its clips/s divided by that row's model-only clips/s at the batch size the
pipeline used (measured in the matrix, or measured here with the same timing module when the matrix
has no figure at that batch size). The headline is pipeline files/s over seed-style files/s.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mmdet_deploy.benchmarks.status import is_ok
from mmdet_deploy.benchmarks.timing import TimingPolicy, measure

log = logging.getLogger(__name__)

#: Rows tried, in order, as the pipeline's backend when the user names none and no CPU row can be called the
#: fastest (the first that ran wins). On CPU the fastest row that keeps the reference's decisions runs.
E2E_PREFERENCE = {
    "cpu": ("ort-fp32@cpu", "torch-eager-fp32@cpu"),
    "cuda": ("trt-fp16@cuda", "ort-trt-fp16@cuda", "torch-fp16-graphs@cuda", "ort-cuda-fp32@cuda",
             "torch-eager-fp32@cuda"),
}  # fmt: skip


@dataclass(frozen=True)
class E2ESettings:
    """``batch_size``: clips per pipeline call; ``workers``: preprocessing threads of the pipeline."""

    batch_size: int = 1
    workers: int = 2


def _p50_per_clip(record: dict[str, Any]) -> float | None:
    """p50 ms per clip at the smallest batch size the row measured (None when it measured none)."""
    cells = [(int(b), c) for b, c in (record.get("batches") or {}).items() if is_ok(c)]
    return min(cells)[1]["p50_ms_per_clip"] if cells else None


def fastest_row(records: Sequence[dict[str, Any]], device: str) -> dict[str, Any] | None:
    """The fastest row of ``device`` (p50 per clip at its smallest batch) whose decisions all agree with the
    reference's and whose outputs are finite (rows without fidelity figures do not qualify)."""
    candidates = []
    for rec in records:
        fid = rec.get("fidelity") or {}
        p50 = _p50_per_clip(rec) if is_ok(rec) and rec.get("device") == device else None
        if p50 is not None and fid.get("decision_agreement") == 1.0 and not fid.get("nonfinite"):
            candidates.append((p50, rec["key"], rec))
    return min(candidates)[2] if candidates else None


def choose_row(records: Sequence[dict[str, Any]], device: str, wanted: str | None = None) -> dict[str, Any] | None:
    """The matrix record the pipeline runs on: ``wanted`` (name or key) if it ran; else on CPU the fastest
    faithful row (:func:`fastest_row`); else the first of :data:`E2E_PREFERENCE` that ran."""
    ok = {r["key"]: r for r in records if is_ok(r)}
    if wanted:
        key = wanted if "@" in wanted else f"{wanted}@{device}"
        return ok.get(key)
    if device == "cpu" and (fast := fastest_row(records, device)) is not None:
        return fast
    return next((ok[k] for k in E2E_PREFERENCE.get(device, ()) if k in ok), None)


def _model_only(record: dict[str, Any], batch: int, backend: Any, clips: np.ndarray, policy: TimingPolicy) -> float:
    """Model-only clips/s of the row at ``batch``: the matrix figure, or measured now on the open backend."""
    figure = record.get("batches", {}).get(str(batch), {})
    if is_ok(figure):
        return float(figure["clips_per_s"])
    feed = {n: np.ascontiguousarray(clips[:batch]) for n in backend.contract.input_names}
    timing = measure(lambda: backend.infer(feed), policy)
    return batch / (timing.p50_ms / 1e3)


def run_pipeline(
    files: Sequence[Path],
    record: dict[str, Any],
    options: dict[str, Any],
    settings: E2ESettings,
    work: Path,
    clips: np.ndarray,
    policy: TimingPolicy,
    factory: Callable[..., Any] | None = None,
) -> dict[str, Any]:
    """Run ``mmdet-run``'s pipeline over ``files`` on the backend of matrix ``record``; figures in seconds."""
    from mmdet_deploy.runtime.backends import create_backend
    from mmdet_deploy.runtime.discovery import MediaItem, media_kind
    from mmdet_deploy.runtime.pipeline import run_inference
    from mmdet_deploy.runtime.preprocess import Preprocessor
    from mmdet_deploy.runtime.results import ResultsWriter

    make = factory or (lambda name, path, device, **o: create_backend(name, path, device=device, **o))
    t0 = time.perf_counter()
    backend = make(record["backend"], record["artefact_path"], record["device"], **options)
    backend.open()
    load_s = time.perf_counter() - t0
    try:
        warm = {n: np.ascontiguousarray(clips[: settings.batch_size]) for n in backend.contract.input_names}
        backend.infer(warm)
        preprocessor = Preprocessor(backend.contract)
        items = [MediaItem(f, f.name, media_kind(f)) for f in files]
        with ResultsWriter(work / "e2e-run", overwrite=True, fsync=False) as writer:
            summary = run_inference(
                items, preprocessor, backend, writer=writer, batch_size=settings.batch_size, workers=settings.workers
            )
        model_cps = _model_only(record, summary.batch_size, backend, clips, policy)
    finally:
        backend.close()
    result = summary.to_dict()
    clips_per_s = summary.windows / summary.wall_s if summary.wall_s > 0 else 0.0
    result.update(
        method="mmdet-run pipeline (run_inference): threaded decode/faces/crop ahead of batched inference",
        row=record["key"], label=record["label"], load_s=load_s, clips_per_s=clips_per_s,
        model_only_clips_per_s=model_cps, overlap_efficiency=clips_per_s / model_cps if model_cps else None,
        overlap_detail=f"{record['key']} at batch {summary.batch_size}: {clips_per_s:.3g} vs {model_cps:.3g} clips/s",
    )  # fmt: skip
    return result


def run_seed(
    files: Sequence[Path], weights: Path, config: str, head: str, device: str, clips: np.ndarray
) -> dict[str, Any]:
    """The seed-style baseline (:mod:`.seed_pipeline`) on ``files`` with the same weights."""
    from mmdet_deploy.benchmarks.seed_pipeline import SeedPipeline
    from mmdet_deploy.deps import require

    torch = require("torch", "the seed-style baseline")
    from mmdet_deploy.model import load_model

    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the demo-weights warning was already given
        model = load_model(weights, head=head, config=config)
    seed = SeedPipeline(model, device=device)
    load_s = time.perf_counter() - t0
    with torch.no_grad():
        x = torch.from_numpy(np.ascontiguousarray(clips[:1])).to(device)
        model(x, x)  # warm-up, excluded like the pipeline's
    result = seed.run(files)
    result["load_s"] = load_s
    return result


def compare(pipeline: dict[str, Any] | None, seed: dict[str, Any] | None) -> dict[str, Any]:
    """Headline figures: overlap efficiency and the pipeline's speed-up over the seed-style baseline."""
    out: dict[str, Any] = {"pipeline": pipeline, "seed": seed}
    if pipeline and seed and seed.get("files_per_s"):
        out["speedup_vs_seed"] = pipeline["files_per_s"] / seed["files_per_s"]
    if pipeline:
        out["overlap_efficiency"] = pipeline.get("overlap_efficiency")
        out["overlap_detail"] = pipeline.get("overlap_detail", "")
    return out
