"""One benchmark run, start to finish: settings, weights, matrix, end-to-end, report.

``mmdet-bench`` is a thin layer over :func:`run_benchmark`; tests call it directly with fake backends.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from mmdet_deploy.benchmarks import e2e as e2e_mod
from mmdet_deploy.benchmarks.artefacts import ArtefactStore, BuildContext, Builder
from mmdet_deploy.benchmarks.capabilities import Environment, probe_environment, select_rows
from mmdet_deploy.benchmarks.flops import flops_per_clip, measure_peak_tflops
from mmdet_deploy.benchmarks.machine import load_average, machine_info
from mmdet_deploy.benchmarks.matrix import MatrixSettings, backend_options, run_matrix
from mmdet_deploy.benchmarks.report import write_report
from mmdet_deploy.benchmarks.status import E2E_DISABLED, failed, not_run
from mmdet_deploy.benchmarks.synthetic_media import MediaSpec, generate_media, media_summary, sample_clips
from mmdet_deploy.benchmarks.targets import add_compute_figures, evaluate_targets
from mmdet_deploy.benchmarks.timing import TimingPolicy, as_dict
from mmdet_deploy.benchmarks.worker import BackendFactory
from mmdet_deploy.contract import CONFIGS
from mmdet_deploy.errors import UsageError, one_line

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BenchSettings:
    """Everything ``mmdet-bench`` can be told. ``None`` fields take defaults from :func:`resolve`.

    ``time_budget_s``: timed seconds per (row, batch size) beyond the minimum repetitions.
    ``cache_dir``: where artefacts (demo weights, ONNX, INT8, engines) are built; default ``OUT/artefacts``.
    ``interleave``: every row in one process, ``rounds`` alternating timing rounds; ``profile_runs``: OpenVINO
    per-layer counters over that many runs. ``calibration``: ``synthetic`` (INT8 calibrated on synthetic clips,
    fidelity on synthetic clips) or ``media`` (a calibration set sampled from ``calibration_files`` generated
    720p files: INT8 calibrated on its calibration split, timing and fidelity on its held-out clips).
    """

    out: Path
    weights: Path | None = None
    config: str = "base"
    head: str = "simplified"
    device: str = "cpu"
    batch_sizes: tuple[int, ...] | None = None
    quick: bool = False
    e2e: bool = True
    rows: tuple[str, ...] | None = None
    time_budget_s: float | None = None
    min_reps: int | None = None
    warmup: int | None = None
    cache_dir: Path | None = None
    threads: int | None = None
    compile: bool = False
    fidelity_clips: int = 4
    calibration_clips: int | None = None
    isolate: bool = True
    e2e_row: str | None = None
    e2e_batch: int | None = None
    workers: int = 2
    media: MediaSpec | None = None
    seed: int = 0
    interleave: bool = False
    rounds: int = 3
    reopen: bool = False
    profile_runs: int = 0
    calibration: str = "synthetic"
    calibration_files: int = 24


def _physical_cores() -> int:
    try:
        import psutil

        return int(psutil.cpu_count(logical=False) or os.cpu_count() or 1)
    except ImportError:
        return os.cpu_count() or 1


def resolve(s: BenchSettings) -> BenchSettings:
    """Fill the defaults that depend on the model size, the device and ``--quick``; validate the rest.

    Base on CPU: batch sizes 1,2; warm-up 1; at least 3 repetitions; 20 s per cell (one base forward is
    about 10 s per clip on 2 cores). Tiny: batch sizes 1,4; warm-up 2; at least 5 repetitions; 2 s.
    ``--quick``: warm-up 1, at least 3 repetitions, 0.3 s, a smaller media folder.
    """
    if s.config not in CONFIGS:
        raise UsageError(f"unknown --config {s.config!r}; choose one of {', '.join(CONFIGS)}")
    if s.head not in ("simplified", "fc"):
        raise UsageError(f"--head {s.head!r}: the benchmark feeds clips only; use simplified or fc")
    if s.device not in ("cpu", "cuda"):
        raise UsageError(f"unknown --device {s.device!r}; use cpu or cuda")
    big = s.config == "base" and s.device == "cpu"
    batch_sizes = s.batch_sizes or ((1, 2) if big else (1, 4))
    if any(b < 1 for b in batch_sizes):
        raise UsageError(f"--batch-sizes must be positive integers, got {list(batch_sizes)}")
    if s.quick:
        defaults = (1, 3, 0.3)
    else:
        defaults = (1, 3, 20.0) if s.config == "base" else (2, 5, 2.0)
    warmup = defaults[0] if s.warmup is None else s.warmup
    min_reps = defaults[1] if s.min_reps is None else s.min_reps
    budget = defaults[2] if s.time_budget_s is None else s.time_budget_s
    TimingPolicy(warmup, min_reps, budget)  # validates
    if s.fidelity_clips < 1 or s.workers < 1 or s.rounds < 1:
        raise UsageError("--fidelity-clips, --workers and --rounds must be at least 1")
    if s.calibration not in ("synthetic", "media"):
        raise UsageError(f"--calibration {s.calibration!r}: choose synthetic or media")
    if s.calibration_files < 10 or s.profile_runs < 0:
        raise UsageError("--calibration-files must be at least 10 (5 held out by file) and --profile at least 0")
    media = s.media or (
        MediaSpec(videos=2, images=1, seconds=2.0) if s.quick
        # base: 8 files (~25 s of pipeline on 2 cores), so that filling and draining the pipeline (the first
        # file's decode and face detection, ~0.6 s) does not dominate a steady-state overlap figure
        else MediaSpec(videos=6, images=2, seconds=4.0) if s.config == "base" else MediaSpec(videos=4, images=2)
    )  # fmt: skip
    e2e_batch = s.e2e_batch or (min(batch_sizes) if s.device == "cpu" else max(batch_sizes))
    return replace(
        s, batch_sizes=tuple(sorted(set(batch_sizes))), warmup=warmup, min_reps=min_reps, time_budget_s=budget,
        cache_dir=s.cache_dir or s.out / "artefacts", threads=s.threads or _physical_cores(), media=media,
        calibration_clips=s.calibration_clips or (8 if s.config == "base" else 16), e2e_batch=e2e_batch,
    )  # fmt: skip


def scratch_dir(path: Path) -> Path:
    """Create a folder of generated files inside OUT, with a ``.gitignore`` of ``*``.

    A report folder can then be committed as it is (report.md/json/png) without the gigabytes of
    artefacts, media and worker files beside it.
    """
    path.mkdir(parents=True, exist_ok=True)
    ignore = path / ".gitignore"
    if not ignore.exists():
        ignore.write_text("# generated by mmdet-bench: artefacts, media and work files are not committed\n*\n")
    return path


def _weights(s: BenchSettings) -> tuple[Path, bool]:
    if s.weights is not None:
        return s.weights, False
    assert s.cache_dir is not None
    path = s.cache_dir / f"demo-{s.config}-seed{s.seed}.pth"
    if not path.is_file():
        from mmdet_deploy.model import write_demo_checkpoint

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            write_demo_checkpoint(path, config=s.config, seed=s.seed)
    return path, True


def _peaks(device: str, threads: int, env: Environment) -> dict[str, Any]:
    """Measured matmul peaks of ``device`` by dtype (none for CUDA on a machine without it)."""
    if "torch" not in env.modules or (device == "cuda" and env.cuda_devices == 0):
        return {}
    import torch

    torch.set_num_threads(threads)
    dtypes = ("float32",) if device == "cpu" else ("float32", "float16", "bfloat16")
    return {f"{device}:{d}": measure_peak_tflops(device, d) for d in dtypes}


def _notes(s: BenchSettings, policy: TimingPolicy, fidelity_clips: int) -> list[str]:
    inputs = (
        f"Inputs: the {fidelity_clips} held-out clips (split by file) of a calibration set sampled with the runtime's "
        f"preprocessing from {s.calibration_files} generated 720p files (benchmarks/synthetic_media.py); the INT8 "
        "artefacts are calibrated on its calibration split" if s.calibration == "media" else
        "Inputs: deterministic synthetic face clips (benchmarks/synthetic_media.py)"
    )
    return [
        f"Timing: {policy.warmup} warm-up call(s) excluded, then calls until >= {policy.min_reps} samples and "
        f">= {policy.time_budget_s} s timed (cap {policy.max_reps}); time.perf_counter_ns around each call, after a "
        "device synchronise on CUDA; p50/p95 by linear interpolation between closest ranks (NumPy 'linear').",
        *([f"Interleaved: every row in one process; {s.rounds} rounds per batch size, each row timed in turn "
           f"with 1/{s.rounds} of the policy, samples pooled; "
           + ("each row's backend opened for its turn and closed after it (one model in memory at a time), "
              "one untimed warm-up call per turn." if s.reopen else
              "every backend open throughout, warm-up in the first round only.")]
          if s.interleave else []),
        "Latency per clip = batch latency / batch size; clips/s = batch size / p50 batch latency.",
        f"{inputs}; original = recons as in the seed; fidelity on the first {fidelity_clips} clips against PyTorch "
        "eager fp32 on the same device; decision = p(fake) >= 0.5.",
        "Memory: rows share one process; RSS delta = RSS growth when the row's backend opened; the process's "
        "high-water mark is in report.json (memory.process_peak_rss_mb)." if s.interleave else
        "Memory: each row in a fresh worker process; peak RSS = VmHWM of that process (interpreter "
        "and libraries included), RSS delta = peak - RSS before the backend was created; GPU = largest increase "
        "of device-level used memory (cudaMemGetInfo) over the row." if s.isolate else
        "Memory: rows in-process; peak RSS sampled with psutil every 5 ms.",
        "FLOPs: analytic count (2 FLOPs per multiply-accumulate; convolutions, linear layers and attention "
        "products), equal to torch.utils.flop_counter on the model; TFLOP/s = FLOPs per clip x clips/s; "
        "% peak = against a torch.mm measured in the same run (fp32 on CPU; fp16/bf16 on GPU for those rows).",
        f"Threads: {s.threads} intra-op threads for every backend and the peak measurement.",
        "Load s = backend creation and open (artefact read, session/engine set-up); build s = artefact build "
        + ("(export, quantisation; INT8 calibrated on the calibration split of the media set above)."
           if s.calibration == "media" else
           f"(export, quantisation; INT8 calibrated on {s.calibration_clips} synthetic clips: a speed benchmark, "
           "not an accuracy claim)."),
        "End-to-end: both sides warmed up and timed in steady state on the same generated 720p files and weights; "
        "overlap efficiency = pipeline clips/s / model-only clips/s of the same row at the pipeline's batch size.",
    ]


def _media_calibration(s: BenchSettings, progress: Callable[[str], None]) -> tuple[Any, np.ndarray]:
    """Sample a calibration set from generated 720p media (faces preset, 20 % of files held out).

    Sampling is deterministic, so a re-run writes the same set (same fingerprint: cached INT8 files stay valid).
    Returns the set and its held-out clips (N, T, 3, H, W).
    """
    from mmdet_deploy.calibration.dataset import HOLDOUT
    from mmdet_deploy.calibration.sampling import sample_calibration_set
    from mmdet_deploy.contract import ModelContract

    assert s.cache_dir is not None
    videos = s.calibration_files // 2
    spec = MediaSpec(videos=videos, images=s.calibration_files - videos, seconds=2.0, seed=s.seed + 7)
    progress(f"calibration: generating {s.calibration_files} media files and sampling a calibration set")
    folder = generate_media(scratch_dir(s.out / "media-calibration"), spec)[0].parent
    calib = sample_calibration_set(
        folder, s.cache_dir / f"calibration-media-{s.config}", contract=ModelContract(config=s.config, head=s.head),
        preset="faces", clips=s.calibration_files, seed=s.seed, min_clips=10, holdout=0.2, overwrite=True,
    )  # fmt: skip
    held = [calib.load(e)["original"] for e in calib.split(HOLDOUT)]
    if not held:
        raise UsageError(f"{calib.root}: no held-out clip; use more --calibration-files")
    return calib, np.stack(held)


def _calibration_summary(calib: Any, fidelity_clips: int) -> dict[str, Any]:
    if calib is None:
        return {"source": "synthetic face clips", "fidelity_clips": fidelity_clips}
    return {"source": "calibration set sampled from generated media", "root": str(calib.root),
            "fingerprint": calib.fingerprint, "counts": calib.manifest["counts"], "fidelity_clips": fidelity_clips,
            "split_unit": calib.manifest["split_unit"]}


def run_benchmark(
    settings: BenchSettings,
    factory: BackendFactory | None = None,
    builders: Mapping[str, Builder] | None = None,
    progress: Callable[[str], None] = log.info,
) -> dict[str, Any]:
    """Run the whole benchmark described by ``settings``, write the report files, return the report dict.

    ``factory`` (backend creation) and ``builders`` (artefact builders) replace the real ones in tests;
    a custom ``factory`` runs rows in-process.
    """
    started, t_start, load_start = datetime.now(timezone.utc), time.perf_counter(), load_average()
    s = resolve(settings)
    assert s.cache_dir is not None and s.threads is not None and s.media is not None and s.batch_sizes is not None
    rows = select_rows(s.rows)  # validated before anything is written
    if s.weights is not None and not s.weights.is_file():
        raise UsageError(f"--weights {s.weights}: no such file")
    work = scratch_dir(s.out / "work")
    if settings.cache_dir is None:  # the default cache lies inside OUT
        scratch_dir(s.cache_dir)
    policy = TimingPolicy(s.warmup or 0, s.min_reps or 1, s.time_budget_s or 0.0)
    env = probe_environment({"compile"} if s.compile else ())
    progress(f"machine: {s.threads} threads, CUDA devices: {env.cuda_devices}")
    weights, demo = _weights(s)
    calib, fidelity_clips = None, s.fidelity_clips
    if s.calibration == "media":
        calib, clips = _media_calibration(s, progress)
        fidelity_clips = len(clips)
        clips = np.resize(clips, (max(len(clips), max(s.batch_sizes)), *clips.shape[1:]))  # cycled for big batches
    else:
        clips = sample_clips(max(max(s.batch_sizes), s.fidelity_clips), seed=s.seed)
    inputs = work / "inputs.npy"
    np.save(inputs, clips)
    progress("measuring the machine's peak with a large matmul")
    peaks = _peaks(s.device, s.threads, env)
    ctx = BuildContext(weights, s.config, s.head, s.cache_dir,
                       lambda: sample_clips(s.calibration_clips or 8, seed=s.seed + 1), s.device,
                       max(s.batch_sizes), calibration_set=calib.root if calib else None,
                       calibration_tag=f"media:{calib.fingerprint}" if calib else
                       f"synthetic:{s.calibration_clips}:seed{s.seed + 1}")  # fmt: skip
    store = ArtefactStore(ctx, builders)
    msettings = MatrixSettings(
        device=s.device, batch_sizes=s.batch_sizes, policy=policy, head=s.head, config=s.config, threads=s.threads,
        fidelity_clips=fidelity_clips, isolate=s.isolate and factory is None, interleave=s.interleave,
        rounds=s.rounds, profile_runs=s.profile_runs, reopen=s.reopen,
    )  # fmt: skip
    records = run_matrix(rows, env, store, inputs, msettings, work, factory, progress)
    flops = flops_per_clip(s.config, s.head)
    add_compute_figures(records, flops, peaks)
    e2e = None
    if s.e2e:
        try:
            e2e = _end_to_end(s, records, weights, clips, policy, msettings, work, factory, progress)
        except Exception as exc:  # the matrix took minutes: still write it, with the failure in the report
            log.exception("end-to-end run failed")
            e2e = {"status": failed(f"{type(exc).__name__}: {one_line(exc)}")}
    report = {
        "started": started.isoformat(timespec="seconds"),
        "duration_s": time.perf_counter() - t_start,
        "machine": {**machine_info(s.threads), "load_average": {"start": load_start, "end": load_average()}},
        "model": {"config": s.config, "head": s.head, "weights": str(weights), "demo_weights": demo,
                  "flops_per_clip": flops},
        "settings": {"batch_sizes": list(s.batch_sizes), "device": s.device, "quick": s.quick,
                     "rows": list(s.rows) if s.rows else None, "compile": s.compile, "isolate": msettings.isolate,
                     "interleave": s.interleave, "rounds": s.rounds, "reopen": s.reopen,
                     "profile_runs": s.profile_runs,
                     "calibration": s.calibration, "cache_dir": str(s.cache_dir), "policy": as_dict(policy)},
        "calibration": _calibration_summary(calib, fidelity_clips),
        "method": {"threads": s.threads, "notes": _notes(s, policy, fidelity_clips)},
        "peaks": peaks,
        "artefacts": [a.as_dict() for a in store.built()],
        "rows": records,
        "e2e": e2e or {"status": E2E_DISABLED},
        "targets": evaluate_targets(records, e2e, s.calibration),
    }  # fmt: skip
    report["paths"] = {k: str(v) for k, v in write_report(report, s.out).items()}
    return report


def _end_to_end(
    s: BenchSettings, records: list[dict[str, Any]], weights: Path, clips: np.ndarray, policy: TimingPolicy,
    msettings: MatrixSettings, work: Path, factory: BackendFactory | None, progress: Callable[[str], None],
) -> dict[str, Any]:  # fmt: skip
    assert s.media is not None
    record = e2e_mod.choose_row(records, s.device, s.e2e_row)
    if record is None:
        wanted = s.e2e_row or " / ".join(e2e_mod.E2E_PREFERENCE.get(s.device, ()))
        return {"status": not_run(f"no row to run the pipeline on ({wanted} did not run)")}
    progress(f"end-to-end: generating media ({s.media})")
    files = generate_media(scratch_dir(s.out / "media"), s.media)
    from mmdet_deploy.benchmarks.capabilities import CAPABILITIES

    row = next(r for r in CAPABILITIES if r.key == record["key"])
    options = backend_options(row, msettings)
    settings = e2e_mod.E2ESettings(batch_size=s.e2e_batch or 1, workers=s.workers)
    progress(f"end-to-end: mmdet-run pipeline on {record['key']}")
    pipeline = e2e_mod.run_pipeline(files, record, options, settings, work, clips, policy, factory)
    progress(f"end-to-end: {pipeline['files_per_s']:.3g} files/s; now the seed-style baseline")
    seed = e2e_mod.run_seed(files, weights, s.config, s.head, s.device, clips)
    progress(f"end-to-end: seed-style {seed['files_per_s']:.3g} files/s")
    out = e2e_mod.compare(pipeline, seed)
    out.update(media=media_summary(files), batch_size=settings.batch_size, workers=settings.workers)
    return out
