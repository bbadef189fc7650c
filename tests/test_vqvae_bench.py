"""The VQ-VAE cost model and benchmark: analytic FLOPs agree with PyTorch's counter; the report is complete."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmdet_deploy.benchmarks.vqvae_cost import cost_table, crop_windows, vqvae_flops

pytestmark = pytest.mark.filterwarnings("ignore:.*DEMO")


@pytest.mark.parametrize(("height", "width"), [(70, 98), (64, 64), (251, 333)])
def test_analytic_flops_equal_torch_flop_counter(height: int, width: int) -> None:
    torch = pytest.importorskip("torch")
    from torch.utils.flop_counter import FlopCounterMode

    from mmdet_deploy.model.vqvae import VectorQuantizedVAE

    model = VectorQuantizedVAE("tiny").eval()
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        model(torch.zeros(1, 3, height, width))
    assert counter.get_total_flops() == vqvae_flops(height, width, 16, 64)


def test_reference_cost_and_the_saving() -> None:
    assert vqvae_flops(720, 1280) / 1e9 == pytest.approx(570.0, abs=0.5)  # issue 16: about 570 GFLOP per frame
    assert crop_windows(720, 1280) == {"full": (720, 1280), "crop": (272, 272), "crop_jpeg": (288, 304)}
    (row,) = cost_table([(1280, 720)])
    assert row["gflop_per_window"]["full"] == pytest.approx(10 * row["gflop_per_frame"]["full"])
    assert 12 < row["saving_crop"] < 13 and 10 < row["saving_crop_jpeg"] < 11
    assert crop_windows(200, 150)["crop"] == (200, 150)  # smaller than the crop: the whole frame


def test_benchmark_report_on_the_tiny_vqvae(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from mmdet_deploy.benchmarks.timing import TimingPolicy
    from mmdet_deploy.benchmarks.vqvae import vqvae_benchmark

    policy = TimingPolicy(warmup=0, min_reps=1, time_budget_s=0.0, max_reps=1)
    report = vqvae_benchmark(tmp_path / "out", config="tiny", sizes=((333, 251),), backends=("onnxruntime", "nope"),
                             policy=policy, e2e=False)  # fmt: skip
    methods = {r["method"] for r in report["per_frame"] if r["status"] == "ok"}
    assert methods == {"full", "crop", "full_jpeg", "crop_jpeg"}
    assert any(r["status"].startswith("unavailable") for r in report["per_frame"] if r["backend"] == "nope")
    saved = json.loads((tmp_path / "out" / "report.json").read_text())
    assert saved["cost"][0]["frame"] == "333x251" and "| onnxruntime | 333x251 | crop |" in (
        tmp_path / "out" / "report.md"
    ).read_text()


def test_end_to_end_rows_per_detector_backend(tmp_path: Path, tiny_vqvae_onnx, tiny_onnx_factory) -> None:
    from mmdet_deploy.benchmarks.vqvae import E2E_BACKENDS, end_to_end

    detector = tiny_onnx_factory("simplified", preset="frames", check=False).path
    report = end_to_end(tiny_vqvae_onnx.path, detector, tmp_path / "media", workers=1, batch_size=1,
                        max_windows=1, progress=lambda message: None)  # fmt: skip
    first = [r for r in report["rows"] if r["backend"] == E2E_BACKENDS[0]]
    assert [r["recons"] for r in first] == ["original", "vqvae-crop-jpeg", "vqvae-crop", "vqvae-full-jpeg"]
    assert all(r["counts"]["ok"] == report["media"]["files"] for r in first) and first[0]["vs_original"] == 1.0
    assert report["margin_speedup_e2e"] > 0
