"""The model matrix: every capability row, run (or explained), with fidelity against PyTorch fp32.

For each row of the capability table: decide availability; build its artefact; run it in a fresh worker
process (or in-process when ``isolate`` is off); then compare its outputs on the shared input clips with
the reference row's (PyTorch eager fp32 on the same device), which always runs first.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mmdet_deploy.benchmarks.artefacts import ArtefactStore
from mmdet_deploy.benchmarks.capabilities import REFERENCE, Capability, Environment, availability
from mmdet_deploy.benchmarks.status import failed, status_of
from mmdet_deploy.benchmarks.timing import TimingPolicy
from mmdet_deploy.benchmarks.worker import BackendFactory, RowJob, run_row
from mmdet_deploy.errors import one_line

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MatrixSettings:
    """How to run the rows.

    ``batch_sizes``: clips per call. ``threads``: intra-op threads of every backend (None: library
    default). ``fidelity_clips``: clips compared with the reference. ``isolate``: one worker process per
    row. ``row_timeout_s``: a worker running longer fails its row (seconds). ``threshold``: decision
    threshold on p(fake) for decision agreement. ``interleave``: every row in this process, timed in
    ``rounds`` alternating rounds (:mod:`.interleave`; ``isolate`` is then ignored; ``reopen``: each row's
    backend open only for its turn); ``profile_runs`` > 0 adds OpenVINO's per-layer counters of each
    OpenVINO row.
    """

    device: str = "cpu"
    batch_sizes: tuple[int, ...] = (1, 4)
    policy: TimingPolicy = field(default_factory=TimingPolicy)
    head: str = "simplified"
    config: str = "base"
    threads: int | None = None
    fidelity_clips: int = 4
    isolate: bool = True
    row_timeout_s: float = 3600.0
    threshold: float = 0.5
    interleave: bool = False
    rounds: int = 3
    profile_runs: int = 0
    reopen: bool = False


def backend_options(row: Capability, settings: MatrixSettings) -> dict[str, Any]:
    """Options for :func:`~mmdet_deploy.runtime.backends.create_backend`, from the row and the run settings."""
    options: dict[str, Any] = dict(row.options)
    if row.backend == "torch":
        options.update(precision=row.precision, head=settings.head, config=settings.config)
    if row.backend == "onnxruntime":
        options["providers"] = list(options.get("providers", ()))
        if settings.threads:
            options["intra_op_threads"] = settings.threads
    if row.backend == "openvino" and settings.threads:
        options["threads"] = settings.threads
    return options


def _run_isolated(job: RowJob, work: Path, timeout_s: float) -> dict[str, Any]:
    stem = job.key.replace("@", "_")
    job_path, result_path, log_path = work / f"{stem}.job.json", work / f"{stem}.result.json", work / f"{stem}.log"
    job_path.write_text(job.to_json())
    result_path.unlink(missing_ok=True)
    env = dict(os.environ)
    if job.threads:
        env["OMP_NUM_THREADS"] = str(job.threads)
    cmd = [sys.executable, "-m", "mmdet_deploy.benchmarks.worker", str(job_path), str(result_path)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=env)
    except subprocess.TimeoutExpired as exc:
        log_path.write_text(str(exc.stderr or ""))
        return {"status": failed(f"worker timed out after {timeout_s:.0f} s")}
    log_path.write_text(proc.stdout + proc.stderr)
    if result_path.is_file():
        return json.loads(result_path.read_text())
    tail = one_line("\n".join(proc.stderr.strip().splitlines()[-1:]) or f"exit code {proc.returncode}")
    return {"status": failed(f"worker exited with code {proc.returncode}: {tail}")}


def fidelity(reference: dict[str, Any], outputs: dict[str, Any], threshold: float) -> dict[str, Any]:
    """Max |d logit|, max |d p(fake)| and decision agreement of ``outputs`` against ``reference`` (same clips)."""
    ref_logits, logits = np.asarray(reference["logits"]), np.asarray(outputs["logits"])
    ref_prob, prob = np.asarray(reference["prob_fake"]), np.asarray(outputs["prob_fake"])
    n = min(len(ref_prob), len(prob))
    finite = np.isfinite(logits[:n]).all(axis=1) & np.isfinite(prob[:n])
    return {
        "clips": n,
        "nonfinite": int(n - finite.sum()),
        "max_abs_dlogit": float(np.max(np.abs(ref_logits[:n] - logits[:n]))),
        "max_abs_dprob": float(np.max(np.abs(ref_prob[:n] - prob[:n]))),
        "decision_agreement": float(np.mean((ref_prob[:n] >= threshold) == (prob[:n] >= threshold))),
    }


def _record(row: Capability, status: str) -> dict[str, Any]:
    return {
        "key": row.key,
        "name": row.name,
        "label": row.label,
        "backend": row.backend,
        "precision": row.precision,
        "device": row.device,
        "artefact": row.artefact,
        "options": {k: list(v) if isinstance(v, tuple) else v for k, v in row.options.items()},
        "status": status,
        "batches": {},
        "fidelity": None,
    }


def run_matrix(
    rows: Sequence[Capability],
    env: Environment,
    store: ArtefactStore,
    inputs: Path,
    settings: MatrixSettings,
    work: Path,
    factory: BackendFactory | None = None,
    progress: Callable[[str], None] = log.info,
) -> list[dict[str, Any]]:
    """Run every row (reference first) and return one record per row, in the order of ``rows``.

    ``inputs``: ``.npy`` clips shared by all rows. ``work``: folder for worker jobs and logs.
    ``factory`` replaces :func:`create_backend` (only with ``isolate=False``; tests use fake backends).
    """
    if settings.interleave:
        from mmdet_deploy.benchmarks.interleave import run_interleaved

        return run_interleaved(rows, env, store, inputs, settings, factory, progress)
    if factory is not None and settings.isolate:
        raise ValueError("a custom backend factory needs isolate=False")  # programming error
    work.mkdir(parents=True, exist_ok=True)
    ref_key = REFERENCE.get(settings.device)
    order = sorted(range(len(rows)), key=lambda i: rows[i].key != ref_key)
    records: dict[int, dict[str, Any]] = {}
    outputs: dict[str, dict[str, Any]] = {}
    for i in order:
        row = rows[i]
        avail = availability(row, env, settings.device)
        rec = records[i] = _record(row, avail.status)
        if not avail.runnable:
            progress(f"{row.key}: {avail.status}")
            continue
        artefact = store.get(row.artefact)
        rec.update(
            artefact_path=str(artefact.path) if artefact.path else None, artefact_size_mb=artefact.size_mb,
            build_s=artefact.build_s, build_cached=artefact.cached,
        )  # fmt: skip
        if artefact.error or artefact.path is None:
            rec["status"] = failed(f"building {row.artefact}: {one_line(artefact.error or 'no file')}")
            progress(f"{row.key}: {rec['status']}")
            continue
        job = RowJob(
            key=row.key, backend=row.backend, device=row.device, artefact=str(artefact.path),
            batch_sizes=settings.batch_sizes, inputs=str(inputs), policy=settings.policy,
            options=backend_options(row, settings), fidelity_clips=settings.fidelity_clips,
            threads=settings.threads, isolated=settings.isolate,
        )  # fmt: skip
        progress(f"{row.key}: running ({row.label}, batch sizes {list(settings.batch_sizes)})")
        result = _run_isolated(job, work, settings.row_timeout_s) if settings.isolate else run_row(job, factory)
        rec["status"] = one_line(status_of(result).text)
        for name in ("load_s", "batches", "describe", "memory", "traceback"):
            if name in result:
                rec[name] = result[name]
        if "outputs" in result:
            outputs[row.key] = result["outputs"]
        progress(f"{row.key}: {rec['status']}")
    if ref_key in outputs:
        for rec in records.values():
            if rec["key"] in outputs:
                rec["fidelity"] = fidelity(outputs[ref_key], outputs[rec["key"]], settings.threshold)
    return [records[i] for i in range(len(rows))]
