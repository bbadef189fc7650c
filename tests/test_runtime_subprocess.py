"""Real processes: a run killed with SIGKILL resumes with no duplicates; the runtime works without torch."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from mmdet_deploy.runtime.results import load_results
from runtime_fixtures import astronaut, build_synthetic_model, write_index_video

SRC = Path(__file__).resolve().parents[1] / "src"
LAUNCH = "import sys; from mmdet_deploy.cli.run import main; sys.argv[0] = 'mmdet-run'; main()"


def _env(extra_path: Path | None = None) -> dict[str, str]:
    env = dict(os.environ)
    paths = [str(extra_path)] if extra_path else []
    env["PYTHONPATH"] = os.pathsep.join([*paths, str(SRC), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


@pytest.mark.skipif(os.name != "posix", reason="SIGKILL is POSIX")
def test_killed_run_resumes_without_duplicates(tmp_path: Path) -> None:
    model = build_synthetic_model(tmp_path / "m.onnx")
    root = tmp_path / "in"
    root.mkdir()
    image = Image.fromarray(astronaut())
    for i in range(40):  # each needs a face search (~0.1 s): the run lasts long enough to be killed mid-way
        image.save(root / f"img {i:02d}.png")
    out = tmp_path / "out"
    args = [str(root), "--model", str(model), "--out", str(out), "--workers", "1", "--batch-size", "1", "-q"]
    proc = subprocess.Popen([sys.executable, "-c", LAUNCH, *args], env=_env(), stderr=subprocess.PIPE)
    results = out / "results.csv"
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            if results.exists() and results.read_bytes().count(b"\n") >= 6:
                break
            assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read()!r}"
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    before = load_results(results)
    assert 5 <= len(before) < 40
    with open(results, "a", encoding="utf-8") as handle:
        handle.write("img 99.png,1,0.5")  # what a kill in the middle of a write leaves
    resumed = subprocess.run([sys.executable, "-c", LAUNCH, *args, "--resume"], env=_env(), capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    after = load_results(results)
    names = [r.filename for r in after]
    assert len(names) == 40 and len(set(names)) == 40 and "img 99.png" not in names
    assert after[: len(before)] == before  # earlier rows untouched
    assert all(r.status == "ok" and r.detector == "blazeface-full" for r in after)  # the default chain
    predictions = (out / "predictions.csv").read_text(encoding="utf-8").splitlines()
    assert predictions[0] == "filename,label" and len(predictions) == 41


def test_runtime_works_with_torch_unimportable(tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    for name in ("torch", "tensorrt", "onnx", "openvino", "nncf"):
        (blocker / name).mkdir(parents=True)
        (blocker / name / "__init__.py").write_text(
            f"raise ImportError('{name} is blocked: the lean runtime must not need it')\n", encoding="utf-8"
        )
    model = build_synthetic_model(tmp_path / "m.onnx")
    root = tmp_path / "in"
    root.mkdir()
    Image.fromarray(astronaut()).save(root / "face.png")
    write_index_video(root / "clip.mp4", 12, fps=10)
    out = tmp_path / "out"
    script = f"""
import json, sys
try:
    import torch
except ImportError:
    pass
else:
    raise SystemExit("the torch blocker does not work")
import mmdet_deploy.runtime
from mmdet_deploy.runtime import discovery, decode, faces, preprocess, pipeline, results, run, sink, prepare
from mmdet_deploy.cli import progress
from mmdet_deploy.runtime.backends import onnxruntime
from mmdet_deploy.cli.run import main
sys.argv = ["mmdet-run", {str(root)!r}, "--model", {str(model)!r}, "--out", {str(out)!r}, "-q"]
try:
    main()
except SystemExit as exc:
    code = exc.code
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "tensorrt", "onnx", "openvino", "nncf"))
print(json.dumps({{"code": code, "heavy": heavy}}))
"""
    proc = subprocess.run([sys.executable, "-c", script], env=_env(blocker), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report == {"code": 0, "heavy": []}
    rows = load_results(out / "results.csv")
    assert [r.filename for r in rows] == ["clip.mp4", "face.png"] and rows[1].detector == "blazeface-full"
