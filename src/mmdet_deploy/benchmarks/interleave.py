"""The model matrix in one process, interleaved: every runnable row open at once, timed in alternating rounds.

``mmdet-bench --interleave`` (the issue's method for ratios: "every path in the same process, interleaved"):
each row's backend is opened once; then, for each batch size, ``rounds`` rounds run every row in turn under
1/``rounds`` of the timing policy (warm-up in the first round only), so that drifts in machine load hit
every row alike, and the samples of all rounds are pooled. Rows share the process, so memory is reported
as the RSS growth when each backend opened (and the process's high-water mark), not per-row peaks. With
``profile_runs`` > 0 every OpenVINO row is compiled once more with ``PERF_COUNT`` after the timing (so the
counters' overhead never enters the latency) and its per-layer time is summarised (:mod:`.ov_profile`).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mmdet_deploy.benchmarks.artefacts import ArtefactStore
from mmdet_deploy.benchmarks.capabilities import REFERENCE, Capability, Environment, availability
from mmdet_deploy.benchmarks.matrix import MatrixSettings, _record, backend_options, fidelity
from mmdet_deploy.benchmarks.memory import current_rss_mb, max_rss_mb
from mmdet_deploy.benchmarks.status import failed, is_ok, not_applicable, ok
from mmdet_deploy.benchmarks.timing import TimingPolicy, TimingResult, measure
from mmdet_deploy.benchmarks.worker import BackendFactory, _default_factory, _fidelity_outputs, _jsonable
from mmdet_deploy.errors import one_line

log = logging.getLogger(__name__)


def round_policy(policy: TimingPolicy, rounds: int, first: bool) -> TimingPolicy:
    """One round's share of ``policy``: its warm-up only in the first round, 1/rounds of reps and budget."""
    return TimingPolicy(policy.warmup if first else 0, max(1, math.ceil(policy.min_reps / rounds)),
                        policy.time_budget_s / rounds, max(1, math.ceil(policy.max_reps / rounds)))


def _open_rows(rows: Sequence[Capability], env: Environment, store: ArtefactStore, settings: MatrixSettings,
               make: BackendFactory, progress: Callable[[str], None]) -> tuple[list[dict[str, Any]], list[Any]]:
    """Records for every row, and (record, row, backend) for each row whose backend opened."""
    records, live = [], []
    for row in rows:
        avail = availability(row, env, settings.device)
        rec = _record(row, avail.status)
        records.append(rec)
        if not avail.runnable:
            progress(f"{row.key}: {avail.status}")
            continue
        artefact = store.get(row.artefact)
        rec.update(artefact_path=str(artefact.path) if artefact.path else None, artefact_size_mb=artefact.size_mb,
                   build_s=artefact.build_s, build_cached=artefact.cached)
        if artefact.error or artefact.path is None:
            rec["status"] = failed(f"building {row.artefact}: {one_line(artefact.error or 'no file')}")
            progress(f"{row.key}: {rec['status']}")
            continue
        rss, t0 = current_rss_mb(), time.perf_counter()
        try:
            if row.backend == "torch" and settings.threads:  # torch's pool is per process, as the others' options
                import torch

                torch.set_num_threads(settings.threads)
            backend = make(row.backend, str(artefact.path), row.device, **backend_options(row, settings))
            backend.open()
        except Exception as exc:  # a backend that cannot open fails its row only
            rec["status"] = failed(f"{type(exc).__name__}: {one_line(exc)}")
            progress(f"{row.key}: {rec['status']}")
            continue
        rec["load_s"] = time.perf_counter() - t0
        rec["memory"] = {"rss_before_mb": rss, "rss_delta_mb": current_rss_mb() - rss, "peak_rss_mb": None,
                         "rss_method": "RSS growth when the backend opened, in the one shared process"}
        progress(f"{row.key}: open ({row.label}), {rec['load_s']:.1f} s, +{rec['memory']['rss_delta_mb']:.0f} MiB")
        live.append((rec, row, backend))
    return records, live


def _time_rows(live: list[Any], clips: np.ndarray, settings: MatrixSettings, rounds: int,
               progress: Callable[[str], None]) -> dict[int, dict[int, dict[str, np.ndarray]]]:
    """Alternating timing rounds; fills each record's ``batches``; returns the last outputs per row and batch."""
    last: dict[int, dict[int, dict[str, np.ndarray]]] = {id(rec): {} for rec, _, _ in live}
    for bs in settings.batch_sizes:
        samples: dict[int, list[int]] = {id(rec): [] for rec, _, _ in live}
        warm: dict[int, list[int]] = {id(rec): [] for rec, _, _ in live}
        for r in range(rounds):
            policy = round_policy(settings.policy, rounds, r == 0)
            for rec, _, backend in live:
                if str(bs) in rec["batches"]:  # failed or not applicable in an earlier round
                    continue
                if backend.max_batch is not None and bs > backend.max_batch:
                    rec["batches"][str(bs)] = {"status": not_applicable(f"artefact max batch {backend.max_batch}")}
                    continue
                feed = {n: np.ascontiguousarray(clips[:bs]) for n in backend.contract.input_names}

                def call(backend: Any = backend, feed: dict[str, np.ndarray] = feed, key: int = id(rec),
                         bs: int = bs) -> None:
                    last[key][bs] = backend.infer(feed)

                try:
                    timing = measure(call, policy)
                except Exception as exc:  # e.g. out of memory at a large batch: keep the other cells
                    rec["batches"][str(bs)] = {"status": failed(f"{type(exc).__name__}: {one_line(exc)}")}
                    last[id(rec)].pop(bs, None)
                    continue
                samples[id(rec)].extend(timing.samples_ns)
                warm[id(rec)].extend(timing.warmup_ns)
            progress(f"batch {bs}: round {r + 1}/{rounds} done")
        for rec, _, _ in live:
            if str(bs) in rec["batches"] or not samples[id(rec)]:
                continue
            summary = TimingResult(tuple(samples[id(rec)]), tuple(warm[id(rec)])).summary()
            summary.update(status=ok(), rounds=rounds, p50_ms_per_clip=summary["p50_ms"] / bs,
                           p95_ms_per_clip=summary["p95_ms"] / bs, clips_per_s=bs / (summary["p50_ms"] / 1e3))
            rec["batches"][str(bs)] = summary
    return last


def _profile(rec: dict[str, Any], row: Capability, make: BackendFactory, settings: MatrixSettings,
             clips: np.ndarray, runs: int) -> None:
    """PERF_COUNT breakdown of one OpenVINO row at batch 1 (a second compilation, after the timing)."""
    from mmdet_deploy.benchmarks.ov_profile import summarise_layers

    backend = make(row.backend, rec["artefact_path"], row.device, **backend_options(row, settings), profile=True)
    try:
        backend.open()
        feed = {n: np.ascontiguousarray(clips[:1]) for n in backend.contract.input_names}
        rec["profile"] = {"runs": runs, "batch": 1, **summarise_layers(backend.profile(feed, runs=runs))}
    except Exception as exc:  # profiling is extra evidence: its failure is reported, not fatal
        rec["profile"] = {"status": failed(f"{type(exc).__name__}: {one_line(exc)}")}
    finally:
        backend.close()


def run_interleaved(
    rows: Sequence[Capability], env: Environment, store: ArtefactStore, inputs: Path, settings: MatrixSettings,
    factory: BackendFactory | None = None, progress: Callable[[str], None] = log.info,
) -> list[dict[str, Any]]:  # fmt: skip
    """Run ``rows`` interleaved in this process; records as :func:`~.matrix.run_matrix` returns them."""
    make = factory or _default_factory
    clips = np.load(inputs)  # in memory, writable (torch warns on read-only arrays); a few clips only
    need = max(max(settings.batch_sizes), settings.fidelity_clips)
    if clips.shape[0] < need:
        raise ValueError(f"{inputs}: {clips.shape[0]} clips, the matrix needs {need}")  # a bug in the caller
    records, live = _open_rows(rows, env, store, settings, make, progress)
    outputs: dict[str, dict[str, Any]] = {}
    try:
        last = _time_rows(live, clips, settings, max(1, settings.rounds), progress)
        for rec, _, backend in live:
            ran = last[id(rec)]
            if not ran:
                failures = [c["status"] for c in rec["batches"].values()]
                rec["status"] = failures[0] if failures else failed("no batch size could run")
                continue
            outputs[rec["key"]] = _fidelity_outputs(backend, clips, backend.contract.input_names,
                                                    settings.fidelity_clips, ran)
            rec["describe"] = _jsonable(backend.describe())
            rec["status"] = ok()
    finally:
        for _, _, backend in live:
            backend.close()
    peak = max_rss_mb()
    for rec, row, _ in live:
        rec["memory"]["process_peak_rss_mb"] = peak
        if settings.profile_runs and row.backend == "openvino" and is_ok(rec):
            progress(f"{row.key}: PERF_COUNT profile over {settings.profile_runs} runs")
            _profile(rec, row, make, settings, clips, settings.profile_runs)
    ref_key = REFERENCE.get(settings.device)
    if ref_key in outputs:
        for rec in records:
            if rec["key"] in outputs:
                rec["fidelity"] = fidelity(outputs[ref_key], outputs[rec["key"]], settings.threshold)
    return records
