"""The model matrix in one process, interleaved: every runnable row open at once, timed in alternating rounds.

``mmdet-bench --interleave`` (the issue's method for ratios: "every path in the same process, interleaved"):
each row's backend is opened once; then, for each batch size, ``rounds`` rounds run every row in turn under
1/``rounds`` of the timing policy (warm-up in the first round only), so that drifts in machine load hit
every row alike, and the samples of all rounds are pooled. Rows share the process, so memory is reported
as the RSS growth when each backend opened (and the process's high-water mark), not per-row peaks. With
``profile_runs`` > 0 every OpenVINO row is compiled once more with ``PERF_COUNT`` after the timing (so the
counters' overhead never enters the latency) and its per-layer time is summarised (:mod:`.ov_profile`).

With ``reopen`` (``--reopen``) a row's backend is opened for its turn in each round and closed after it,
so that only one model is in memory at a time (the base model's rows together need about 15 GB); every turn
then starts with one untimed warm-up call. The timed calls are the same.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
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


@dataclass
class _Slot:
    """One runnable row: its record, its capability, its backend while open, its last outputs per batch."""

    rec: dict[str, Any]
    row: Capability
    backend: Any = None
    opened: int = 0  # times opened; -1 after a failed open
    last: dict[int, dict[str, np.ndarray]] = field(default_factory=dict)
    samples: dict[int, list[int]] = field(default_factory=dict)
    warm: dict[int, list[int]] = field(default_factory=dict)


def _prepare_rows(rows: Sequence[Capability], env: Environment, store: ArtefactStore, settings: MatrixSettings,
                  progress: Callable[[str], None]) -> tuple[list[dict[str, Any]], list[_Slot]]:
    """Records for every row, and a slot for each runnable row whose artefact was built."""
    records, slots = [], []
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
        slots.append(_Slot(rec, row))
    return records, slots


def _open(slot: _Slot, settings: MatrixSettings, make: BackendFactory, progress: Callable[[str], None]) -> bool:
    """Open the slot's backend (the first open records load time and RSS growth); False when it failed."""
    if slot.backend is not None:
        return True
    rec, row = slot.rec, slot.row
    rss, t0 = current_rss_mb(), time.perf_counter()
    try:
        if row.backend == "torch" and settings.threads:  # torch's pool is per process, as the others' options
            import torch

            torch.set_num_threads(settings.threads)
        backend = make(row.backend, rec["artefact_path"], row.device, **backend_options(row, settings))
        backend.open()
    except Exception as exc:  # a backend that cannot open fails its row only, and is not tried again
        rec["status"] = failed(f"{type(exc).__name__}: {one_line(exc)}")
        progress(f"{row.key}: {rec['status']}")
        slot.opened = -1
        return False
    slot.backend, slot.opened = backend, slot.opened + 1
    if slot.opened == 1:
        rec["load_s"] = time.perf_counter() - t0
        rec["memory"] = {"rss_before_mb": rss, "rss_delta_mb": current_rss_mb() - rss, "peak_rss_mb": None,
                         "rss_method": "RSS growth when the backend opened, in the one shared process"}
        progress(f"{row.key}: open ({row.label}), {rec['load_s']:.1f} s, +{rec['memory']['rss_delta_mb']:.0f} MiB")
    return True


def _close(slot: _Slot) -> None:
    if slot.backend is not None:
        slot.backend.close()
        slot.backend = None


def _turn(slot: _Slot, bs: int, clips: np.ndarray, policy: TimingPolicy) -> None:
    """One row's turn at one batch size in one round: timed calls appended to the slot's samples."""
    rec, backend = slot.rec, slot.backend
    if str(bs) in rec["batches"]:  # failed or not applicable in an earlier round
        return
    if backend.max_batch is not None and bs > backend.max_batch:
        rec["batches"][str(bs)] = {"status": not_applicable(f"artefact max batch {backend.max_batch}")}
        return
    feed = {n: np.ascontiguousarray(clips[:bs]) for n in backend.contract.input_names}

    def call() -> None:
        slot.last[bs] = backend.infer(feed)

    try:
        timing = measure(call, policy)
    except Exception as exc:  # e.g. out of memory at a large batch: keep the other cells
        rec["batches"][str(bs)] = {"status": failed(f"{type(exc).__name__}: {one_line(exc)}")}
        slot.last.pop(bs, None)
        return
    slot.samples.setdefault(bs, []).extend(timing.samples_ns)
    slot.warm.setdefault(bs, []).extend(timing.warmup_ns)


def _finish(slot: _Slot, clips: np.ndarray, settings: MatrixSettings) -> dict[str, Any] | None:
    """Summaries per batch size, status, describe; the fidelity outputs (None when nothing ran)."""
    rec = slot.rec
    for bs, samples in slot.samples.items():
        if str(bs) in rec["batches"] or not samples:
            continue
        summary = TimingResult(tuple(samples), tuple(slot.warm.get(bs, ()))).summary()
        summary.update(status=ok(), rounds=settings.rounds, p50_ms_per_clip=summary["p50_ms"] / bs,
                       p95_ms_per_clip=summary["p95_ms"] / bs, clips_per_s=bs / (summary["p50_ms"] / 1e3))
        rec["batches"][str(bs)] = summary
    if not slot.last:
        failures = [c["status"] for c in rec["batches"].values()]
        rec["status"] = failures[0] if failures else failed("no batch size could run")
        return None
    backend = slot.backend
    outputs = _fidelity_outputs(backend, clips, backend.contract.input_names, settings.fidelity_clips, slot.last)
    rec["describe"] = _jsonable(backend.describe())
    rec["status"] = ok()
    return outputs


def _time_rows(slots: list[_Slot], clips: np.ndarray, settings: MatrixSettings, make: BackendFactory,
               progress: Callable[[str], None]) -> dict[str, dict[str, Any]]:
    """Alternating timing rounds over every batch size; returns the fidelity outputs by row key."""
    rounds, outputs = max(1, settings.rounds), {}
    turns = [(bs, r) for bs in settings.batch_sizes for r in range(rounds)]
    for i, (bs, r) in enumerate(turns):
        for slot in slots:
            if slot.opened < 0 or not _open(slot, settings, make, progress):
                continue
            policy = round_policy(settings.policy, rounds, r == 0)
            if settings.reopen and r > 0:  # a freshly opened backend's first call is not timed
                policy = TimingPolicy(1, policy.min_reps, policy.time_budget_s, policy.max_reps)
            _turn(slot, bs, clips, policy)
            if i == len(turns) - 1:
                out = _finish(slot, clips, settings)
                if out is not None:
                    outputs[slot.rec["key"]] = out
            if settings.reopen or i == len(turns) - 1:
                _close(slot)
        progress(f"batch {bs}: round {r + 1}/{rounds} done")
    return outputs


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
    records, slots = _prepare_rows(rows, env, store, settings, progress)
    try:
        outputs = _time_rows(slots, clips, settings, make, progress)
    finally:
        for slot in slots:
            _close(slot)
    peak = max_rss_mb()
    for slot in slots:
        if "memory" in slot.rec:
            slot.rec["memory"]["process_peak_rss_mb"] = peak
        if settings.profile_runs and slot.row.backend == "openvino" and is_ok(slot.rec):
            progress(f"{slot.row.key}: PERF_COUNT profile over {settings.profile_runs} runs")
            _profile(slot.rec, slot.row, make, settings, clips, settings.profile_runs)
    ref_key = REFERENCE.get(settings.device)
    if ref_key in outputs:
        for rec in records:
            if rec["key"] in outputs:
                rec["fidelity"] = fidelity(outputs[ref_key], outputs[rec["key"]], settings.threshold)
    return records
