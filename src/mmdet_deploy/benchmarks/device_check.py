"""Helpers of ``scripts/device_check.sh``: the environment probe and the summary of every step.

::

    python -m mmdet_deploy.benchmarks.device_check env WORK          # env.json; prints the report folder name
    python -m mmdet_deploy.benchmarks.device_check media WORK/media --videos 48 --images 16 --seconds 10 --fps 30
    python -m mmdet_deploy.benchmarks.device_check summary OUT WORK  # OUT/summary.md and OUT/summary.json

The shell script runs each step under ``timeout`` and records ``name rc seconds`` in ``WORK/steps.tsv``;
``summary`` reads whatever the steps left (a step that failed or ran out of time leaves less) and says, for
each figure, where it came from. Nothing here needs torch except the probe's optional CUDA facts.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

#: Modules the steps use, and which steps need them (a missing one is reported, not a crash).
MODULES = {
    "numpy": "all", "cv2": "all", "PIL": "all", "typer": "mmdet-run, mmdet-bench", "rich": "mmdet-run",
    "torch": "weights, gpu_check, e2e, bench", "onnxruntime": "lean runtime (not used on the GPU path)",
    "onnx": "bench (ONNX rows)", "onnxscript": "bench (ONNX export)", "av": "H.264 media and --decoder pyav",
    "skimage": "media (face picture)", "psutil": "bench (memory)", "matplotlib": "bench (report.png)",
    "triton": "torch.compile rows (not run)", "tensorrt": "TensorRT rows (not expected on the lent machine)",
}  # fmt: skip
#: The mmdet-run folders the script writes (WORK/NAME/summary.json).
E2E_RUNS = ("e2e-processes",)
#: Issue 17's end-to-end target (media files per second on the GPU machine).
TARGET_FILES_PER_S = 100.0


def slug(text: str) -> str:
    """``NVIDIA H200`` -> ``nvidia-h200`` (a folder name of letters, digits and dashes)."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "unknown"


#: Import name -> distribution name, where they differ.
DISTRIBUTIONS = {"cv2": "opencv-python-headless", "PIL": "pillow", "skimage": "scikit-image"}


def _version(module: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    names = [DISTRIBUTIONS.get(module, module)] + (["opencv-python"] if module == "cv2" else [])
    for dist in names:
        try:
            return version(dist)
        except PackageNotFoundError:
            continue
    return None


def probe(work: Path) -> dict[str, Any]:
    """Modules, versions, CUDA devices and ``nvidia-smi``; written to ``WORK/env.json``."""
    env: dict[str, Any] = {"python": platform.python_version(), "executable": sys.executable,
                           "platform": platform.platform(), "cores": os.cpu_count(), "modules": {}}  # fmt: skip
    for name, used_by in MODULES.items():
        # found by the import system, version from the distribution: importing them all would take ~20 s
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        env["modules"][name] = {"found": found, "version": _version(name) if found else None, "used_by": used_by}
    env["missing"] = [n for n, m in env["modules"].items() if not m["found"]]
    env["gpus"] = []
    if env["modules"]["torch"]["found"]:
        import torch

        env["torch_cuda"] = torch.version.cuda
        if torch.cuda.is_available():
            for i in range(torch.cuda.device_count()):
                p = torch.cuda.get_device_properties(i)
                env["gpus"].append({"name": p.name, "memory_gib": round(p.total_memory / 2**30, 1),
                                    "capability": f"{p.major}.{p.minor}", "sms": p.multi_processor_count})
    if shutil.which("nvidia-smi"):
        try:
            env["nvidia_smi"] = subprocess.run(
                ["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm", "--format=csv"],
                capture_output=True, text=True, timeout=20,
            ).stdout.strip()
        except (OSError, subprocess.TimeoutExpired) as exc:
            env["nvidia_smi"] = f"failed: {exc}"
    work.mkdir(parents=True, exist_ok=True)
    (work / "env.json").write_text(json.dumps(env, indent=2) + "\n")
    return env


def _load(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _steps(work: Path) -> list[dict[str, Any]]:
    steps = []
    path = work / "steps.tsv"
    if path.is_file():
        for line in path.read_text().splitlines():
            parts = line.split("\t")
            if len(parts) >= 3:
                steps.append({"step": parts[0], "rc": int(parts[1]), "seconds": float(parts[2]),
                              "note": parts[3] if len(parts) > 3 else ""})
    return steps


def _status(rc: int) -> str:
    return {0: "ok", 124: "timed out", 137: "killed (time limit)", 125: "skipped"}.get(rc, f"failed (exit {rc})")


def _e2e_lines(name: str, summary: dict[str, Any] | None, dry_run: bool) -> list[str]:
    if not summary:
        return [f"- {name}: no summary (step did not finish)"]
    stages = ", ".join(f"{k} {v:.2f}" for k, v in summary.get("stage_s", {}).items())
    fps = summary.get("files_per_s", 0.0)
    verdict = "n/a (dry run)" if dry_run else ("met" if fps >= TARGET_FILES_PER_S else "not met")
    return [
        f"- {name}: **{fps:.2f} files/s** ({summary.get('media_files')} media files in {summary.get('wall_s')} s; "
        f"counts {summary.get('counts')}); {summary.get('workers')} {summary.get('worker_kind')}, batch "
        f"{summary.get('batch_size')}, {summary.get('batches')} batches; target >= {TARGET_FILES_PER_S:g} files/s: "
        f"{verdict}",
        f"  - busy seconds by stage: {stages}",
        f"  - frames decoded: {summary.get('frames_decoded')} over {summary.get('videos_decoded')} videos "
        f"({summary.get('frames_decoded_per_video')} per video)",
    ]


def summarise(out: Path, work: Path, dry_run: bool) -> dict[str, Any]:
    """Collect every step's output into ``OUT/summary.json`` and ``OUT/summary.md`` (safe to call repeatedly)."""
    env = _load(work / "env.json") or {}
    steps = _steps(work)
    gpu = _load(work / "gpu_check" / "gpu_check.json")
    decode = _load(work / "decode" / "decode.json")
    e2e = {k: _load(work / k / "summary.json") for k in E2E_RUNS}
    bench_dirs = sorted(p for p in out.glob("*") if p.is_dir() and (p / "report.json").is_file())
    bench = _load(bench_dirs[0] / "report.json") if bench_dirs else None
    summary = {"dry_run": dry_run, "env": env, "steps": steps, "gpu_check": gpu, "decode": decode, "e2e": e2e,
               "bench_report": str(bench_dirs[0].relative_to(out)) if bench_dirs else None,
               "bench_targets": bench.get("targets") if bench else None}  # fmt: skip
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    (out / "summary.md").write_text(markdown(summary, work))
    return summary


def markdown(summary: dict[str, Any], work: Path) -> str:
    env = summary["env"]
    gpus = ", ".join(f"{g['name']} ({g['memory_gib']} GiB, sm {g['capability']})" for g in env.get("gpus", []))
    mode = "DRY RUN (tiny model, CPU): exercises the steps, measures nothing about GPUs" if summary["dry_run"] else \
        "GPU run"
    lines = [f"# Device check: {mode}", "",
             f"Machine: {env.get('cores')} cores, Python {env.get('python')}, GPUs: {gpus or 'none'}; "
             f"missing modules: {', '.join(env.get('missing', [])) or 'none'}.", "",
             "| step | status | seconds | note |", "|---|---|---|---|"]  # fmt: skip
    for s in summary["steps"]:
        lines.append(f"| {s['step']} | {_status(s['rc'])} | {s['seconds']:.1f} | {s['note']} |")
    lines += ["", "## PyTorch precisions, SDPA kernels and CUDA graphs (gpu_check)", ""]
    gpu_md = work / "gpu_check" / "gpu_check.md"
    lines += [gpu_md.read_text()] if gpu_md.is_file() else ["not measured (step did not run or failed)"]
    lines += ["", "## End to end: mmdet-run --backend torch", ""]
    for name, value in summary["e2e"].items():
        lines += _e2e_lines(name, value, summary["dry_run"])
    lines += ["", "## Decoding", ""]
    dec_md = work / "decode" / "decode.md"
    lines += [dec_md.read_text()] if dec_md.is_file() else ["not measured (step did not run or failed)"]
    lines += ["", "## mmdet-bench", ""]
    if summary["bench_report"]:
        lines.append(f"Report: `{summary['bench_report']}/report.md` (commit it as `benchmarks/results/"
                     f"{summary['bench_report']}/`).")
        for t in summary.get("bench_targets") or []:
            value = t.get("value")
            lines.append(f"- {t['target']}: {value if value is None else round(value, 3)} ({t['status']})")
    else:
        lines.append("no report (step did not run or failed)")
    lines += ["", "Logs and every intermediate file: `details.tar.gz`."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_env = sub.add_parser("env")
    p_env.add_argument("work", type=Path)
    p_media = sub.add_parser("media")
    p_media.add_argument("folder", type=Path)
    for name, default in (("--videos", 48), ("--images", 16), ("--fps", 30), ("--workers", os.cpu_count() or 1)):
        p_media.add_argument(name, type=int, default=default)
    p_media.add_argument("--seconds", type=float, default=10.0)
    p_sum = sub.add_parser("summary")
    p_sum.add_argument("out", type=Path)
    p_sum.add_argument("work", type=Path)
    p_sum.add_argument("--dry-run", action="store_true")
    args = parser.parse_args(argv)
    if args.command == "env":
        env = probe(args.work)
        print(f"gpu-{slug(env['gpus'][0]['name'])}" if env["gpus"] else "cpu")
        for name in env["missing"]:
            print(f"missing module: {name} (used by {MODULES[name]})", file=sys.stderr)
    elif args.command == "media":
        from mmdet_deploy.benchmarks.synthetic_media import MediaSpec, generate_media, media_summary

        spec = MediaSpec(videos=args.videos, images=args.images, seconds=args.seconds, fps=args.fps)
        files = generate_media(args.folder, spec, workers=args.workers)
        print(json.dumps(media_summary(files)))
    else:
        summarise(args.out, args.work, args.dry_run)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
