"""The run loop: parallel preprocessing ahead of batched inference, results written as files finish.

::

    from mmdet_deploy.runtime.pipeline import run_inference
    summary = run_inference(items, preprocessor, backend, writer=writer, batch_size=8, workers=2)
    summary.counts, summary.files_per_s, summary.stage_s, summary.wall_s

Workers decode, find faces and crop while the calling thread batches clips *across files* and runs the
backend. Workers are threads by default (OpenCV, PyAV and numpy release the GIL for most of that work), or
processes (``processes=True``, :mod:`mmdet_deploy.runtime.prepare_pool`) where the GIL-bound Python parts
would stop threads from scaling across many cores. At most ``prefetch`` files are in
flight (the bounded queue: memory stays bounded and a slow model does not make decoding run away). When the
next file is not ready the loop runs the clips it already has instead of waiting, so the model idles only
when nothing at all is ready; that idle time is measured (``stage_s["waiting"]``).

Rows are emitted in input order (a file waits for the files before it), so ``results.csv`` has the same
order on every run.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mmdet_deploy.contract import ORIGINAL, PROB_FAKE, RECONS
from mmdet_deploy.errors import MMDetError, UsageError
from mmdet_deploy.runtime.backends.base import Backend
from mmdet_deploy.runtime.discovery import MediaItem
from mmdet_deploy.runtime.prepare import scored_row, skipped_row
from mmdet_deploy.runtime.prepare_pool import PreparePool, open_prepare_pool
from mmdet_deploy.runtime.preprocess import PreparedFile, Preprocessor
from mmdet_deploy.runtime.results import SKIPPED, STATUSES, ResultRow, ResultsWriter

#: Stages whose busy time is reported (seconds summed over threads; worker stages can overlap each other).
STAGES = ("decode", "face_detection", "preprocess", "inference", "writing", "waiting")


@dataclass
class PipelineStats:
    """What :func:`run_inference` did. ``stage_s`` sums busy seconds per stage over all threads; ``wall_s``
    is elapsed time.

    ``decode``, ``face_detection`` and ``preprocess`` run in workers (in parallel), ``inference`` and
    ``writing`` in the calling thread, ``waiting`` is the calling thread blocked with nothing to infer.
    Overlap efficiency, as a benchmark may define it, is ``sum(stage_s without waiting) / wall_s``.
    """

    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STATUSES, 0))
    wall_s: float = 0.0
    stage_s: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    windows: int = 0
    batches: int = 0
    workers: int = 0
    batch_size: int = 0
    #: ``threads`` or ``processes``: where preprocessing ran.
    worker_kind: str = "threads"
    #: Videos read, and the frames decoded from them (every frame up to the sampling span is decoded).
    videos_decoded: int = 0
    frames_decoded: int = 0

    @property
    def files(self) -> int:
        return sum(self.counts.values())

    @property
    def media_files(self) -> int:
        """Files that were images or videos (everything but ``skipped``)."""
        return self.files - self.counts[SKIPPED]

    @property
    def files_per_s(self) -> float:
        """Media files finished per second of wall time (skipped non-media files are not counted)."""
        return self.media_files / self.wall_s if self.wall_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "counts": dict(self.counts), "files": self.files, "media_files": self.media_files,
            "wall_s": round(self.wall_s, 4), "files_per_s": round(self.files_per_s, 4),
            "stage_s": {k: round(v, 4) for k, v in self.stage_s.items()}, "windows": self.windows,
            "batches": self.batches, "workers": self.workers, "batch_size": self.batch_size,
            "worker_kind": self.worker_kind, "videos_decoded": self.videos_decoded,
            "frames_decoded": self.frames_decoded, "frames_decoded_per_video": round(self.frames_per_video, 2),
        }

    @property
    def frames_per_video(self) -> float:
        """Frames decoded per video read (0 when no video was read)."""
        return self.frames_decoded / self.videos_decoded if self.videos_decoded else 0.0


@dataclass
class _Slot:
    """One file between submission and its row: its preprocessing future, then its window scores."""

    item: MediaItem
    future: Future[PreparedFile | ResultRow] | None = None
    prepared: PreparedFile | None = None
    row: ResultRow | None = None
    probs: list[float] = field(default_factory=list)
    queued: int = 0  # windows already placed in a batch
    seconds: float = 0.0

    @property
    def resolved(self) -> bool:
        return self.future is None

    @property
    def complete(self) -> bool:
        if self.row is not None:
            return True
        return self.prepared is not None and len(self.probs) == self.prepared.windows


def run_inference(
    items: Iterable[MediaItem],
    preprocessor: Preprocessor,
    backend: Backend,
    *,
    writer: ResultsWriter | None = None,
    batch_size: int = 8,
    workers: int = 2,
    prefetch: int | None = None,
    threshold: float | None = None,
    on_row: Callable[[ResultRow], None] | None = None,
    on_file: Callable[[ResultRow, PreparedFile | None, list[float]], None] | None = None,
    processes: bool = False,
) -> PipelineStats:
    """Score ``items`` and return a :class:`PipelineStats`; each finished row goes to ``writer`` and ``on_row``.

    ``batch_size`` is the number of clips (windows) per inference call, mixed across files; ``workers`` the
    preprocessing workers (threads, or processes when ``processes``); ``prefetch`` the most files in flight
    (default ``max(2 * workers, batch_size + workers)``, enough to fill a batch of one-clip files).
    ``threshold`` defaults to the contract's.
    ``on_file(row, prepared, window_probs)`` runs before each row is written (``prepared`` None for errors
    and skipped files): what a file's row refers to (faces.csv, crops) is on disk before the row is.
    Backend errors abort the run (rows already written stay on disk); file errors become ``error`` rows.
    """
    if batch_size < 1 or workers < 1:
        raise UsageError(f"--batch-size and --workers must be at least 1 (got {batch_size} and {workers})")
    backend.open()
    assert backend.contract is not None  # set by every backend's open()
    contract = backend.contract
    if threshold is None:
        threshold = contract.threshold
    if not 0.0 <= threshold <= 1.0:
        raise UsageError(f"--threshold must lie in [0, 1], got {threshold}")
    if backend.max_batch is not None:
        batch_size = min(batch_size, backend.max_batch)
    prefetch = prefetch or max(2 * workers, batch_size + workers)
    run = _Run(preprocessor, backend, writer, batch_size, float(threshold), on_row)
    run.on_file = on_file
    run.summary.workers, run.summary.batch_size = workers, batch_size
    start = time.perf_counter()
    pool = open_prepare_pool(preprocessor, workers, processes)
    run.summary.worker_kind = pool.kind
    try:
        run.loop(iter(items), pool, prefetch)
    finally:
        # On an abort, queued files are dropped; running ones finish (threads cannot be killed; processes
        # are stopped) and are lost.
        pool.shutdown(wait=True, cancel_futures=True)
        run.summary.wall_s = time.perf_counter() - start
    return run.summary


class _Run:
    """State of one :func:`run_inference` call (kept out of the function to keep each step small)."""

    def __init__(
        self,
        preprocessor: Preprocessor,
        backend: Backend,
        writer: ResultsWriter | None,
        batch_size: int,
        threshold: float,
        on_row: Callable[[ResultRow], None] | None,
    ) -> None:
        self.preprocessor = preprocessor
        self.backend = backend
        self.writer = writer
        self.batch_size = batch_size
        self.threshold = threshold
        self.on_row = on_row
        self.summary = PipelineStats()
        self.slots: deque[_Slot] = deque()
        self.on_file: Callable[[ResultRow, PreparedFile | None, list[float]], None] | None = None

    def loop(self, source: Iterable[MediaItem], pool: PreparePool, prefetch: int) -> None:
        source = iter(source)
        exhausted = False
        while True:
            exhausted = exhausted or self._top_up(source, pool, prefetch)
            self._emit_ready()
            if not self.slots and exhausted:
                return
            parts = self._assemble()
            if parts:
                self._infer(parts)
            self._emit_ready()

    def _top_up(self, source: Iterable[MediaItem], pool: PreparePool, prefetch: int) -> bool:
        """Submit files until ``prefetch`` are in flight; True once the source is exhausted."""
        in_flight = sum(1 for slot in self.slots if slot.row is None)
        if in_flight >= prefetch:
            return False
        for item in source:
            if not item.is_media:
                self.slots.append(_Slot(item, row=skipped_row(item)))
                continue
            self.slots.append(_Slot(item, future=pool.submit_file(item)))
            in_flight += 1
            if in_flight >= prefetch:
                return False
        return True

    def _resolve(self, slot: _Slot) -> None:
        assert slot.future is not None
        if not slot.future.done():
            t0 = time.perf_counter()
            slot.future.result()
            self.summary.stage_s["waiting"] += time.perf_counter() - t0
        prepared = slot.future.result()
        slot.future = None
        if isinstance(prepared, ResultRow):  # the file failed: its error row is final
            slot.row = prepared
            return
        for stage, seconds in prepared.timings.items():
            self.summary.stage_s[stage] = self.summary.stage_s.get(stage, 0.0) + seconds
        slot.seconds = sum(prepared.timings.values())
        slot.prepared = prepared
        if prepared.frames_decoded is not None:
            self.summary.videos_decoded += 1
            self.summary.frames_decoded += prepared.frames_decoded

    def _assemble(self) -> list[tuple[_Slot, int, int]]:
        """Windows for the next batch, oldest files first; blocks only when nothing at all is ready."""
        parts: list[tuple[_Slot, int, int]] = []
        filled = 0
        for slot in self.slots:
            if slot.row is not None:
                continue
            if not slot.resolved:
                assert slot.future is not None
                if filled and not slot.future.done():
                    break  # run what we have rather than let the model wait for this file
                self._resolve(slot)
                if slot.prepared is None:
                    continue
            assert slot.prepared is not None
            take = min(slot.prepared.windows - slot.queued, self.batch_size - filled)
            if take > 0:
                parts.append((slot, slot.queued, slot.queued + take))
                slot.queued += take
                filled += take
            if filled >= self.batch_size:
                break
        return parts

    def _infer(self, parts: list[tuple[_Slot, int, int]]) -> None:
        t0 = time.perf_counter()
        originals, recons = [], []
        for slot, start, stop in parts:
            assert slot.prepared is not None
            original, recon = slot.prepared.window_inputs(start, stop)
            originals.append(original)
            recons.append(recon)
        original = np.concatenate(originals) if len(originals) > 1 else originals[0]
        # recons = original (the seed's identity reconstruction): one array, so a backend can copy it once
        same = all(a is b for a, b in zip(originals, recons, strict=True))
        recon = original if same else (np.concatenate(recons) if len(recons) > 1 else recons[0])
        batch = {ORIGINAL: original, RECONS: recon}
        t1 = time.perf_counter()
        outputs = self.backend.infer(batch)
        t2 = time.perf_counter()
        self.summary.stage_s["preprocess"] += t1 - t0
        self.summary.stage_s["inference"] += t2 - t1
        probs = np.asarray(outputs[PROB_FAKE], dtype=np.float64).reshape(-1)
        total = sum(stop - start for _, start, stop in parts)
        if probs.shape[0] != total:
            raise MMDetError(f"{self.backend.name}: {probs.shape[0]} probabilities for a batch of {total} clips")
        offset = 0
        for slot, start, stop in parts:
            count = stop - start
            slot.probs.extend(float(p) for p in probs[offset : offset + count])
            slot.seconds += (t2 - t0) * count / total
            offset += count
        self.summary.windows += total
        self.summary.batches += 1

    def _emit_ready(self) -> None:
        while self.slots and self.slots[0].complete:
            slot = self.slots.popleft()
            row = slot.row
            if row is None:
                assert slot.prepared is not None  # complete and without a row: scored
                row = scored_row(slot.item, slot.prepared, slot.probs, self.threshold, slot.seconds)
            t0 = time.perf_counter()
            if self.on_file is not None:
                self.on_file(row, slot.prepared, slot.probs)
            if self.writer is not None:
                self.writer.write(row)
            self.summary.stage_s["writing"] += time.perf_counter() - t0
            self.summary.counts[row.status] += 1
            if self.on_row is not None:
                self.on_row(row)
