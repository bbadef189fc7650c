"""What the VQ-VAE reconstructions cost: per frame (full frame vs crop with margin) and end to end.

``mmdet-bench vqvae --out DIR`` (a thin layer over :func:`vqvae_benchmark`) writes ``report.json`` and
``report.md``:

* **per frame**: analytic GFLOP (:mod:`~mmdet_deploy.benchmarks.vqvae_cost`) and measured milliseconds of the
  real-width VQ-VAE (seeded demo weights of width 256, 512 codes: speed is real, reconstructions are not) on
  each CPU backend: the full frame, the 224 crop by the margin method, and the same two with the reference's
  JPEG steps (what the run does). All rows are timed in one process, one after the other, with the
  package's one timing method (:mod:`~mmdet_deploy.benchmarks.timing`), so their ratios compare like
  with like.
* **end to end**: files/s of ``mmdet-run``'s pipeline, ``frames`` preset, on generated 720p media, with
  ``recons`` = original, VQ-VAE by the margin method (with and without JPEG), and VQ-VAE on full frames
  (the reference's way), on the same files, with the tiny detector (the VQ-VAE's cost is the subject) on
  each CPU backend (ONNX Runtime: every variant; OpenVINO: original and the official margin method).
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from mmdet_deploy.benchmarks.machine import load_average, machine_info
from mmdet_deploy.benchmarks.timing import TimingPolicy, TimingResult, as_dict, measure
from mmdet_deploy.benchmarks.vqvae_cost import cost_table
from mmdet_deploy.errors import UsageError
from mmdet_deploy.runtime.recons import IdentityReconstruction, ReconstructionSource, VQVAEReconstructor
from mmdet_deploy.runtime.recons_vqvae import VQVAEReconstruction

log = logging.getLogger(__name__)

SIZES = ((1280, 720), (640, 360))
#: Which analytic cost each timed method incurs.
METHOD_COST = {"full": "full", "full_jpeg": "full", "crop": "crop", "crop_jpeg": "crop_jpeg"}


def _artefacts(work: Path, config: str, detector_too: bool, progress: Callable[[str], None]) -> tuple[Path, Path]:
    """Demo VQ-VAE of ``config`` exported to ONNX, and (``detector_too``) the tiny detector for the frames
    preset; files already in ``work`` are reused."""
    from mmdet_deploy.export import export_onnx
    from mmdet_deploy.export.vqvae_export import export_vqvae
    from mmdet_deploy.model import write_demo_checkpoint
    from mmdet_deploy.model.vqvae_io import write_vqvae_demo

    work.mkdir(parents=True, exist_ok=True)
    vqvae = work / f"vqvae-{config}.onnx"
    detector = work / "detector-tiny.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if not vqvae.is_file():
            progress(f"exporting the {config} VQ-VAE (demo weights) to {vqvae}")
            export_vqvae(write_vqvae_demo(work / f"vqvae-{config}.pt", config), vqvae, check=False)
        if detector_too and not detector.is_file():
            progress(f"exporting the tiny detector to {detector}")
            weights = write_demo_checkpoint(work / "detector-tiny.pth", config="tiny")
            export_onnx(weights, detector, config="tiny", preset="frames", recons="vqvae", check=False)
    return vqvae, detector


def _frame(width: int, height: int) -> np.ndarray:
    from mmdet_deploy.benchmarks.synthetic_media import astronaut_head, render_frame

    rng = np.random.default_rng(0)
    return render_frame(rng, astronaut_head(), width, height, 0.5)


def per_frame(vqvae: Path, sizes: tuple[tuple[int, int], ...], backends: tuple[str, ...], threads: int,
              policy: TimingPolicy, progress: Callable[[str], None]) -> list[dict[str, Any]]:  # fmt: skip
    """Milliseconds per frame of each method on each backend. The methods of one backend and frame size are
    timed in alternating rounds (one call of each per round, ``policy.min_reps`` rounds after one warm-up
    call each), so a change of machine load affects them alike and their ratios stay comparable."""
    rows = []
    for backend in backends:
        try:
            rec = VQVAEReconstructor(vqvae, backend=backend, threads=threads)
        except Exception as exc:  # a backend that cannot run here still gets its row, with the reason
            rows.append({"backend": backend, "status": f"unavailable: {type(exc).__name__}: {exc}"})
            continue
        official = VQVAEReconstruction(rec, jpeg=True)
        for width, height in sizes:
            frame = _frame(width, height)
            methods = {
                "full": lambda f=frame, r=rec: r(f[None]),
                "crop": lambda f=frame, r=rec: r.center_crop(f[None]),
                "full_jpeg": lambda f=frame, o=official: o.full_pair(f),
                "crop_jpeg": lambda f=frame, o=official: o.center_pair(f, 224),
            }
            samples: dict[str, list[int]] = {m: [] for m in methods}
            for round_ in range(max(1, policy.min_reps)):
                progress(f"timing {backend} {width}x{height}: round {round_ + 1} of {max(1, policy.min_reps)}")
                for method, fn in methods.items():
                    one = TimingPolicy(warmup=policy.warmup if round_ == 0 else 0, min_reps=1, time_budget_s=0.0,
                                       max_reps=1)  # fmt: skip
                    samples[method] += measure(fn, one).samples_ns
            for method, taken in samples.items():
                timing = TimingResult(tuple(taken))
                rows.append({"backend": backend, "status": "ok", "frame": f"{width}x{height}", "method": method,
                             "p50_ms": timing.p50_ms, "p95_ms": timing.p95_ms, "reps": timing.reps,
                             "samples_ms": [s / 1e6 for s in timing.samples_ns]})  # fmt: skip
    return rows


class FullFrameVQVAE(VQVAEReconstruction):
    """The VQ-VAE source at the reference's cost: the whole frame is reconstructed and stored, then cropped."""

    region_pair = ReconstructionSource.region_pair  # the default: full_pair, then cut


#: Detector backends of the end-to-end part; every recons variant runs on the first, the others get the two that
#: matter (original vs the official margin method), to keep the run short.
E2E_BACKENDS = ("onnxruntime", "openvino")


def end_to_end(vqvae: Path, detector: Path, media: Path, workers: int, batch_size: int, max_windows: int,
               progress: Callable[[str], None]) -> dict[str, Any]:  # fmt: skip
    """Files/s of the frames-preset pipeline per detector backend and ``recons`` variant, on the same files."""
    from mmdet_deploy.benchmarks.synthetic_media import MediaSpec, generate_media, media_summary
    from mmdet_deploy.runtime.backends.base import create_backend
    from mmdet_deploy.runtime.discovery import discover
    from mmdet_deploy.runtime.pipeline import run_inference
    from mmdet_deploy.runtime.preprocess import Preprocessor

    files = generate_media(media, MediaSpec(videos=2, images=1, seconds=1.0))
    items = discover(media)
    rec = VQVAEReconstructor(vqvae)
    sources = {
        "original": IdentityReconstruction(),
        "vqvae-crop-jpeg": VQVAEReconstruction(rec, jpeg=True),
        "vqvae-crop": VQVAEReconstruction(rec, jpeg=False),
        "vqvae-full-jpeg": FullFrameVQVAE(rec, jpeg=True),
    }
    out: dict[str, Any] = {"media": media_summary(files), "workers": workers, "batch_size": batch_size,
                           "max_windows": max_windows, "rows": []}  # fmt: skip
    for rank, name in enumerate(E2E_BACKENDS):
        try:
            backend = create_backend(name, detector).open()
        except Exception as exc:  # a backend that cannot run here still gets its row, with the reason
            out["rows"].append({"backend": name, "status": f"unavailable: {type(exc).__name__}: {exc}"})
            continue
        try:
            assert backend.contract is not None
            warm = Preprocessor(backend.contract, "frames", max_windows=1, reconstruction=sources["vqvae-crop-jpeg"])
            run_inference(items[:1], warm, backend, batch_size=batch_size, workers=1)  # first-call costs, untimed
            wanted = sources if rank == 0 else {k: sources[k] for k in ("original", "vqvae-crop-jpeg")}
            base = None
            for recons, source in wanted.items():
                progress(f"end to end: {name} detector, recons {recons}")
                pre = Preprocessor(backend.contract, "frames", max_windows=max_windows, reconstruction=source)
                stats = run_inference(items, pre, backend, batch_size=batch_size, workers=workers)
                base = stats.files_per_s if base is None else base
                out["rows"].append({"backend": name, "status": "ok", "recons": recons,
                                    "files_per_s": stats.files_per_s, "vs_original": stats.files_per_s / base,
                                    "wall_s": stats.wall_s, "windows": stats.windows, "counts": dict(stats.counts),
                                    "stage_s": {k: round(v, 3) for k, v in stats.stage_s.items()}})  # fmt: skip
        finally:
            backend.close()
    ok = {(r["backend"], r["recons"]): r["files_per_s"] for r in out["rows"] if r["status"] == "ok"}
    crop, full = ok.get((E2E_BACKENDS[0], "vqvae-crop-jpeg")), ok.get((E2E_BACKENDS[0], "vqvae-full-jpeg"))
    out["margin_speedup_e2e"] = crop / full if crop and full else None
    return out


def vqvae_benchmark(
    out: Path,
    *,
    config: str = "base",
    sizes: tuple[tuple[int, int], ...] = SIZES,
    backends: tuple[str, ...] = ("onnxruntime", "openvino"),
    threads: int = 0,
    policy: TimingPolicy | None = None,
    e2e: bool = True,
    workers: int = 2,
    batch_size: int = 1,
    max_windows: int = 1,
    progress: Callable[[str], None] = lambda message: None,
) -> dict[str, Any]:
    """Run every part, write ``OUT/report.json`` and ``OUT/report.md``, return the report."""
    from mmdet_deploy.benchmarks.flops import flops_per_clip
    from mmdet_deploy.model.vqvae import get_vqvae_config

    if not sizes:
        raise UsageError("--sizes: give at least one WIDTHxHEIGHT")
    cfg = get_vqvae_config(config)
    policy = policy or TimingPolicy(warmup=1, min_reps=3, time_budget_s=3.0, max_reps=20)
    out = Path(out)
    started = time.time()
    vqvae, detector = _artefacts(out / "artefacts", cfg.name, e2e, progress)
    detector_gflop = flops_per_clip("base") / 1e9
    report: dict[str, Any] = {
        "machine": machine_info(threads or None),
        "load_average_start": load_average(),
        "vqvae": {"config": cfg.name, "width": cfg.width, "codes": cfg.codes, "demo_weights": True},
        "policy": as_dict(policy),
        "threads": threads,
        "cost": cost_table(list(sizes), cfg.width, cfg.codes, detector_gflop),
        "detector_gflop_per_clip_base": detector_gflop,
        "per_frame": per_frame(vqvae, sizes, backends, threads, policy, progress),
    }
    cost = {c["frame"]: c["gflop_per_frame"] for c in report["cost"]}
    for row in report["per_frame"]:
        if row.get("status") == "ok":
            row["gflop"] = cost[row["frame"]][METHOD_COST[row["method"]]]
            row["tflop_per_s"] = row["gflop"] / row["p50_ms"]  # GFLOP per ms
    if e2e:
        report["end_to_end"] = end_to_end(vqvae, detector, out / "media", workers, batch_size, max_windows, progress)
    report["seconds"] = time.time() - started
    report["load_average_end"] = load_average()
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "report.md").write_text(markdown(report))
    for sub in ("artefacts", "media"):
        if (out / sub).is_dir():
            (out / sub / ".gitignore").write_text("*\n")
    return report


def markdown(report: dict[str, Any]) -> str:
    """The human-readable report."""
    v = report["vqvae"]
    lines = [
        f"# VQ-VAE reconstruction cost (width {v['width']}, {v['codes']} codes, demo weights)",
        "",
        f"Machine: {report['machine'].get('cpu', '?')}, {report['machine'].get('logical_cores', '?')} logical cores, "
        f"VQ-VAE threads {report['threads'] or 'default'}; 1-min load average {report['load_average_start']} at the "
        f"start, {report['load_average_end']} at the end (other jobs share this machine).",
        "",
        "## GFLOP per frame and per 10-frame window (analytic)",
        "",
        "| frame | full frame | crop window | GFLOP (x window) | crop window, JPEG | GFLOP (x window) | saving |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in report["cost"]:
        g, gw = c["gflop_per_frame"], c["gflop_per_window"]
        lines.append(
            f"| {c['frame']} | {g['full']:.1f} ({gw['full']:.0f}) | {c['windows']['crop']} | {g['crop']:.1f} "
            f"({gw['crop']:.0f}) | {c['windows']['crop_jpeg']} | {g['crop_jpeg']:.1f} ({gw['crop_jpeg']:.0f}) | "
            f"{c['saving_crop']:.1f}x / {c['saving_crop_jpeg']:.1f}x |"
        )
    lines += ["", f"The detector (base) costs {report['detector_gflop_per_clip_base']:.0f} GFLOP per clip.", "",
              "## Milliseconds per frame (p50)", "", "| backend | frame | method | p50 ms | p95 ms | reps | TFLOP/s |",
              "|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in report["per_frame"]:
        if r.get("status") != "ok":
            lines.append(f"| {r['backend']} | - | - | {r['status']} | | | |")
            continue
        lines.append(f"| {r['backend']} | {r['frame']} | {r['method']} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} | "
                     f"{r['reps']} | {r['tflop_per_s']:.3f} |")  # fmt: skip
    e2e = report.get("end_to_end")
    if e2e:
        m = e2e["media"]
        lines += ["", f"## End to end: frames preset, {m['videos']} videos + {m['images']} image at {m['resolution']}"
                  f", --max-windows {e2e['max_windows']}, {e2e['workers']} workers, tiny detector", "",
                  "| detector | recons | files/s | vs original | reconstruction busy s | inference busy s | wall s |",
                  "|---|---|---|---|---|---|---|"]  # fmt: skip
        for r in e2e["rows"]:
            if r["status"] != "ok":
                lines.append(f"| {r['backend']} | - | {r['status']} | | | | |")
                continue
            lines.append(f"| {r['backend']} | {r['recons']} | {r['files_per_s']:.3f} | {r['vs_original']:.3f} | "
                         f"{r['stage_s'].get('reconstruction', 0.0):.2f} | {r['stage_s']['inference']:.2f} | "
                         f"{r['wall_s']:.1f} |")  # fmt: skip
        if e2e.get("margin_speedup_e2e"):
            lines.append(f"\nCrop with margin vs full-frame reconstruction, end to end: "
                         f"{e2e['margin_speedup_e2e']:.2f}x files/s.")  # fmt: skip
    lines += ["", f"Total benchmark time {report['seconds']:.0f} s. Command: `mmdet-bench vqvae --out DIR`."]
    return "\n".join(lines) + "\n"
