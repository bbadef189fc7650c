"""Peak memory of ``mmdet-run --preset frames`` on long videos (the README's figure comes from here).

::

    python scripts/frames_memory.py --work /tmp/frames-mem --out benchmarks/results/frames-memory
    python scripts/frames_memory.py --work /tmp/frames-mem --src /path/to/other/checkout/src --out /tmp/old

Generates (once, cached in ``--work``) a 20-minute 32x32 video and a 1280x720 one long enough to reach the
1000-window cap (10,020 frames, 5.6 min at 30 fps), then runs ``mmdet-run`` on each in a fresh process and
reads that process's peak resident set size (``os.wait4``). The model is the tests' synthetic ONNX model
(contract: 10 frames, 224 px), so the figure is the pipeline's own memory: decoding, crops, batches, ONNX
Runtime's session; a real model's weights and activations come on top (see the README). ``--src`` measures
another checkout (e.g. the code before streaming) with the same videos and settings.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
LAUNCH = "import sys; from mmdet_deploy.cli.run import main; sys.argv[0] = 'mmdet-run'; main()"
FPS = 30
VIDEOS = {  # name -> (width, height, frames)
    "32x32_20min.mp4": (32, 32, 20 * 60 * FPS),
    "1280x720_10020f.mp4": (1280, 720, 10_020),
}


def make_video(path: Path, width: int, height: int, frames: int) -> Path:
    """Moving gradient frames (so the encoder has real work), H.264 ultrafast."""
    sys.path.insert(0, str(REPO / "tests"))
    from runtime_fixtures import write_video

    if path.exists():
        return path
    ramp = np.linspace(0, 255, width, dtype=np.float32)[None, :, None]

    def frame(i: int) -> np.ndarray:
        values = (ramp + 3 * i) % 256
        return np.broadcast_to(values, (height, width, 3)).astype(np.uint8)

    tmp = path.with_suffix(".part.mp4")
    write_video(tmp, (frame(i) for i in range(frames)), fps=FPS)
    tmp.rename(path)
    return path


def peak_rss(args: list[str], src: Path) -> tuple[float, float, int]:
    """(peak RSS in MiB, wall seconds, exit code) of ``mmdet-run args`` in a fresh process."""
    env = dict(os.environ, PYTHONPATH=str(src))
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", LAUNCH, *args], env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return usage.ru_maxrss / 1024.0, time.perf_counter() - start, proc.returncode  # ru_maxrss: KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True, help="media, model and run folders (cached)")
    parser.add_argument("--out", type=Path, required=True, help="where report.json goes")
    parser.add_argument("--src", type=Path, default=REPO / "src", help="the mmdet_deploy source to measure")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=4)
    opts = parser.parse_args()
    opts.work.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(REPO / "tests"))
    from mmdet_deploy.contract import ModelContract
    from runtime_fixtures import build_synthetic_model

    model = opts.work / "synthetic.onnx"
    if not model.exists():
        build_synthetic_model(model, ModelContract(config="tiny", preset="frames"))
    results = []
    for name, (width, height, frames) in VIDEOS.items():
        video = make_video(opts.work / name, width, height, frames)
        out = opts.work / f"run-{name}-{int(time.time())}"
        args = [str(video), "--model", str(model), "--out", str(out), "--preset", "frames", "-q",
                "--workers", str(opts.workers), "--batch-size", str(opts.batch_size)]
        rss, wall, code = peak_rss(args, opts.src)
        rows = (out / "results.csv").read_text(encoding="utf-8").splitlines()[1:] if code in (0, 1) else []
        results.append({"video": name, "width": width, "height": height, "frames": frames, "exit_code": code,
                        "peak_rss_mib": round(rss, 1), "wall_s": round(wall, 1), "row": rows[0] if rows else ""})
        print(json.dumps(results[-1]), flush=True)
    report = {"src": str(opts.src), "workers": opts.workers, "batch_size": opts.batch_size,
              "python": platform.python_version(), "machine": platform.platform(), "cpus": os.cpu_count(),
              "results": results}
    opts.out.mkdir(parents=True, exist_ok=True)
    (opts.out / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
