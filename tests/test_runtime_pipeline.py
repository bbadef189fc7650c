"""The run loop: cross-file batching, scores equal to the reference, order, bad files, bounded prefetch."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mmdet_deploy.contract import ModelContract
from mmdet_deploy.runtime.backends.base import Backend
from mmdet_deploy.runtime.backends.onnxruntime import OnnxRuntimeBackend
from mmdet_deploy.runtime.discovery import discover
from mmdet_deploy.runtime.pipeline import STAGES, run_inference
from mmdet_deploy.runtime.preprocess import PreparedFile, Preprocessor, WindowSink
from mmdet_deploy.runtime.results import ResultRow, ResultsWriter, load_results
from runtime_fixtures import build_synthetic_model, reference_prob, write_index_video

CONTRACT = ModelContract(config="tiny", preset="frames")


class NumpyBackend(Backend):
    """The synthetic model in numpy, recording the batch size of every call."""

    name = "numpy"

    def __init__(self, contract: ModelContract = CONTRACT) -> None:
        super().__init__("numpy-model")
        self._contract = contract
        self.batches: list[int] = []

    def _open(self) -> None:
        self.contract = self._contract

    def _infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.batches.append(inputs["original"].shape[0])
        prob = reference_prob(inputs["original"], inputs["recons"])
        logits = np.stack([np.zeros_like(prob), np.log(prob / (1 - prob))], axis=1).astype(np.float32)
        return {"logits": logits, "prob_fake": prob.astype(np.float32)}


def _image(path: Path, colour: tuple[int, int, int]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (256, 240), colour).save(path)  # larger than the crop: no black padding
    return path


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "in"
    for i in range(3):
        _image(root / f"red_{i}.png", (230, 20 + i, 20))
        _image(root / f"blue_{i}.jpg", (20, 20 + i, 230))
    write_index_video(root / "video.mp4", 34, fps=10)  # 3 windows
    return root


def test_scores_equal_the_reference_and_batches_mix_files(folder: Path, tmp_path: Path) -> None:
    items = discover(folder)
    pre = Preprocessor(CONTRACT)
    backend = OnnxRuntimeBackend(build_synthetic_model(tmp_path / "m.onnx", CONTRACT))
    rows: list[ResultRow] = []
    summary = run_inference(items, pre, backend, batch_size=4, workers=2, on_row=rows.append)
    assert [r.filename for r in rows] == [i.name for i in items]  # input order
    assert summary.counts["ok"] == 7 and summary.windows == 9
    # 9 clips in batches of at most 4: 3 when the workers keep ahead; more when inference found the queue short
    # (it runs a partial batch rather than wait), which depends on the machine's load
    assert 3 <= summary.batches < 9
    for item, row in zip(items, rows, strict=True):
        expected = float(np.mean(reference_prob(pre(item.path).clips)))  # video: mean over windows
        assert row.prob_fake == pytest.approx(expected, abs=1e-5)
        assert row.label == int(expected >= 0.5)
        assert row.label == (1 if item.name.startswith("red") else 0) or item.name == "video.mp4"
    video = rows[-1]
    assert video.windows == 3 and video.frames == 30 and video.kind == "video"


def test_bad_files_get_rows_and_the_run_continues(folder: Path, tmp_path: Path) -> None:
    (folder / "zero.mp4").write_bytes(b"")
    (folder / "text.jpg").write_text("not an image", encoding="utf-8")
    (folder / "notes.md").write_text("hello", encoding="utf-8")
    doomed = _image(folder / "deleted.png", (1, 2, 3))
    items = discover(folder)
    doomed.unlink()  # deleted between listing and decoding
    with ResultsWriter(tmp_path / "out") as writer:
        summary = run_inference(items, Preprocessor(CONTRACT), NumpyBackend(), writer=writer, batch_size=3, workers=2)
    rows = {r.filename: r for r in load_results(tmp_path / "out" / "results.csv")}
    assert rows["zero.mp4"].status == "error" and "empty file" in rows["zero.mp4"].reason
    assert rows["text.jpg"].status == "error" and "not an image" in rows["text.jpg"].reason
    assert rows["deleted.png"].status == "error" and "deleted or moved during the run" in rows["deleted.png"].reason
    assert rows["notes.md"].status == "skipped" and rows["notes.md"].label is None
    assert summary.counts == {"ok": 7, "no_face": 0, "error": 3, "skipped": 1}
    assert summary.media_files == 10 and len(rows) == 11


def test_rows_are_on_disk_before_they_are_reported(folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    seen_on_disk: list[bool] = []

    def check(row: ResultRow) -> None:
        seen_on_disk.append(row.filename in {r.filename for r in load_results(out / "results.csv")})

    with ResultsWriter(out) as writer:
        run_inference(discover(folder), Preprocessor(CONTRACT), NumpyBackend(), writer=writer, on_row=check)
    assert seen_on_disk and all(seen_on_disk)


class _SlowFor(Preprocessor):
    """A preprocessor that takes ``delay`` seconds on files whose name contains ``slow``."""

    def __init__(self, delay: float) -> None:
        super().__init__(CONTRACT)
        self.delay = delay
        self.started: list[str] = []
        self._lock = threading.Lock()

    def stream(self, path: str | Path, kind: str | None, emit: WindowSink) -> PreparedFile:
        with self._lock:
            self.started.append(Path(path).name)
        if "slow" in Path(path).name:
            time.sleep(self.delay)
        return super().stream(path, kind, emit)


def test_the_model_does_not_wait_for_a_slow_file_when_clips_are_ready(tmp_path: Path) -> None:
    _image(tmp_path / "a.png", (200, 0, 0))
    _image(tmp_path / "b_slow.png", (0, 0, 200))
    _image(tmp_path / "c.png", (0, 200, 0))
    backend = NumpyBackend()
    rows: list[ResultRow] = []
    summary = run_inference(discover(tmp_path), _SlowFor(0.6), backend, batch_size=4, workers=2,
                            on_row=rows.append)
    # a.png (and c.png, when ready) ran instead of waiting 0.6 s for b_slow.png, which came alone later
    assert backend.batches[0] in (1, 2) and backend.batches[-1] == 1 and sum(backend.batches) == 3
    assert summary.stage_s["waiting"] > 0.3  # then it had nothing else to do
    assert [r.filename for r in rows] == ["a.png", "b_slow.png", "c.png"]  # rows still in input order


def test_prefetch_bounds_the_files_in_flight(tmp_path: Path) -> None:
    for i in range(12):
        _image(tmp_path / f"{i:02d}.png", (i * 20, 0, 0))
    pre = _SlowFor(0.0)
    started_at_emit: list[int] = []
    run_inference(discover(tmp_path), pre, NumpyBackend(), batch_size=1, workers=2, prefetch=3,
                  on_row=lambda row: started_at_emit.append(len(pre.started)))
    for k, started in enumerate(started_at_emit):
        assert started <= k + 1 + 3  # never more than `prefetch` files beyond those already reported


def test_summary_timings_and_threshold(folder: Path) -> None:
    rows: list[ResultRow] = []
    summary = run_inference(discover(folder), Preprocessor(CONTRACT), NumpyBackend(), threshold=0.0,
                            on_row=rows.append)
    assert all(r.label == 1 for r in rows)  # prob >= 0 always
    assert set(summary.stage_s) == set(STAGES)
    assert summary.stage_s["inference"] > 0 and summary.stage_s["decode"] > 0 and summary.wall_s > 0
    assert summary.files_per_s == pytest.approx(summary.media_files / summary.wall_s)
    report = summary.to_dict()
    assert report["counts"]["ok"] == 7 and report["windows"] == 9


def test_invalid_run_settings(folder: Path) -> None:
    from mmdet_deploy.errors import UsageError

    with pytest.raises(UsageError):
        run_inference(discover(folder), Preprocessor(CONTRACT), NumpyBackend(), batch_size=0)
    with pytest.raises(UsageError, match="threshold"):
        run_inference(discover(folder), Preprocessor(CONTRACT), NumpyBackend(), threshold=1.5)


class _FailingBackend(NumpyBackend):
    """Serves one batch (its size lands in ``batches``), then fails."""

    def _infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.batches:
            from mmdet_deploy.errors import BackendError

            raise BackendError("the device fell off the bus")
        return super()._infer(inputs)


def test_a_backend_failure_aborts_but_keeps_finished_rows(folder: Path, tmp_path: Path) -> None:
    from mmdet_deploy.errors import BackendError

    backend = _FailingBackend()
    with ResultsWriter(tmp_path / "out") as writer, pytest.raises(BackendError, match="fell off"):
        run_inference(discover(folder), Preprocessor(CONTRACT), backend, writer=writer, batch_size=2)
    rows = load_results(tmp_path / "out" / "results.csv")
    # the first batch (1 or 2 single-clip files: whichever of the files in flight the workers had ready) was
    # written, in input order, also when a file before one of them was not finished
    assert len(backend.batches) == 1 and backend.batches[0] in (1, 2)
    names = [r.filename for r in rows]
    in_flight = {"blue_0.jpg", "blue_1.jpg", "blue_2.jpg", "red_0.png"}  # prefetch: 4 files
    assert len(names) == backend.batches[0] and names == sorted(names) and set(names) <= in_flight
