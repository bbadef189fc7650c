"""The ray engine against the local engine on the same files, one after the other in one process: the ray
engine's overhead on one machine and its scaling from 1 to N inference actors.

::

    report = engine_benchmark(Path("model.onnx"), Path("bench/ray"), media=MediaSpec(videos=6, images=2))
    report["ratios"]["ray_1_vs_local"], report["ratios"]["ray_2_vs_ray_1"]

Every case scores the same generated folder (:func:`~mmdet_deploy.benchmarks.synthetic_media.generate_media`)
with :func:`~mmdet_deploy.runtime.run_folder`. Two throughputs per case: ``files_per_s`` over the scoring
step (what a long run converges to) and ``files_per_s_total`` over the whole call (with Ray's start-up and
pre-flight checks, what a short run sees). Each ray case gets ``cores // actors`` ONNX Runtime threads per
actor, so actors do not fight over cores; the local engine uses every core. The rows of every case are
compared with the local engine's (statuses equal, max |d p(fake)|). The load average of the machine is
recorded before and after each case: on a shared machine it says how much the figures can be trusted.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mmdet_deploy.benchmarks.synthetic_media import MediaSpec, generate_media, media_summary
from mmdet_deploy.runtime import RunConfig, run_folder
from mmdet_deploy.runtime.results import load_results


@dataclass(frozen=True)
class EngineCase:
    """One configuration: ``engine`` local or ray, ``actors`` inference actors, ``threads`` ORT threads each."""

    name: str
    engine: str
    actors: int = 1
    threads: int = 0


def cases_for(actor_counts: Sequence[int], cores: int) -> list[EngineCase]:
    """The local engine (all cores), then the ray engine with each actor count (``cores // actors`` threads)."""
    cases = [EngineCase("local", "local")]
    cases += [EngineCase(f"ray_{n}", "ray", n, max(1, cores // n)) for n in actor_counts]
    return cases


def _run_case(case: EngineCase, model: Path, media_dir: Path, out: Path, batch_size: int, workers: int,
              preset: str | None) -> dict[str, Any]:
    options: dict[str, Any] = {"engine": case.engine, "threads": case.threads}
    if case.engine == "ray":
        options |= {"ray_actors": case.actors, "ray_cpus_per_actor": float(case.threads)}
    config = RunConfig(media_dir, model, out, preset=preset, batch_size=batch_size, workers=workers, overwrite=True,
                       **options)
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    summary = run_folder(config)
    total_s = time.perf_counter() - t0
    report = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    media = summary.stats.media_files
    return {
        "case": asdict(case), "exit_code": summary.exit_code, "counts": summary.counts, "media_files": media,
        "scoring_s": round(summary.wall_s, 3), "total_s": round(total_s, 3),
        "files_per_s": round(summary.files_per_s, 4), "files_per_s_total": round(media / total_s, 4),
        "stage_s": report["stage_s"], "windows": report["windows"], "batches": report["batches"],
        "windows_by_actor": report.get("ray", {}).get("windows_by_actor"),
        "load_avg_before": round(load_before, 2), "load_avg_after": round(os.getloadavg()[0], 2),
    }


def _compare(out: Path, reference: str, name: str) -> dict[str, Any]:
    """Rows of case ``name`` against the reference case's: same files and statuses, largest |d p(fake)|."""
    ref = {r.filename: r for r in load_results(out / reference / "results.csv")}
    got = {r.filename: r for r in load_results(out / name / "results.csv")}
    diffs = [abs(got[n].prob_fake - ref[n].prob_fake) for n in ref
             if n in got and got[n].prob_fake is not None and ref[n].prob_fake is not None]
    return {"same_files": ref.keys() == got.keys(),
            "same_statuses": all(n in got and got[n].status == ref[n].status for n in ref),
            "max_abs_diff_prob_fake": max(diffs) if diffs else 0.0}


def engine_benchmark(
    model: Path,
    out: Path,
    *,
    media: MediaSpec = MediaSpec(videos=6, images=2),
    actor_counts: Sequence[int] = (1, 2),
    batch_size: int = 4,
    workers: int = 2,
    preset: str | None = None,
    cores: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run every case of :func:`cases_for` on one generated folder; write ``report.json`` and ``report.md``."""
    out.mkdir(parents=True, exist_ok=True)
    files = generate_media(out / "media", media)
    cores = cores or os.cpu_count() or 1
    results = {}
    for case in cases_for(actor_counts, cores):
        if progress:
            pool = f", {case.actors} actor(s)" if case.engine == "ray" else ""
            progress(f"{case.name}: {case.engine} engine{pool}, {case.threads or 'all'} ONNX Runtime threads")
        results[case.name] = _run_case(case, model, out / "media", out / "runs" / case.name, batch_size, workers,
                                       preset)
    runs = out / "runs"
    parity = {name: _compare(runs, "local", name) for name in results if name != "local"}
    ratios = {f"{name}_vs_local": round(r["files_per_s"] / results["local"]["files_per_s"], 3)
              for name, r in results.items() if name != "local" and results["local"]["files_per_s"]}
    counts = sorted(actor_counts)
    for low, high in zip(counts, counts[1:], strict=False):
        base = results[f"ray_{low}"]["files_per_s"]
        if base:
            ratios[f"ray_{high}_vs_ray_{low}"] = round(results[f"ray_{high}"]["files_per_s"] / base, 3)
    report = {
        "model": str(model), "media": media_summary(files) | asdict(media), "batch_size": batch_size,
        "workers": workers, "cores": cores, "machine": platform.processor() or platform.machine(),
        "cases": results, "parity_vs_local": parity, "ratios": ratios,
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (out / "report.md").write_text(format_report(report), encoding="utf-8")
    return report


def format_report(report: dict[str, Any]) -> str:
    """The report as a Markdown table plus the ratios."""
    lines = [f"# Ray engine vs local engine ({report['date']})", "",
             f"model `{report['model']}`, {report['media']['files']} files ({report['media']['videos']} videos, "
             f"{report['media']['images']} images), batch {report['batch_size']}, {report['cores']} cores", "",
             "| case | actors | threads | files/s (scoring) | files/s (whole run) | scoring s | whole run s | "
             "load before/after | max \\|d p\\| vs local |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, r in report["cases"].items():
        diff = report["parity_vs_local"].get(name, {}).get("max_abs_diff_prob_fake")
        lines.append(f"| {name} | {r['case']['actors'] if r['case']['engine'] == 'ray' else '-'} | "
                     f"{r['case']['threads'] or 'all'} | {r['files_per_s']:.3f} | {r['files_per_s_total']:.3f} | "
                     f"{r['scoring_s']:.1f} | {r['total_s']:.1f} | {r['load_avg_before']} / {r['load_avg_after']} | "
                     f"{'-' if diff is None else f'{diff:.1e}'} |")
    lines += ["", "ratios (files/s over the scoring step): " +
              ", ".join(f"{k} {v:.3f}" for k, v in report["ratios"].items()), ""]
    return "\n".join(lines)
