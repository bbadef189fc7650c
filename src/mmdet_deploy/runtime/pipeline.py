"""The run loop: parallel preprocessing ahead of batched inference, results written as files finish.

::

    from mmdet_deploy.runtime.pipeline import run_inference
    summary = run_inference(items, preprocessor, backend, writer=writer, batch_size=8, workers=2)
    summary.counts, summary.files_per_s, summary.stage_s, summary.wall_s

Worker threads decode, find faces and crop (OpenCV, PyAV and numpy release the GIL for that work) while
the calling thread batches clips *across files* and runs the backend. At most ``prefetch`` files are in
flight, each handing over its windows as they are cut (:meth:`Preprocessor.stream`), at most
``batch_size`` waiting: memory stays bounded whatever a video's length. A batch is filled from every file
that has windows ready, so the model idles only when nothing at all is ready (measured as
``stage_s["waiting"]``) and a slow file never holds up the others.

With ``processes=True`` each worker thread drives a worker process (:mod:`mmdet_deploy.runtime.prepare_pool`)
that prepares a whole file past the GIL; its windows come back together and are handed over as above.

Rows are emitted in input order, so ``results.csv`` has the same order on every run (after an abort, the
finished files' rows are written even when an unfinished file precedes them).

Nothing hangs the loop. A file whose preparation makes no progress for ``file_timeout`` seconds (waiting
for this loop to take its windows does not count) gets an ``error`` row "timed out" and its worker thread
is abandoned (:mod:`mmdet_deploy.runtime.workers`). On Ctrl-C the loop writes the finished files' rows,
does not wait for the workers, and re-raises ``KeyboardInterrupt``.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field

import numpy as np

from mmdet_deploy.contract import ORIGINAL, PROB_FAKE, RECONS
from mmdet_deploy.errors import MMDetError, UsageError
from mmdet_deploy.runtime import frame_sampling
from mmdet_deploy.runtime.backends.base import Backend
from mmdet_deploy.runtime.discovery import MediaItem
from mmdet_deploy.runtime.prepare import prepare_file, score_source, scored_row, skipped_row
from mmdet_deploy.runtime.prepare_pool import PreparePool, open_prepare_pool
from mmdet_deploy.runtime.preprocess import PreparedFile, Preprocessor
from mmdet_deploy.runtime.results import ERROR, ResultRow, ResultsWriter
from mmdet_deploy.runtime.stats import STAGES, PipelineStats  # noqa: F401 - re-exported (their home was here)
from mmdet_deploy.runtime.workers import CLOSED, EMPTY, Cancelled, Job, WorkerPool

logger = logging.getLogger(__name__)

#: Default per-file time limit in seconds (``--file-timeout``): generous, since a timed-out file is not
#: retried by ``--resume``; the limit exists to stop a stuck decoder, not a slow one.
DEFAULT_FILE_TIMEOUT = 600.0
#: How often (seconds) a waiting loop wakes to check the time limits.
POLL_S = 0.1
#: What :func:`run_inference` keeps of a file's windows for ``on_file`` (see there).
KEEP_WINDOWS = ("none", "best", "all")

@dataclass
class _Slot:
    """One file between submission and its row: its job, the windows it has handed over, their scores."""

    item: MediaItem
    job: Job | None = None
    row: ResultRow | None = None
    #: The file's metadata once its job returned (its windows came through the job's channel).
    prepared: PreparedFile | None = None
    received: int = 0  # windows taken from the channel so far
    probs: list[float] = field(default_factory=list)
    seconds: float = 0.0
    #: Window index -> its (T, S, S, 3) crops, kept for ``on_file`` as ``keep_windows`` asks.
    kept: dict[int, np.ndarray] = field(default_factory=dict)

    @property
    def streaming(self) -> bool:
        """True while the file's job may still hand over windows."""
        return self.row is None and self.prepared is None

    @property
    def complete(self) -> bool:
        return self.row is not None or (self.prepared is not None and len(self.probs) == self.received)


def _stream_file(job: Job, preprocessor: Preprocessor, item: MediaItem) -> PreparedFile | ResultRow:
    """The work of one file in a worker: windows go through the job's channel, the metadata is returned."""
    return prepare_file(preprocessor, item, emit=lambda original, recon: job.emit((original, recon)))


def _process_file(job: Job, procs: PreparePool, item: MediaItem) -> PreparedFile | ResultRow:
    """Process mode (``processes=True``): a worker process prepares the whole file and its windows come back
    together (so memory per file is the unstreamed amount); this thread then hands them over as a streamed
    file would. When the scheduler abandons the job (``file_timeout``, Ctrl-C) the file's process is killed."""
    future = procs.submit_file(item)
    while True:
        try:
            outcome = future.result(timeout=POLL_S)
            break
        except FutureTimeout:
            if job.cancelled.is_set():
                procs.stop_file(future, "abandoned (--file-timeout or the run stopped)")
                raise Cancelled() from None
    if isinstance(outcome, ResultRow):
        return outcome
    originals, recons = outcome.originals, outcome.reconstructions
    for window in range(originals.shape[0]):
        job.emit((originals[window], recons[window]))
    empty = originals[:0]
    outcome.originals = outcome.reconstructions = empty  # the windows went through the channel
    return outcome


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
    file_timeout: float | None = DEFAULT_FILE_TIMEOUT,
    keep_windows: str = "none",
    processes: bool = False,
) -> PipelineStats:
    """Score ``items`` and return a :class:`PipelineStats`; each finished row goes to ``writer`` and ``on_row``.

    ``batch_size`` is the number of clips (windows) per inference call, mixed across files; ``workers`` the
    preprocessing workers (threads, or processes when ``processes``); ``prefetch`` the most files in flight
    (default ``max(2 * workers, batch_size + workers)``, enough to fill a batch of one-clip files).
    ``threshold`` defaults to the contract's.
    ``on_file(row, prepared, window_probs)`` runs before each row is written (``prepared`` None for errors
    and skipped files): what a file's row refers to (faces.csv, crops) is on disk before the row is. Windows
    are streamed, so ``prepared`` holds no pixels unless ``keep_windows`` asks: ``"all"`` keeps every window
    of a file until its row (``--save-crops``: memory grows with the video again), ``"best"`` only the one
    with the highest ``prob_fake`` (report thumbnails); see :meth:`PreparedFile.window`.
    ``file_timeout``: seconds a file's preparation may go without progress before it gets an ``error`` row
    (None or 0: no limit). Backend errors abort the run; file errors become ``error`` rows. On any abort
    (a backend error, ``KeyboardInterrupt``) every file already finished gets its row before the exception
    propagates.
    """
    if batch_size < 1 or workers < 1:
        raise UsageError(f"--batch-size and --workers must be at least 1 (got {batch_size} and {workers})")
    if keep_windows not in KEEP_WINDOWS:
        raise UsageError(f"keep_windows must be one of {', '.join(KEEP_WINDOWS)}, got {keep_windows!r}")
    if file_timeout is not None and not (file_timeout >= 0 and math.isfinite(file_timeout)):
        raise UsageError(f"--file-timeout must be a number of seconds >= 0 (0: no limit), got {file_timeout}")
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
    run = _Run(preprocessor, backend, writer, batch_size, float(threshold), on_row, file_timeout or None)
    run.on_file = on_file
    run.keep_windows = keep_windows
    run.summary.workers, run.summary.batch_size = workers, batch_size
    start = time.perf_counter()
    pool = WorkerPool(workers)
    # Process mode: each worker thread drives one worker process (the thread does the waiting, the process the
    # GIL-bound decoding and cropping), so time limits, abandoning and streaming stay as they are.
    procs = open_prepare_pool(preprocessor, workers, processes=True) if processes else None
    run.process_pool = procs
    run.summary.worker_kind = "processes" if processes else "threads"
    try:
        run.loop(iter(items), pool, prefetch)
    except BaseException:  # Ctrl-C or a backend failure: files already done keep their rows
        try:
            run.flush_finished()
        except Exception:  # the original error is the one to report (a full disk fails both)
            logger.warning("could not write the finished rows after the run was aborted", exc_info=True)
        raise
    finally:
        # Never wait for a worker (one may be stuck in a decoder): a finished run has none left running.
        pool.shutdown(wait_s=0.5)
        if procs is not None:
            procs.shutdown(wait=True, cancel_futures=True)
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
        file_timeout: float | None,
    ) -> None:
        assert backend.contract is not None
        self.preprocessor = preprocessor
        self.backend = backend
        self.writer = writer
        self.batch_size = batch_size
        self.threshold = threshold
        self.on_row = on_row
        self.file_timeout = file_timeout
        self.contract = backend.contract
        self.source = score_source(backend.name, backend.contract.precision)
        self.summary = PipelineStats()
        self.slots: deque[_Slot] = deque()
        self.on_file: Callable[[ResultRow, PreparedFile | None, list[float]], None] | None = None
        self.keep_windows = "none"
        self.process_pool: PreparePool | None = None

    def loop(self, source: Iterable[MediaItem], pool: WorkerPool, prefetch: int) -> None:
        self.pool = pool
        source = iter(source)
        exhausted = False
        while True:
            exhausted = exhausted or self._top_up(source, prefetch)
            self._check_time_limits()
            self._emit_ready()
            if not self.slots and exhausted:
                return
            parts = self._assemble()
            if parts:
                self._infer(parts)
            self._emit_ready()

    def _top_up(self, source: Iterable[MediaItem], prefetch: int) -> bool:
        """Submit files until ``prefetch`` are in flight; True once the source is exhausted."""
        in_flight = sum(1 for slot in self.slots if slot.row is None)
        if in_flight >= prefetch:
            return False
        for item in source:
            if not item.is_media:
                self.slots.append(_Slot(item, row=skipped_row(item)))
                continue
            if self.process_pool is not None:
                job = self.pool.submit(_process_file, self.process_pool, item, capacity=self.batch_size)
            else:
                job = self.pool.submit(_stream_file, self.preprocessor, item, capacity=self.batch_size)
            self.slots.append(_Slot(item, job=job))
            in_flight += 1
            if in_flight >= prefetch:
                return False
        return True

    def _check_time_limits(self) -> None:
        """Give an ``error`` row to every file whose preparation made no progress for ``file_timeout`` s."""
        if self.file_timeout is None:
            return
        now = time.monotonic()
        for slot in self.slots:
            if slot.streaming and slot.job is not None and slot.job.busy_for(now) > self.file_timeout:
                self._time_out(slot)

    def _time_out(self, slot: _Slot) -> None:
        assert slot.job is not None
        if not self.pool.abandon(slot.job):
            return  # it finished in the meantime: its result stands
        seconds = self.file_timeout or 0.0
        logger.warning("%s: no progress for %g s; giving up on it (--file-timeout)", slot.item.name, seconds)
        slot.row = ResultRow(slot.item.name, status=ERROR, kind=slot.item.kind, seconds=seconds + slot.seconds,
                             reason=f"timed out: preparing the file made no progress for {seconds:g} s "
                                    "(--file-timeout); abandoned")
        slot.job = None

    def _take(self, slot: _Slot, wanted: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """Up to ``wanted`` windows ``slot`` has ready now (never waits); completes the slot at its end."""
        taken: list[tuple[np.ndarray, np.ndarray]] = []
        while slot.streaming and len(taken) < wanted:
            assert slot.job is not None
            value = slot.job.channel.get()
            if value is EMPTY:
                break
            if value is CLOSED:
                self._finish_job(slot)
                break
            taken.append(value)
            slot.received += 1
        return taken

    def _finish_job(self, slot: _Slot) -> None:
        """The job returned: its metadata (or its error row) completes the slot."""
        assert slot.job is not None
        job, slot.job = slot.job, None
        try:
            outcome = job.future.result(timeout=0)
        except (Exception, Cancelled) as exc:  # a bug in a worker: still one row, never a lost file
            outcome = ResultRow(slot.item.name, status=ERROR, kind=slot.item.kind,
                                reason=f"unexpected {type(exc).__name__}: {' '.join(str(exc).split())[:200]}")
        if isinstance(outcome, ResultRow):  # the file failed: its error row is final
            slot.row = outcome
            return
        for stage, seconds in outcome.timings.items():
            self.summary.stage_s[stage] = self.summary.stage_s.get(stage, 0.0) + seconds
        slot.seconds += sum(outcome.timings.values())
        if outcome.frames_decoded is not None:
            self.summary.videos_decoded += 1
            self.summary.frames_decoded += outcome.frames_decoded
            self.summary.frames_skipped += outcome.frames_skipped
        if outcome.windows != slot.received:
            raise MMDetError(f"{slot.item.name}: {slot.received} windows received, {outcome.windows} prepared")
        slot.prepared = outcome

    def _assemble(self) -> list[tuple[_Slot, np.ndarray, np.ndarray]]:
        """Windows for the next batch, oldest files first, from every file that has some ready (a slow or
        stuck file never holds up the others); waits only when there is nothing to infer and no row to write."""
        waited_since: float | None = None
        while True:
            seen = self.pool.activity  # read before looking: a window handed over after this wakes the wait
            parts: list[tuple[_Slot, np.ndarray, np.ndarray]] = []
            for slot in self.slots:
                if slot.streaming:
                    parts.extend((slot, o, r) for o, r in self._take(slot, self.batch_size - len(parts)))
                    if len(parts) >= self.batch_size:
                        break
            if parts or not self.slots or self._settle(self.slots[0]) or not any(s.streaming for s in self.slots):
                break
            waited_since = waited_since or time.perf_counter()
            self._check_time_limits()
            self.pool.wait_for_activity(seen, POLL_S)
        if waited_since is not None:
            self.summary.stage_s["waiting"] += time.perf_counter() - waited_since
        return parts

    def _infer(self, parts: list[tuple[_Slot, np.ndarray, np.ndarray]]) -> None:
        t0 = time.perf_counter()
        mean, std = self.contract.mean, self.contract.std
        originals = frame_sampling.normalise(np.stack([original for _, original, _ in parts]), mean, std)
        same = all(original is recon for _, original, recon in parts)
        recons = originals if same else frame_sampling.normalise(np.stack([r for _, _, r in parts]), mean, std)
        batch = {ORIGINAL: originals, RECONS: recons}
        t1 = time.perf_counter()
        outputs = self.backend.infer(batch)
        t2 = time.perf_counter()
        self.summary.stage_s["preprocess"] += t1 - t0
        self.summary.stage_s["inference"] += t2 - t1
        probs = np.asarray(outputs[PROB_FAKE], dtype=np.float64).reshape(-1)
        total = len(parts)
        if probs.shape[0] != total:
            raise MMDetError(f"{self.backend.name}: {probs.shape[0]} probabilities for a batch of {total} clips")
        for (slot, original, _), prob in zip(parts, probs, strict=True):
            self._keep(slot, len(slot.probs), original, float(prob))
            slot.probs.append(float(prob))
            slot.seconds += (t2 - t0) / total
        self.summary.windows += total
        self.summary.batches += 1

    def _row(self, slot: _Slot) -> ResultRow:
        if slot.row is not None:
            return slot.row
        assert slot.prepared is not None  # complete and without a row: scored
        return scored_row(slot.item, slot.prepared, slot.probs, self.threshold, slot.seconds, source=self.source)

    def _keep(self, slot: _Slot, window: int, original: np.ndarray, prob: float) -> None:
        """Hold on to a window's crops when ``on_file`` needs them (``keep_windows``)."""
        if self.keep_windows == "all":
            slot.kept[window] = original
        elif self.keep_windows == "best" and (not slot.probs or not prob <= max(slot.probs)):
            slot.kept = {window: original}  # the highest prob_fake so far (a NaN one too: it is reported)

    def _write(self, slot: _Slot | None, row: ResultRow) -> None:
        t0 = time.perf_counter()
        if self.on_file is not None and slot is not None:
            prepared = slot.prepared
            if prepared is not None and slot.kept:
                prepared.kept = slot.kept
            self.on_file(row, prepared, slot.probs)
        if self.writer is not None:
            self.writer.write(row)
        self.summary.stage_s["writing"] += time.perf_counter() - t0
        self.summary.counts[row.status] += 1
        if self.on_row is not None:
            self.on_row(row)

    def _settle(self, slot: _Slot) -> bool:
        """Complete ``slot`` if its job has returned and all its windows were taken; True when complete."""
        if slot.streaming and slot.job is not None and slot.job.channel.finished():
            self._finish_job(slot)
        return slot.complete

    def _emit_ready(self) -> None:
        while self.slots and self._settle(self.slots[0]):
            slot = self.slots.popleft()
            self._write(slot, self._row(slot))

    def flush_finished(self) -> None:
        """After an interrupt: write every finished file's row, also those queued behind an unfinished one
        (input order is kept among them; the unfinished files get no row, so ``--resume`` does them)."""
        finished = [slot for slot in self.slots if self._settle(slot)]
        self.slots.clear()
        for slot in finished:
            self._write(slot, self._row(slot))
