"""Preprocessing in worker processes: the same frames as threads, a crashed process costs one file only."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mmdet_deploy.contract import ModelContract
from mmdet_deploy.errors import MMDetError
from mmdet_deploy.runtime.backends.onnxruntime import OnnxRuntimeBackend
from mmdet_deploy.runtime.discovery import MediaItem, discover
from mmdet_deploy.runtime.pipeline import run_inference
from mmdet_deploy.runtime.prepare_pool import ProcessPreparePool, ThreadPreparePool, open_prepare_pool
from mmdet_deploy.runtime.preprocess import PreparedFile, Preprocessor
from mmdet_deploy.runtime.results import ERROR, ResultRow
from runtime_fixtures import astronaut, build_synthetic_model, read_index, write_index_video

CONTRACT = ModelContract(config="tiny")
#: Seconds any one test may take before it is failed (worker processes could otherwise hang it).
TEST_TIMEOUT_S = 240


@pytest.fixture(autouse=True)
def _deadline():
    """Fail a test that runs past TEST_TIMEOUT_S instead of hanging the suite (SIGALRM, main thread)."""
    def expire(signum: int, frame: object) -> None:
        raise TimeoutError(f"test ran past {TEST_TIMEOUT_S} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(TEST_TIMEOUT_S)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


class CrashingPreprocessor(Preprocessor):
    """Kills its own process on files whose name starts with ``crash`` (what a segfaulting decoder does)."""

    def __call__(self, path: str | Path, kind: str | None = None) -> PreparedFile:
        if Path(path).name.startswith("crash"):
            os.kill(os.getpid(), signal.SIGKILL)
        return super().__call__(path, kind)


class HangingPreprocessor(Preprocessor):
    """Never finishes files whose name starts with ``hang`` (what a decoder stuck on a bad stream does)."""

    def __call__(self, path: str | Path, kind: str | None = None) -> PreparedFile:
        if Path(path).name.startswith("hang"):
            time.sleep(3600)
        return super().__call__(path, kind)


class UnpicklablePreprocessor(Preprocessor):
    def __reduce__(self):  # type: ignore[override]
        raise TypeError("holds a live handle")


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pool")
    write_index_video(root / "long.mp4", 130, fps=10)  # 13 s: the sampling span stops at 100 frames
    write_index_video(root / "short.mp4", 6, fps=10)  # fewer than 10 frames: sampled frames repeat
    Image.fromarray(astronaut()).save(root / "face.png")
    (root / "broken.mp4").write_bytes(b"not a video at all")
    return root


def _media(root: Path) -> list[MediaItem]:
    return [item for item in discover(root) if item.is_media]


def _prepare_all(pool, items: list[MediaItem]) -> list[PreparedFile | ResultRow]:
    try:
        return [future.result(timeout=120) for future in [pool.submit_file(item) for item in items]]
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def test_processes_prepare_exactly_what_threads_prepare(folder: Path) -> None:
    preprocessor = Preprocessor(CONTRACT, "frames")  # centre crops keep the index blocks readable
    items = _media(folder)
    by_threads = _prepare_all(ThreadPreparePool(preprocessor, 2), items)
    by_processes = _prepare_all(ProcessPreparePool(preprocessor, 2), items)
    for item, a, b in zip(items, by_threads, by_processes, strict=True):
        assert type(a) is type(b), item.name
        if isinstance(a, ResultRow):
            assert (a.status, a.reason) == (b.status, b.reason) == (ERROR, a.reason)
            continue
        assert a.frame_indices == b.frame_indices and a.frames_decoded == b.frames_decoded
        assert np.array_equal(a.originals, b.originals), item.name
    long = by_processes[[i.name for i in items].index("long.mp4")]
    assert isinstance(long, PreparedFile) and long.frames_decoded == 130


def test_faces_preset_sampling_is_the_same_in_a_process(folder: Path) -> None:
    preprocessor = Preprocessor(CONTRACT, "faces", face_detectors=["haar"])
    items = [MediaItem(folder / "long.mp4", "long.mp4", "video"), MediaItem(folder / "short.mp4", "short.mp4", "video")]
    long, short = _prepare_all(ProcessPreparePool(preprocessor, 1), items)
    assert isinstance(long, PreparedFile) and isinstance(short, PreparedFile)
    assert long.frame_indices == [list(np.linspace(0, 99, 10, dtype=int))] and long.frames_decoded == 100
    assert short.frame_indices == [list(np.linspace(0, 5, 10, dtype=int))]
    # no face in index frames: each frame is resized whole, and its index blocks still read back
    painted = [read_index(frame) for frame in long.originals[0]]
    assert painted == long.frame_indices[0]


def test_a_crashed_process_costs_only_its_file(folder: Path, tmp_path: Path) -> None:
    for name in ("crash.mp4", "z_after.png"):
        (tmp_path / name).write_bytes((folder / ("short.mp4" if name.endswith("mp4") else "face.png")).read_bytes())
    items = _media(folder) + [MediaItem(tmp_path / n, n, "video" if n.endswith("mp4") else "image")
                              for n in ("crash.mp4", "z_after.png")]
    pool = ProcessPreparePool(CrashingPreprocessor(CONTRACT, "frames"), 2)
    outcomes = _prepare_all(pool, items)
    crashed = outcomes[-2]
    assert isinstance(crashed, ResultRow) and crashed.status == ERROR
    assert crashed.reason == "the preprocessing process died while reading this file (killed by SIGKILL)"
    assert pool.crashes == 1
    assert isinstance(outcomes[-1], PreparedFile)  # the replacement process carried on
    assert sum(isinstance(o, PreparedFile) for o in outcomes) == 3  # long, face, z_after (short: < 10 frames)
    assert not any(w.process.is_alive() for w in pool._workers)


def test_pipeline_with_processes_matches_threads_and_counts_decoded_frames(folder: Path, tmp_path: Path) -> None:
    model = build_synthetic_model(tmp_path / "m.onnx", CONTRACT)
    items = _media(folder)
    runs = {}
    with OnnxRuntimeBackend(model) as backend:
        for processes in (False, True):
            rows: list[ResultRow] = []
            stats = run_inference(items, Preprocessor(CONTRACT, "frames"), backend, batch_size=2, workers=2,
                                  on_row=rows.append, processes=processes)
            runs[processes] = (stats, [(r.filename, r.status, r.prob_fake, r.frames, r.windows) for r in rows])
    (threads, rows_t), (procs, rows_p) = runs[False], runs[True]
    # Same files, statuses, frames and windows; p(fake) within float rounding, since which windows share a
    # batch depends on when each worker hands them over (streamed by threads, all at once from a process).
    assert [r[:2] + r[3:] for r in rows_t] == [r[:2] + r[3:] for r in rows_p]
    for (_, _, p_t, _, _), (_, _, p_p, _, _) in zip(rows_t, rows_p, strict=True):
        assert (p_t is None and p_p is None) or abs(p_t - p_p) < 1e-6
    assert (threads.worker_kind, procs.worker_kind) == ("threads", "processes")
    # frames preset decodes every frame of the scored videos (short.mp4 and broken.mp4 are error rows)
    assert procs.videos_decoded == 1 and procs.frames_decoded == 130 and procs.frames_per_video == 130.0
    assert procs.to_dict()["frames_decoded_per_video"] == 130.0 and threads.frames_decoded == 130


def test_an_unpicklable_preprocessor_is_refused_up_front() -> None:
    with pytest.raises(MMDetError, match="needs a picklable preprocessor"):
        open_prepare_pool(UnpicklablePreprocessor(CONTRACT, "frames"), 2, processes=True)


def test_cancelled_shutdown_stops_the_processes(folder: Path) -> None:
    pool = ProcessPreparePool(Preprocessor(CONTRACT, "frames"), 2)
    futures = [pool.submit_file(item) for item in _media(folder) * 3]
    pool.shutdown(wait=True, cancel_futures=True)
    assert all(f.done() for f in futures)
    assert not any(w.process.is_alive() for w in pool._workers)
    with pytest.raises(RuntimeError, match="after shutdown"):
        pool.submit_file(_media(folder)[0])


def test_a_stopped_file_gets_its_reason_and_the_pool_goes_on(folder: Path, tmp_path: Path) -> None:
    """What a per-file time limit does: the stuck process is killed, its file becomes an error row."""
    (tmp_path / "hang.png").write_bytes((folder / "face.png").read_bytes())
    pool = ProcessPreparePool(HangingPreprocessor(CONTRACT, "frames"), 1)
    try:
        stuck = pool.submit_file(MediaItem(tmp_path / "hang.png", "hang.png", "image"))
        queued = pool.submit_file(MediaItem(folder / "face.png", "face.png", "image"))
        deadline = time.monotonic() + 120
        while not stuck.running() and time.monotonic() < deadline:  # the process took the file
            time.sleep(0.05)
        reason = "took longer than the 1 s per-file limit"
        assert pool.stop_file(stuck, reason)
        row = stuck.result(timeout=60)
        assert isinstance(row, ResultRow) and (row.status, row.reason) == (ERROR, reason)
        assert isinstance(queued.result(timeout=120), PreparedFile)  # a new process carried on
        assert not pool.stop_file(queued, "too late")  # already finished
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
