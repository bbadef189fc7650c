"""``report.json`` (every figure), ``report.md`` (the tables) and ``report.png`` (latency and throughput)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mmdet_deploy.benchmarks.status import is_ok
from mmdet_deploy.deps import require

#: Columns of the model-matrix table in ``report.md``, in order (one line per row and batch size).
MATRIX_COLUMNS = (
    "row", "precision", "device", "status", "batch", "p50 ms/clip", "p95 ms/clip", "clips/s", "TFLOP/s",
    "% peak", "peak RSS MiB", "RSS delta MiB", "GPU MiB", "load s", "build s", "size MiB", "max |d logit|",
    "max |d p(fake)|", "agreement",
)  # fmt: skip
#: Columns of the end-to-end table.
E2E_COLUMNS = (
    "pipeline", "backend", "files", "errors", "files/s", "clips/s", "decode s", "face detection s", "preprocess s",
    "inference s", "writing s", "waiting s", "wall s", "overlap efficiency",
)  # fmt: skip
#: Columns of the targets table.
TARGET_COLUMNS = ("target", "measured", "threshold", "status")


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
            return f"{value:.2e}"
        return f"{value:.{digits}g}"
    return str(value).replace("|", "\\|")


def markdown_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    head = "| " + " | ".join(c.replace("|", "\\|") for c in columns) + " |"
    lines = [head, "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    return lines


def matrix_rows(records: Sequence[dict[str, Any]]) -> list[list[Any]]:
    """One table line per (row, batch size) that ran, one line per row that did not."""
    out: list[list[Any]] = []
    for rec in records:
        mem = rec.get("memory") or {}
        fid = rec.get("fidelity") or {}
        common = [mem.get("peak_rss_mb"), mem.get("rss_delta_mb"), mem.get("gpu_used_mb"), rec.get("load_s"),
                  rec.get("build_s"), rec.get("artefact_size_mb"), fid.get("max_abs_dlogit"),
                  fid.get("max_abs_dprob"), fid.get("decision_agreement")]  # fmt: skip
        batches = rec.get("batches") or {}
        if not is_ok(rec) or not batches:
            out.append([rec["key"], rec["precision"], rec["device"], rec["status"]] + [None] * 6 + common)
            continue
        for bs, fig in sorted(batches.items(), key=lambda kv: int(kv[0])):
            share = fig.get("peak_share")
            out.append(
                [rec["key"], rec["precision"], rec["device"], fig.get("status"), int(bs), fig.get("p50_ms_per_clip"),
                 fig.get("p95_ms_per_clip"), fig.get("clips_per_s"), fig.get("tflops"),
                 100 * share if share is not None else None] + common
            )  # fmt: skip
    return out


def e2e_rows(e2e: dict[str, Any]) -> list[list[Any]]:
    """The pipeline and seed-style lines of the end-to-end table."""
    rows = []
    for name, side in (("mmdet-run pipeline", e2e.get("pipeline")), ("seed-style", e2e.get("seed"))):
        if not side:
            continue
        stages = side.get("stage_s") or side.get("stages_s") or {}
        errors = side.get("counts", {}).get("error") if "counts" in side else len(side.get("errors", {}))
        rows.append(
            [name, side.get("row", "torch-eager-fp32 (batch 1)"), side.get("media_files", side.get("files")), errors,
             side.get("files_per_s"), side.get("clips_per_s"), stages.get("decode"), stages.get("face_detection"),
             stages.get("preprocess"), stages.get("inference"), stages.get("writing"), stages.get("waiting"),
             side.get("wall_s"), side.get("overlap_efficiency")]
        )  # fmt: skip
    return rows


def target_rows(targets: Sequence[dict[str, Any]]) -> list[list[Any]]:
    rows = []
    for t in targets:
        value = t["value"]
        measured = "-" if value is None else f"{value:.3g}{t['unit'] if t['unit'] == 'x' else ''}"
        if value is not None and t["unit"] == "ratio":
            measured = f"{100 * value:.1f} %"
        threshold = f">= {100 * t['threshold']:.0f} %" if t["unit"] == "ratio" else f">= {t['threshold']:g}x"
        if t["unit"] == "max":
            measured, threshold = ("-" if value is None else f"{value:.2g}"), f"<= {t['threshold']:g}"
        detail = f" ({t['detail']})" if t.get("detail") else ""
        rows.append([t["target"], measured + detail, threshold, t["status"]])
    return rows


def _shared_note(start_load: float | None, cores: int | None) -> str:
    """A warning when other work was already loading the machine as the benchmark started."""
    if start_load is None or not cores or start_load <= cores / 2:
        return ""
    return f" (load {start_load:.2f} at start on {cores} cores: other work shared the machine; timings are pessimistic)"


def _calibration_line(calib: dict[str, Any]) -> list[str]:
    if not calib.get("counts"):
        return []
    c = calib["counts"]
    return [f"Inputs and fidelity: the {calib['fidelity_clips']} held-out clips of a calibration set sampled from "
            f"generated media ({c.get('calibration')} calibration / {c.get('holdout')} held out by "
            f"{calib.get('split_unit')}; INT8 calibrated on the former). Set {calib['fingerprint'][:16]}.", ""]


def render_markdown(report: dict[str, Any]) -> str:
    """The human-readable report: machine, model, targets, model matrix, end-to-end and method notes."""
    m, model, method = report["machine"], report["model"], report["method"]
    gpus = ", ".join(g["name"] for g in m.get("gpus", [])) or "none"
    load = m.get("load_average") or {}
    v = m["versions"]
    lines = [
        "# mmdet-bench report",
        "",
        f"- Machine: {m['cpu']}, {m.get('physical_cores')} cores ({m['logical_cores']} logical), "
        f"{m.get('ram_gib')} GiB RAM, GPU: {gpus}; {method['threads']} intra-op threads per backend; CPU features: "
        f"{', '.join(m.get('cpu_features') or []) or 'not reported'}",
        f"- Versions: python {v.get('python')}, torch {v.get('torch')}, onnxruntime "
        f"{v.get('onnxruntime') or v.get('onnxruntime-gpu')}, openvino {v.get('openvino')}, nncf {v.get('nncf')}, "
        f"tensorrt {v.get('tensorrt')}, mmdet-deploy {v.get('mmdet-deploy')}",
        f"- Model: config `{model['config']}`, head `{model['head']}`, {model['flops_per_clip']:.3e} FLOPs per clip; "
        f"weights {model['weights']}{' (seeded demo weights)' if model['demo_weights'] else ''}",
        "- Measured peak (same run): "
        + "; ".join(f"{k} {p['tflops']:.3g} TFLOP/s" for k, p in report["peaks"].items()),
        f"- Started {report['started']}, took {report['duration_s']:.0f} s; 1-min load average at start / end: "
        f"{_fmt(load.get('start'))} / {_fmt(load.get('end'))}{_shared_note(load.get('start'), m['logical_cores'])}",
        "",
        "## Targets",
        "",
        *markdown_table(TARGET_COLUMNS, target_rows(report["targets"])),
        "",
        "## Model matrix",
        "",
        *_calibration_line(report.get("calibration") or {}),
        *markdown_table(MATRIX_COLUMNS, matrix_rows(report["rows"])),
        "",
        "## End-to-end",
        "",
    ]
    e2e = report.get("e2e") or {}
    if e2e.get("pipeline") or e2e.get("seed"):
        media = e2e.get("media", {})
        lines += [
            f"Media: {media.get('files')} files ({media.get('videos')} videos, {media.get('images')} images, "
            f"{media.get('resolution')}); pipeline batch {e2e.get('batch_size')}, {e2e.get('workers')} workers. "
            f"Speed-up over seed-style: {_fmt(e2e.get('speedup_vs_seed'))}x.",
            "",
            *markdown_table(E2E_COLUMNS, e2e_rows(e2e)),
            "",
        ]
    else:
        lines += [f"Not run: {e2e.get('status', 'disabled')}", ""]
    lines += profile_section(report["rows"])
    lines += ["## Method", ""] + [f"- {note}" for note in method["notes"]]
    return "\n".join(lines) + "\n"


def profile_section(records: Sequence[dict[str, Any]]) -> list[str]:
    """OpenVINO's per-layer counters of the profiled rows (``--profile``), by category and by kernel."""
    from mmdet_deploy.benchmarks.ov_profile import format_kernels, format_profiles

    profiles = {r["key"]: r["profile"] for r in records if (r.get("profile") or {}).get("categories")}
    failed = [f"- {r['key']}: {r['profile']['status']}" for r in records if (r.get("profile") or {}).get("status")]
    if not profiles and not failed:
        return []
    runs = next(iter(profiles.values()))["runs"] if profiles else 0
    lines = ["## Where the time goes on OpenVINO (PERF_COUNT)", "",
             f"Per-layer wall time from OpenVINO's own counters, batch 1, mean of {runs} runs after a warm-up, on a "
             "second compilation with PERF_COUNT (after the timing). Counters add overhead per node: read the "
             "shares. Kernels named `*_I8`/`*_i8`/`*_u8` compute in int8, `amx` ones on AMX tiles.", ""]
    if profiles:
        lines += format_profiles(profiles) + [""]
        for key, prof in profiles.items():
            if "int8" in key:
                lines += format_kernels(key, prof) + [""]
    return lines + failed + ([""] if failed else [])


def render_png(report: dict[str, Any], path: Path) -> Path:
    """Latency (p50 with p95 whisker) and throughput per row and batch size, and end-to-end files/s."""
    matplotlib = require("matplotlib", "the report figure")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ran = [r for r in report["rows"] if is_ok(r) and r.get("batches")]
    batch_sizes = sorted({int(b) for r in ran for b, f in r["batches"].items() if is_ok(f)})
    fig, axes = plt.subplots(1, 3, figsize=(17, 5.5), gridspec_kw={"width_ratios": [3, 3, 1.4]})
    width = 0.8 / max(1, len(batch_sizes))
    labels = [r["key"] for r in ran]
    for j, bs in enumerate(batch_sizes):
        xs, p50, p95, cps = [], [], [], []
        for i, r in enumerate(ran):
            fig_bs = r["batches"].get(str(bs), {})
            if is_ok(fig_bs):
                xs.append(i + (j - (len(batch_sizes) - 1) / 2) * width)
                p50.append(fig_bs["p50_ms_per_clip"])
                p95.append(fig_bs["p95_ms_per_clip"])
                cps.append(fig_bs["clips_per_s"])
        err = [[0] * len(p50), [b - a for a, b in zip(p50, p95, strict=True)]]
        axes[0].bar(xs, p50, width, yerr=err, capsize=3, label=f"batch {bs}")
        axes[1].bar(xs, cps, width, label=f"batch {bs}")
    for ax, title, unit in ((axes[0], "latency per clip (p50, whisker p95)", "ms"), (axes[1], "throughput", "clips/s")):
        ax.set_xticks(range(len(labels)))
        ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=8)
        ax.set_title(title)
        ax.set_ylabel(unit)
        if ran:
            ax.legend(fontsize=8)
    e2e = report.get("e2e") or {}
    names, values = [], []
    for name, side in (("pipeline", e2e.get("pipeline")), ("seed-style", e2e.get("seed"))):
        if side and side.get("files_per_s"):
            names.append(name)
            values.append(side["files_per_s"])
    if values:
        axes[2].bar(names, values, color=["tab:green", "tab:gray"][: len(values)])
    else:
        axes[2].text(0.5, 0.5, "not run", ha="center", va="center", transform=axes[2].transAxes)
        axes[2].set_xticks([])
        axes[2].set_yticks([])
    axes[2].set_title("end-to-end")
    axes[2].set_ylabel("files/s")
    model = report["model"]
    fig.suptitle(f"mmdet-bench: {model['config']} model, {report['machine']['cpu']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(report: dict[str, Any], out: Path) -> dict[str, Path]:
    """Write ``report.json``, ``report.md`` and ``report.png`` into ``out``; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "report.json", "md": out / "report.md", "png": out / "report.png"}
    paths["json"].write_text(json.dumps(report, indent=1, default=str) + "\n")
    paths["md"].write_text(render_markdown(report))
    render_png(report, paths["png"])
    return paths
