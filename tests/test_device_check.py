"""The pieces of scripts/device_check.sh that run on a CPU: media without PyAV, the decode benchmark, the
precision check on the tiny model, the environment probe and the summary (the whole script runs in CI as
``scripts/device_check.sh --dry-run``)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("skimage")

from mmdet_deploy.benchmarks import device_check, synthetic_media
from mmdet_deploy.benchmarks.synthetic_media import MediaSpec, generate_media
from mmdet_deploy.runtime.video_sampling import read_sampled_frames


def test_videos_without_pyav_are_mp4v_and_decode_exactly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(synthetic_media, "available", lambda name: name != "av")  # the GPU machine has no PyAV
    assert synthetic_media.video_codec() == "mpeg4"
    files = generate_media(tmp_path / "m", MediaSpec(videos=2, images=1, seconds=1.2, fps=10), workers=2)
    cap = cv2.VideoCapture(str(files[0]))
    fourcc = int(cap.get(cv2.CAP_PROP_FOURCC)).to_bytes(4, "little").decode()
    size = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    cap.release()
    assert fourcc.lower() in ("mp4v", "fmp4") and size == (1280, 720)  # MPEG-4 Part 2, as FFmpeg names it
    sampled = read_sampled_frames(files[0], 10, 10.0, "opencv")
    assert sampled.decoded == 12 and sampled.indices == list(np.linspace(0, 11, 10, dtype=int))
    assert "codec=mpeg4" in (tmp_path / "m" / ".mmdet-bench-media").read_text()


def test_decode_benchmark_measures_threads_and_processes(tmp_path: Path) -> None:
    pytest.importorskip("av")
    from mmdet_deploy.benchmarks.decode import run

    report = run(tmp_path, workers=[1, 2], copies=2, seconds=1.0, fps=10, decoder="auto", prepare=False)
    rows = {(r["mode"], r["workers"]): r for r in report["rows"]}
    assert set(rows) == {("threads", 1), ("processes", 1), ("threads", 2), ("processes", 2)}
    for r in rows.values():
        assert r["frames"] == 10 * r["files"] and r["fps"] > 0 and r["files"] == 2
    assert report["span_frames"] == 100 and report["video"]["codec"] == "h264"
    saved = json.loads((tmp_path / "decode.json").read_text())
    assert saved["rows"] == report["rows"]
    assert "| decode | processes | 2 |" in (tmp_path / "decode.md").read_text()


def test_gpu_check_on_the_cpu(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from mmdet_deploy.benchmarks import gpu_check
    from mmdet_deploy.benchmarks.timing import TimingPolicy
    from mmdet_deploy.model import write_demo_checkpoint

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        weights = write_demo_checkpoint(tmp_path / "tiny.pth", config="tiny", seed=0)
    report = gpu_check.run(weights, "tiny", "simplified", "cpu", tmp_path / "out", [1], TimingPolicy(0, 1, 0.0),
                           parity_clips=1)
    rows = {r["variant"]: r for r in report["rows"]}
    assert list(rows) == [v[0] for v in gpu_check.VARIANTS["cpu"]]
    reference = rows["fp32 eager"]
    assert reference["status"] == "ok" and reference["parity"]["max_abs"] == 0.0
    assert rows["bf16 eager"]["parity"]["max_abs"] > 0  # bf16 really ran, and stayed within its tolerance
    assert all(r["parity"]["within"] for r in rows.values())
    fig = reference["batches"]["1"]
    peak = report["peaks"]["float32"]["tflops"]
    assert fig["tflops"] > 0 and fig["peak_share"] == pytest.approx(fig["tflops"] / peak)
    assert report["best_low_precision"]["variant"] == "bf16 eager"
    assert "| fp32 eager, flash SDPA | ok |" in (tmp_path / "out" / "gpu_check.md").read_text()


def test_reconfigure_switches_precision_without_reloading(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from mmdet_deploy.errors import UsageError
    from mmdet_deploy.model import write_demo_checkpoint
    from mmdet_deploy.runtime.backends.torch import TorchBackend

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        weights = write_demo_checkpoint(tmp_path / "tiny.pth", config="tiny", seed=0)
        backend = TorchBackend(weights, config="tiny").open()
    model = backend._model
    backend.reconfigure(precision="bf16", sdpa="math")
    assert backend._model is model and backend.contract.extra["autocast"] == "bf16"
    assert backend.describe()["sdpa"] == "math"
    with pytest.raises(UsageError, match="fp16 autocast needs a CUDA device"):
        backend.reconfigure(precision="fp16")
    with pytest.raises(UsageError, match="reconfigure accepts"):
        backend.reconfigure(head="fc")
    with pytest.raises(UsageError, match="sdpa must be one of"):
        backend.reconfigure(sdpa="fastest")
    backend.close()


def test_probe_and_summary(tmp_path: Path) -> None:
    work, out = tmp_path / "work", tmp_path / "out"
    env = device_check.probe(work)
    assert env["modules"]["numpy"]["found"] and env["modules"]["numpy"]["version"]
    assert set(env["missing"]) == {n for n, m in env["modules"].items() if not m["found"]}
    (work / "steps.tsv").write_text("env\t0\t1.5\tcpu\nbench\t124\t300\ttimed out after 300 s\n"
                                    "decode\t125\t0\tskipped: 3 s of the 450 s budget left\n")
    (work / "e2e-processes").mkdir()
    (work / "e2e-processes" / "summary.json").write_text(json.dumps({
        "files_per_s": 120.0, "media_files": 64, "wall_s": 0.53, "counts": {"ok": 64}, "workers": 16,
        "worker_kind": "processes", "batch_size": 16, "batches": 4, "stage_s": {"decode": 30.0},
        "frames_decoded": 14400, "videos_decoded": 48, "frames_decoded_per_video": 300.0}))
    out.mkdir()
    summary = device_check.summarise(out, work, dry_run=False)
    assert [s["step"] for s in summary["steps"]] == ["env", "bench", "decode"]
    text = (out / "summary.md").read_text()
    assert "| bench | timed out | 300.0 |" in text and "| decode | skipped |" in text
    assert "**120.00 files/s**" in text and "target >= 100 files/s: met" in text
    assert "14400 over 48 videos (300.0 per video)" in text
    assert "no report (step did not run or failed)" in text and "not measured (step did not run" in text
    assert device_check.slug("NVIDIA H200") == "nvidia-h200"
