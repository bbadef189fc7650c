"""Decode throughput: how many frames per second per core the runtime's exact sampling decodes, and how
preprocessing scales with workers as threads and as processes.

::

    python -m mmdet_deploy.benchmarks.decode --out DIR [--workers 1,2] [--copies 8] [--seconds 10] [--fps 30]

The measured work is the runtime's own: :func:`mmdet_deploy.runtime.video_sampling.read_sampled_frames`, the
faces preset's exact sampling of the first 10 s (300 frames of a 30 fps file, 10 kept; by default the
H.264/HEVC frames nothing references are skipped, see :mod:`~mmdet_deploy.runtime.sparse_decode`: frames/s
counts the span's frames, decoded or skipped, and the ``skipped`` column says how many were skipped), and
:func:`~mmdet_deploy.runtime.prepare.prepare_file` (decode, face detection, crops) through the runtime's
thread and process pools. Each configuration reads ``copies`` copies of one generated 720p video (so every
task costs the same; ``--per-worker N`` raises that to N files per worker, so that many workers are not timed
on a handful of files), after an untimed warm-up that also starts the worker processes: figures are steady-
state throughput, and the process start-up is reported apart. PyAV's own frame threading (one file,
``thread_type="AUTO"``) is measured beside FFmpeg's default.
Writes ``decode.json`` and ``decode.md`` in ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from mmdet_deploy.benchmarks.machine import load_average
from mmdet_deploy.benchmarks.synthetic_media import SIZE_720P, video_codec, write_video
from mmdet_deploy.contract import FRAMES, ModelContract
from mmdet_deploy.deps import available
from mmdet_deploy.runtime.decode import resolve_decoder
from mmdet_deploy.runtime.discovery import VIDEO, MediaItem
from mmdet_deploy.runtime.preprocess import MAX_SECONDS, PreparedFile, Preprocessor

MODES = ("threads", "processes")


def decode_one(path: Path, decoder: str, decode_all: bool = False) -> tuple[int, int]:
    """The runtime's exact sampling decode of one file (``decode_all``: as ``--decode-all-frames``); returns
    the span's frames and those of them skipped."""
    from mmdet_deploy.runtime.video_sampling import read_sampled_frames

    sampled = read_sampled_frames(path, FRAMES, MAX_SECONDS, decoder, skip_unneeded=not decode_all)
    return sampled.decoded, sampled.skipped


def _decode_rate(files: Sequence[Path], decoder: str, workers: int, mode: str,
                 decode_all: bool = False) -> dict[str, Any]:  # fmt: skip
    """Frames/s of :func:`decode_one` over ``files`` in ``workers`` threads or (spawned) processes."""
    executor: Any
    if mode == "threads":
        executor = ThreadPoolExecutor(workers)
    else:
        executor = ProcessPoolExecutor(workers, mp_context=get_context("spawn"))
    with executor:
        t0 = time.perf_counter()
        list(executor.map(decode_one, files[:workers], [decoder] * workers))  # warm-up; starts processes
        warm_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        counts = list(executor.map(decode_one, files, [decoder] * len(files), [decode_all] * len(files)))
        wall = time.perf_counter() - t0
    work = "decode, every frame (--decode-all-frames)" if decode_all else "decode"
    return _figures(work, mode, workers, len(files), sum(c[0] for c in counts), wall, warm_s,
                    sum(c[1] for c in counts))


def _prepare_rate(files: Sequence[Path], decoder: str, workers: int, mode: str) -> dict[str, Any]:
    """Files/s of the runtime's own pools (decode + Haar faces + crops) over ``files``."""
    from mmdet_deploy.runtime.prepare_pool import open_prepare_pool

    # Haar alone: in every OpenCV build, so the figure means the same on every machine
    preprocessor = Preprocessor(ModelContract(), "faces", face_detectors=["haar"], decoder=decoder)
    items = [MediaItem(f, f.name, VIDEO) for f in files]
    t0 = time.perf_counter()
    pool = open_prepare_pool(preprocessor, workers, processes=mode == "processes")
    try:
        [f.result() for f in [pool.submit_file(item) for item in items[:workers]]]  # warm-up
        warm_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        outcomes = [f.result() for f in [pool.submit_file(item) for item in items]]
        wall = time.perf_counter() - t0
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    failed = [o for o in outcomes if not isinstance(o, PreparedFile)]
    if failed:
        raise RuntimeError(f"preprocessing failed during the benchmark: {failed[0]}")
    prepared = [o for o in outcomes if isinstance(o, PreparedFile)]
    return _figures("prepare (decode + faces + crops)", mode, workers, len(files),
                    sum(o.frames_decoded or 0 for o in prepared), wall, warm_s, sum(o.frames_skipped for o in prepared))


def _figures(work: str, mode: str, workers: int, files: int, frames: int, wall: float,
             warm_s: float, skipped: int = 0) -> dict[str, Any]:  # fmt: skip
    """Throughput of one configuration; ``warm_s`` is the untimed warm-up (process start-up included);
    ``skipped``: of the ``frames``, those left undecoded because nothing needed them."""
    return {
        "work": work, "mode": mode, "workers": workers, "files": files, "frames": frames, "wall_s": wall,
        "files_per_s": files / wall, "fps": frames / wall, "fps_per_worker": frames / wall / workers,
        "warmup_s": warm_s, "skipped": skipped,
    }  # fmt: skip


def pyav_threading(path: Path, limit: int) -> list[dict[str, Any]]:
    """One file decoded for ``limit`` frames by PyAV with FFmpeg's default threading and with frame threading."""
    if not available("av"):
        return [{"status": "unavailable: av (PyAV) not installed"}]
    import av

    out = []
    for thread_type in ("default", "AUTO"):
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            if thread_type != "default":
                stream.thread_type = thread_type
            t0 = time.perf_counter()
            n = 0
            for _ in container.decode(stream):
                n += 1
                if n >= limit:
                    break
            wall = time.perf_counter() - t0
        out.append({"thread_type": thread_type, "frames": n, "wall_s": wall, "fps": n / wall})
    return out


def run(out: Path, workers: Sequence[int], copies: int, seconds: float, fps: int, decoder: str,
        prepare: bool = True, per_worker: int = 0) -> dict[str, Any]:  # fmt: skip
    """Generate the test video, measure every configuration, write ``decode.json`` and ``decode.md``."""
    media = out / "media"
    media.mkdir(parents=True, exist_ok=True)
    source = media / f"decode_{SIZE_720P[1]}p_{seconds:g}s_{fps}fps.mp4"
    if not source.is_file():
        write_video(source, seed=7, seconds=seconds, fps=fps)
    # hard links (copies where links fail): distinct paths, identical work, no extra disk
    files = []
    def count(n: int) -> int:  # files timed with n workers; the warm-up gives each worker one file
        return max(copies, n, per_worker * n)

    for i in range(max(count(n) for n in workers)):
        link = media / f"copy_{i:03d}.mp4"
        if not link.exists():
            try:
                os.link(source, link)
            except OSError:
                shutil.copyfile(source, link)
        files.append(link)
    chosen = resolve_decoder(decoder)
    report: dict[str, Any] = {
        "video": {"path": source.name, "resolution": f"{SIZE_720P[0]}x{SIZE_720P[1]}", "seconds": seconds,
                  "fps": fps, "codec": video_codec(), "bytes": source.stat().st_size},
        "decoder": chosen, "cores": os.cpu_count(), "load_average_before": load_average(), "copies": copies,
        "per_worker": per_worker, "span_frames": int(fps * MAX_SECONDS), "rows": [],
    }  # fmt: skip
    for n in workers:
        for mode in MODES:
            report["rows"].append(_decode_rate(files[: count(n)], chosen, n, mode, decode_all=True))
            report["rows"].append(_decode_rate(files[: count(n)], chosen, n, mode))
            if prepare:
                report["rows"].append(_prepare_rate(files[: count(n)], chosen, n, mode))
    report["pyav_threading"] = pyav_threading(source, min(int(fps * MAX_SECONDS), 300))
    report["load_average_after"] = load_average()
    out.mkdir(parents=True, exist_ok=True)
    (out / "decode.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "decode.md").write_text(markdown(report))
    return report


def markdown(report: dict[str, Any]) -> str:
    """The report as a Markdown table (figures rounded for reading; decode.json keeps them whole)."""
    v = report["video"]
    lines = [
        f"Decode throughput: {v['resolution']} {v['codec']}, {v['seconds']:g} s at {v['fps']} fps, decoder "
        f"{report['decoder']}, {report['copies']} copies per configuration (at least {report.get('per_worker', 0)} "
        f"per worker), {report['cores']} cores, "
        f"load average {report['load_average_before']} before / {report['load_average_after']} after.",
        "",
        "| work | mode | workers | files/s | frames/s | frames/s per worker | share of frames skipped | warm-up s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in report["rows"]:
        skipped = r.get("skipped", 0) / r["frames"] if r["frames"] else 0.0
        lines.append(f"| {r['work']} | {r['mode']} | {r['workers']} | {r['files_per_s']:.2f} | {r['fps']:.0f} | "
                     f"{r['fps_per_worker']:.0f} | {100 * skipped:.0f} % | {r['warmup_s']:.2f} |")
    lines.append("")
    for r in report.get("pyav_threading", []):
        if "status" in r:
            lines.append(f"PyAV threading: {r['status']}")
        else:
            lines.append(f"PyAV thread_type={r['thread_type']}: {r['fps']:.0f} frames/s on one file ({r['frames']} "
                         "frames)")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    parser.add_argument("--copies", type=int, default=8, help="files per configuration")
    parser.add_argument("--per-worker", type=int, default=0, help="at least this many files per worker")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--decoder", default="auto")
    parser.add_argument("--no-prepare", action="store_true", help="decode only (no face detection rows)")
    args = parser.parse_args(argv)
    workers = [int(w) for w in args.workers.split(",") if w.strip()]
    report = run(args.out, workers, args.copies, args.seconds, args.fps, args.decoder, prepare=not args.no_prepare,
                 per_worker=args.per_worker)
    print(markdown(report), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
