"""``mmdet-bench``: PyTorch vs ONNX Runtime vs TensorRT, model-level and end-to-end, in one report.

``mmdet-bench --out DIR ...`` is a thin layer over :func:`mmdet_deploy.benchmarks.suite.run_benchmark`;
``mmdet-bench int8 --fp32 M.onnx --int8 M.int8.onnx --calib DIR`` over
:func:`mmdet_deploy.benchmarks.int8.int8_benchmark`;
``mmdet-bench faces --out DIR`` over :func:`mmdet_deploy.benchmarks.face_report.run_faces_benchmark`;
``mmdet-bench ray --model M.onnx --out DIR`` over
:func:`mmdet_deploy.benchmarks.engines.engine_benchmark`;
``mmdet-bench vqvae --out DIR`` over :func:`mmdet_deploy.benchmarks.vqvae.vqvae_benchmark`.
"""

from __future__ import annotations

from pathlib import Path

import typer

from mmdet_deploy.cli.common import setup_logging, user_errors
from mmdet_deploy.errors import UsageError

app = typer.Typer(
    name="mmdet-bench",
    help="Benchmark every backend and precision this machine can run, and the whole pipeline, in one report.",
    add_completion=False,
    pretty_exceptions_enable=False,
)


def parse_batch_sizes(text: str | None) -> tuple[int, ...] | None:
    """``"1,4"`` -> (1, 4); raises :class:`UsageError` on anything but positive integers."""
    if text is None:
        return None
    try:
        sizes = tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise UsageError(f"--batch-sizes {text!r}: expected comma-separated positive integers, e.g. 1,4") from None
    if not sizes or any(s < 1 for s in sizes):
        raise UsageError(f"--batch-sizes {text!r}: expected comma-separated positive integers, e.g. 1,4")
    return sizes


def _list_rows(device: str, compile_: bool) -> None:
    from mmdet_deploy.benchmarks.capabilities import CAPABILITIES, availability, probe_environment

    env = probe_environment({"compile"} if compile_ else ())
    for row in CAPABILITIES:
        typer.echo(f"{row.key:28s} {row.label:42s} {availability(row, env, device).status}")


@app.callback(invoke_without_command=True)
@user_errors
def bench(
    ctx: typer.Context,
    out: Path = typer.Option(None, "--out", help="Folder for report.md/json/png, artefacts and work files."),
    weights: Path = typer.Option(None, help="Checkpoint to benchmark; default: seeded demo weights of --config."),
    config: str = typer.Option("base", help="Model configuration: base (the real model) or tiny (tests, CI)."),
    head: str = typer.Option("simplified", help="Head: simplified or fc."),
    batch_sizes: str = typer.Option(None, help="Comma-separated clips per call; default 1,4 (1,2 for base on CPU)."),
    device: str = typer.Option("cpu", help="cpu or cuda: which rows run (the others are listed with a reason)."),
    quick: bool = typer.Option(False, "--quick", help="Short timing budget and a small media folder (CI)."),
    e2e: bool = typer.Option(True, "--e2e/--no-e2e", help="Also run the end-to-end pipeline and the seed baseline."),
    rows: str = typer.Option(None, help="Comma-separated row names or keys to run (see --list-rows); default all."),
    time_budget: float = typer.Option(None, "--time-budget", help="Timed seconds per row and batch size."),
    min_reps: int = typer.Option(None, help="Minimum timed calls per row and batch size (3 for base)."),
    warmup: int = typer.Option(None, help="Untimed warm-up calls before timing."),
    cache_dir: Path = typer.Option(None, help="Where to build artefacts (reused between runs); default OUT/artefacts."),
    threads: int = typer.Option(None, help="Intra-op threads of every backend; default: physical cores."),
    compile_: bool = typer.Option(False, "--compile", help="Add the torch.compile rows (slow to compile)."),
    fidelity_clips: int = typer.Option(4, help="Clips compared against PyTorch fp32."),
    isolate: bool = typer.Option(True, "--isolate/--no-isolate", help="Run each row in a fresh process."),
    e2e_row: str = typer.Option(None, help="Matrix row the pipeline runs on; default: the fastest CPU row that "
                                "keeps PyTorch's decisions (on CUDA: TensorRT fp16, ...)."),
    e2e_batch: int = typer.Option(None, help="Pipeline batch size; default the smallest (CPU) / largest (GPU)."),
    workers: int = typer.Option(2, help="Preprocessing threads of the pipeline."),
    interleave: bool = typer.Option(False, "--interleave/--no-interleave", help="Every row in this process, timed "
                                    "in alternating rounds (ratios side by side); memory is then per process."),
    rounds: int = typer.Option(3, "--rounds", min=1, help="--interleave: timing rounds per batch size."),
    reopen: bool = typer.Option(False, "--reopen", help="--interleave: open each row's backend only for its turn "
                                "(one model in memory at a time; a warm-up call per turn)."),
    profile: int = typer.Option(0, "--profile", min=0, metavar="RUNS", help="--interleave: OpenVINO per-layer "
                                "counters (PERF_COUNT) of each OpenVINO row over RUNS runs."),
    calibration: str = typer.Option("synthetic", help="synthetic, or media: INT8 calibrated on, and timing and "
                                    "fidelity measured on, a calibration set sampled from generated media."),
    calibration_files: int = typer.Option(24, "--calibration-files", min=10, help="--calibration media: files."),
    list_rows: bool = typer.Option(False, "--list-rows", help="Print the capability table for this machine, exit."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging."),
) -> None:
    """Measure latency, throughput, memory and fidelity per backend, and the pipeline against the seed's."""
    if ctx.invoked_subcommand is not None:
        # By name: Typer ships its own copy of click, so click's ParameterSource enum is another class.
        given = [name for name in ctx.params if getattr(ctx.get_parameter_source(name), "name", "") != "DEFAULT"]
        if given:
            raise UsageError(f"options {given} belong to the main benchmark, not to '{ctx.invoked_subcommand}'")
        return
    setup_logging(verbose=verbose)
    if list_rows:
        _list_rows(device, compile_)
        return
    if out is None:
        raise UsageError("--out is required: the folder that receives the report and the artefacts")
    from mmdet_deploy.benchmarks.report import TARGET_COLUMNS, markdown_table, target_rows
    from mmdet_deploy.benchmarks.status import is_ok
    from mmdet_deploy.benchmarks.suite import BenchSettings, run_benchmark

    settings = BenchSettings(
        out=out, weights=weights, config=config, head=head, device=device, batch_sizes=parse_batch_sizes(batch_sizes),
        quick=quick, e2e=e2e, rows=tuple(r.strip() for r in rows.split(",")) if rows else None,
        time_budget_s=time_budget, min_reps=min_reps, warmup=warmup, cache_dir=cache_dir, threads=threads,
        compile=compile_, fidelity_clips=fidelity_clips, isolate=isolate, e2e_row=e2e_row, e2e_batch=e2e_batch,
        workers=workers, interleave=interleave, rounds=rounds, reopen=reopen, profile_runs=profile,
        calibration=calibration,
        calibration_files=calibration_files,
    )  # fmt: skip
    report = run_benchmark(settings, progress=lambda msg: typer.echo(msg, err=True))
    typer.echo("\n".join(markdown_table(TARGET_COLUMNS, target_rows(report["targets"]))))
    for row in report["rows"]:
        figures = ", ".join(
            f"b{bs}: {f['p50_ms_per_clip']:.4g} ms/clip" for bs, f in row["batches"].items() if is_ok(f)
        )
        typer.echo(f"{row['key']:28s} {row['status'][:70]:70s} {figures}")
    typer.echo(f"report: {report['paths']['md']} (and report.json, report.png)")
    if not any(is_ok(row) for row in report["rows"]):
        typer.echo(f"error: no row could run on --device {device}; see the statuses above", err=True)
        raise typer.Exit(1)


@app.command("int8")
@user_errors
def int8(
    fp32: Path = typer.Option(..., "--fp32", help="The fp32 ONNX model."),
    int8_model: Path = typer.Option(..., "--int8", help="Its INT8 (Q/DQ) ONNX model."),
    calib: Path = typer.Option(..., "--calib", help="Calibration set folder; its held-out split is compared."),
    threads: int = typer.Option(None, "--threads", min=1, help="ONNX Runtime intra-op threads of both models."),
    rounds: int = typer.Option(2, "--rounds", min=1, help="Alternating fp32/INT8 timing rounds."),
    min_reps: int = typer.Option(3, "--min-reps", min=1, help="Minimum timed calls per model and round."),
    budget_s: float = typer.Option(10.0, "--budget-s", min=0.0, help="Timed seconds per model and round."),
    profile: int = typer.Option(0, "--profile", min=0, metavar="RUNS",
                                help="Also profile both models over RUNS calls (kernel time per category)."),
    out: Path = typer.Option(None, "--out", help="Also write the JSON here."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging."),
) -> None:
    """ONNX Runtime fp32 vs INT8 on the same inputs: latency per clip, agreement, cosine, file size (JSON)."""
    import json

    from mmdet_deploy.benchmarks.int8 import int8_benchmark
    from mmdet_deploy.benchmarks.timing import TimingPolicy

    setup_logging(verbose=verbose)
    policy = TimingPolicy(warmup=1, min_reps=min_reps, time_budget_s=budget_s)
    result = int8_benchmark(fp32, int8_model, calib, threads=threads, policy=policy, rounds=rounds,
                            profile_runs=profile)
    text = json.dumps(result, indent=2, sort_keys=True)
    typer.echo(text)
    if result["profile"]:
        from mmdet_deploy.benchmarks.profile import format_profiles

        typer.echo(format_profiles(result["profile"]))
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n", encoding="utf-8")


@app.command("faces")
@user_errors
def faces(
    out: Path = typer.Option(..., "--out", help="Folder for report.md and report.json (generated media, model "
                             "and runs go under it, git-ignored)."),
    real_media: Path = typer.Option(None, "--real-media", help="real-media folder; default $MMDET_REAL_MEDIA or "
                                    "../shared/data/real-media beside the repository."),
    model: Path = typer.Option(None, "--model", help="Tiny-model ONNX for the end-to-end part; default: exported "
                               "from seeded demo weights into OUT/artefacts (needs the export extra)."),
    labels: Path = typer.Option(None, "--labels", help="Hand-labelled photos (JSON); default "
                                "benchmarks/face_labels.json."),
    repeats: int = typer.Option(5, min=1, help="Timed passes over the 10 clip frames per detector."),
    e2e_repeats: int = typer.Option(2, "--e2e-repeats", min=1, help="End-to-end runs per chain (interleaved)."),
    e2e: bool = typer.Option(True, "--e2e/--no-e2e", help="Also run the faces preset end to end."),
    videos: int = typer.Option(6, min=1, help="Generated 720p videos of the end-to-end part."),
    images: int = typer.Option(2, min=0, help="Generated 720p images of the end-to-end part."),
    workers: int = typer.Option(2, min=1, help="Preprocessing threads of the end-to-end part."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging."),
) -> None:
    """Face detectors and chains on real photos and a real clip, and the faces preset end to end."""
    setup_logging(verbose=verbose)
    from mmdet_deploy.benchmarks.face_bench import LABELS
    from mmdet_deploy.benchmarks.face_report import FaceBenchSettings, run_faces_benchmark

    settings = FaceBenchSettings(out=out, real_media=real_media, model=model, repeats=repeats,
                                 e2e_repeats=e2e_repeats, e2e=e2e, videos=videos, images=images, workers=workers,
                                 labels=labels or LABELS)
    report = run_faces_benchmark(settings, progress=lambda msg: typer.echo(msg, err=True))
    for target in report["targets"]:
        typer.echo(f"{target['status']:8s} {target['target']}: {target['measured']}")
    typer.echo(f"report: {out / 'report.md'} (and report.json)")


@app.command("ray")
@user_errors
def ray_engine(
    model: Path = typer.Option(..., "--model", help="The ONNX model every case scores with."),
    out: Path = typer.Option(..., "--out", help="Folder for report.md/json, the generated media and the runs."),
    actors: str = typer.Option("1,2", "--actors", help="Comma-separated actor counts of the ray engine cases."),
    videos: int = typer.Option(6, "--videos", min=0, help="Generated 720p videos (4 s, 25 fps, a moving face)."),
    images: int = typer.Option(2, "--images", min=0, help="Generated 720p images."),
    batch_size: int = typer.Option(4, "--batch-size", min=1, help="Clips per inference call."),
    workers: int = typer.Option(2, "--workers", min=1, help="Preprocessing threads of the local engine."),
    preset: str = typer.Option(None, "--preset", help="faces or frames; default: the model's contract."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging."),
) -> None:
    """The ray engine (local Ray, 1..N actors) against the local engine on the same files: files/s, ratios."""
    from mmdet_deploy.benchmarks.engines import engine_benchmark, format_report
    from mmdet_deploy.benchmarks.synthetic_media import MediaSpec

    setup_logging(quiet=not verbose, verbose=verbose)
    try:
        counts = tuple(int(t) for t in actors.split(",") if t.strip())
    except ValueError:
        counts = ()
    if not counts or min(counts) < 1:
        raise UsageError(f"--actors {actors!r}: expected comma-separated positive integers, e.g. 1,2")
    if videos + images < 1:
        raise UsageError("--videos and --images generate no file at all; ask for at least one")
    report = engine_benchmark(model, out, media=MediaSpec(videos=videos, images=images), actor_counts=counts,
                              batch_size=batch_size, workers=workers, preset=preset,
                              progress=lambda msg: typer.echo(msg, err=True))
    typer.echo(format_report(report))


def parse_sizes(text: str) -> tuple[tuple[int, int], ...]:
    """``"1280x720,640x360"`` -> ((1280, 720), (640, 360)); raises :class:`UsageError` otherwise."""
    try:
        sizes = tuple(tuple(int(v) for v in item.lower().split("x")) for item in text.split(",") if item.strip())
    except ValueError:
        sizes = ()
    if not sizes or any(len(s) != 2 or min(s) < 1 for s in sizes):
        raise UsageError(f"--sizes {text!r}: expected comma-separated WIDTHxHEIGHT, e.g. 1280x720,640x360")
    return sizes  # type: ignore[return-value]


@app.command("vqvae")
@user_errors
def vqvae(
    out: Path = typer.Option(..., "--out", help="Folder for report.md and report.json (artefacts cached inside)."),
    config: str = typer.Option("base", help="VQ-VAE width: base (256, the reference) or tiny (16, CI)."),
    sizes: str = typer.Option("1280x720,640x360", help="Frame sizes timed per frame, WIDTHxHEIGHT,..."),
    backends: str = typer.Option("onnxruntime,openvino", help="VQ-VAE backends timed per frame."),
    threads: int = typer.Option(0, "--threads", min=0, help="Intra-op threads of the VQ-VAE (0: default)."),
    e2e: bool = typer.Option(True, "--e2e/--no-e2e", help="Also time mmdet-run's pipeline end to end."),
    workers: int = typer.Option(2, min=1, help="Preprocessing threads of the end-to-end pipeline."),
    min_reps: int = typer.Option(3, "--min-reps", min=1, help="Minimum timed calls per row."),
    budget_s: float = typer.Option(3.0, "--budget-s", min=0.0, help="Timed seconds per row."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging."),
) -> None:
    """VQ-VAE reconstructions: GFLOP and ms per frame (full vs crop with margin) and end-to-end files/s."""
    from mmdet_deploy.benchmarks.timing import TimingPolicy
    from mmdet_deploy.benchmarks.vqvae import vqvae_benchmark

    setup_logging(verbose=verbose)
    policy = TimingPolicy(warmup=1, min_reps=min_reps, time_budget_s=budget_s, max_reps=max(min_reps, 20))
    names = tuple(b.strip() for b in backends.split(",") if b.strip())
    report = vqvae_benchmark(out, config=config, sizes=parse_sizes(sizes), backends=names, threads=threads,
                             policy=policy, e2e=e2e, workers=workers,
                             progress=lambda msg: typer.echo(msg, err=True))  # fmt: skip
    typer.echo((out / "report.md").read_text(encoding="utf-8"))
    if not any(r.get("status") == "ok" for r in report["per_frame"]):
        typer.echo("error: no VQ-VAE backend could run; see the statuses above", err=True)
        raise typer.Exit(1)


def main() -> None:
    app()
