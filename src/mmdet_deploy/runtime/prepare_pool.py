"""Where per-file preprocessing runs: worker threads (the default) or worker processes.

::

    pool = open_prepare_pool(preprocessor, workers=16, processes=True)
    future = pool.submit_file(item)          # Future[PreparedFile | ResultRow], never an exception for a bad file
    ...
    pool.shutdown(wait=True, cancel_futures=True)

Threads share one interpreter: OpenCV, PyAV and numpy release the GIL while they decode and crop, but
the per-frame Python around them (the decoding loop, face bookkeeping) does not, so threads stop scaling
after a few cores. :class:`ProcessPreparePool` runs :func:`~mmdet_deploy.runtime.prepare.prepare_file` in
``spawn``-ed processes instead, one file per process at a time, with the same :class:`Preprocessor` (it is
pickled as its constructor's arguments and rebuilt in each process), so the frames and crops are exactly
those of the threaded path.

A process that dies while it holds a file (a decoder crash, the out-of-memory killer) costs that file
only: the file gets an ``error`` row that says how the process ended, a new process takes the dead one's
place, and the run goes on. Worker processes ignore Ctrl-C; the run's owner stops them with
:meth:`ProcessPreparePool.shutdown`.
"""

from __future__ import annotations

import logging
import multiprocessing
import pickle
import signal
import threading
import time
from collections import deque
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any, Protocol

from mmdet_deploy.errors import MMDetError, UsageError
from mmdet_deploy.runtime.discovery import MediaItem
from mmdet_deploy.runtime.prepare import prepare_file
from mmdet_deploy.runtime.preprocess import PreparedFile, Preprocessor
from mmdet_deploy.runtime.results import ERROR, ResultRow

logger = logging.getLogger(__name__)

#: How worker processes are started: a fresh interpreter, never a fork of a process that holds a CUDA
#: context, ONNX Runtime or torch thread pools (forking those can deadlock).
START_METHOD = "spawn"
#: Seconds a worker process gets to exit after being asked to, before it is terminated.
EXIT_GRACE_S = 5.0

Outcome = PreparedFile | ResultRow


class PreparePool(Protocol):
    """What the run loop submits files to."""

    #: ``threads`` or ``processes`` (reported in the run's summary).
    kind: str

    def submit_file(self, item: MediaItem) -> Future[Outcome]: ...

    def stop_file(self, future: Future[Outcome], reason: str) -> bool: ...

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None: ...


class ThreadPreparePool:
    """``workers`` threads sharing one :class:`Preprocessor` (it is thread-safe)."""

    kind = "threads"

    def __init__(self, preprocessor: Preprocessor, workers: int) -> None:
        self.preprocessor = preprocessor
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mmdet-prep")

    def submit_file(self, item: MediaItem) -> Future[Outcome]:
        return self._pool.submit(prepare_file, self.preprocessor, item)

    def stop_file(self, future: Future[Outcome], reason: str) -> bool:
        """Threads cannot be stopped: False (a file not yet started is cancelled instead)."""
        return future.cancel()

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        self._pool.shutdown(wait=wait, cancel_futures=cancel_futures)


def open_prepare_pool(preprocessor: Preprocessor, workers: int, processes: bool = False) -> PreparePool:
    """``workers`` threads, or ``workers`` processes when ``processes`` is True."""
    if workers < 1:
        raise UsageError(f"--workers must be at least 1, got {workers}")
    if processes:
        return ProcessPreparePool(preprocessor, workers)
    return ThreadPreparePool(preprocessor, workers)


# --------------------------------------------------------------------------------------------------------------
# Worker processes
# --------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _StartFailed:
    """Sent by a worker whose Preprocessor could not be rebuilt (a set-up problem, not a file's)."""

    message: str


#: Sent by a worker once its Preprocessor is built: only then does it get files (a process that dies
#: before that is a set-up problem of the run, never blamed on a file).
_READY = "ready"


def _worker_main(conn: Connection, payload: bytes) -> None:
    """Body of a worker process: rebuild the preprocessor, then one file per message until ``None``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    try:
        preprocessor = pickle.loads(payload)
    except Exception as exc:  # the parent turns this into one clear error for the run
        conn.send(_StartFailed(f"{type(exc).__name__}: {exc}"))
        return
    conn.send(_READY)
    while True:
        try:
            item = conn.recv()
        except (EOFError, OSError):  # the parent went away
            return
        if item is None:
            return
        conn.send(prepare_file(preprocessor, item))  # never raises for a bad file


@dataclass
class _Task:
    item: MediaItem
    future: Future[Outcome]
    started: float = 0.0


@dataclass
class _Worker:
    process: Any  # multiprocessing.Process (SpawnProcess)
    conn: Connection
    task: _Task | None = None
    ready: bool = False
    #: Why the pool killed this worker (a per-file time limit, say): the reason of its file's error row.
    kill_reason: str | None = None


def _how_it_ended(exitcode: int | None) -> str:
    if exitcode is None:
        return "still running"
    if exitcode < 0:
        try:
            return f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exit code {exitcode}"


class ProcessPreparePool:
    """``processes`` worker processes, each preparing one file at a time; see the module docstring.

    A manager thread hands files to idle processes and collects their results; :meth:`submit_file` and
    :meth:`shutdown` may be called from any thread.
    """

    kind = "processes"

    def __init__(self, preprocessor: Preprocessor, processes: int) -> None:
        if processes < 1:
            raise UsageError(f"--workers must be at least 1, got {processes}")
        try:
            self._payload = pickle.dumps(preprocessor)
        except Exception as exc:
            raise UsageError(
                f"preprocessing in processes needs a picklable preprocessor ({type(exc).__name__}: {exc}); "
                "use threads instead"
            ) from None
        self._ctx = multiprocessing.get_context(START_METHOD)
        self._lock = threading.Lock()
        self._pending: deque[_Task] = deque()
        self._closed = False
        self._cancel = False
        self._broken: str | None = None
        self.crashes = 0
        self._wake_r, self._wake_w = self._ctx.Pipe(duplex=False)
        self._workers = [self._spawn() for _ in range(processes)]
        self._manager = threading.Thread(target=self._manage, name="mmdet-prep-processes", daemon=True)
        self._manager.start()

    # -- public -----------------------------------------------------------------------------------------------
    def submit_file(self, item: MediaItem) -> Future[Outcome]:
        future: Future[Outcome] = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("submit_file after shutdown")
            if self._broken:
                future.set_exception(MMDetError(self._broken))
                return future
            self._pending.append(_Task(item, future))
            self._wake()
        return future

    def stop_file(self, future: Future[Outcome], reason: str) -> bool:
        """Stop the file of ``future`` now (a per-file time limit, say): a queued file is cancelled; a running
        one's process is killed, the file gets an ``error`` row with ``reason`` and a new process takes its
        place. False when the file had already finished."""
        with self._lock:
            if future.cancel():
                return True
            for worker in self._workers:
                if worker.task is not None and worker.task.future is future and not future.done():
                    worker.kill_reason = reason
                    worker.process.kill()
                    return True
        return False

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        """Stop accepting files. ``cancel_futures``: drop queued files and stop the running ones now (their
        futures get :class:`CancelledError`); otherwise every submitted file is finished first."""
        with self._lock:
            self._closed = True
            if cancel_futures:
                self._cancel = True
                while self._pending:
                    self._pending.popleft().future.cancel()
            self._wake()
        if wait:
            self._manager.join()

    # -- manager thread ---------------------------------------------------------------------------------------
    def _wake(self) -> None:
        """Wake the manager thread (called with the lock held; a no-op once the manager has finished)."""
        if not self._wake_w.closed:
            self._wake_w.send_bytes(b"x")

    def _spawn(self) -> _Worker:
        parent, child = self._ctx.Pipe(duplex=True)
        process = self._ctx.Process(target=_worker_main, args=(child, self._payload), name="mmdet-prep", daemon=True)
        process.start()
        child.close()  # the parent keeps one end only, so a dead worker reads as end-of-file
        return _Worker(process, parent)

    def _manage(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # never leave a caller waiting on a future nobody will set
            logger.exception("the preprocessing process manager failed")
            self._fail_all(f"the preprocessing process manager failed: {type(exc).__name__}: {exc}")
        finally:
            self._stop_workers()

    def _loop(self) -> None:
        while True:
            with self._lock:
                if self._cancel:
                    return
                self._dispatch()
                busy = [w for w in self._workers if w.task is not None]
                if self._closed and not self._pending and not busy:
                    return
            waitables: list[Any] = [self._wake_r]
            for worker in self._workers:
                waitables += [worker.conn, worker.process.sentinel]
            ready = wait(waitables)
            if self._wake_r in ready:
                while self._wake_r.poll():
                    self._wake_r.recv_bytes()
            for worker in list(self._workers):
                if worker.conn in ready or worker.process.sentinel in ready:
                    self._collect(worker)

    def _dispatch(self) -> None:
        """Give queued files to idle workers (called with the lock held)."""
        for worker in self._workers:
            if not self._pending:
                return
            if worker.task is not None or not worker.ready:
                continue
            task = self._pending.popleft()
            while not task.future.set_running_or_notify_cancel():  # cancelled while queued
                if not self._pending:
                    return
                task = self._pending.popleft()
            task.started = time.perf_counter()
            worker.task = task
            try:
                worker.conn.send(task.item)
            except (BrokenPipeError, OSError):
                pass  # the worker is dead: _collect sees its sentinel and gives the file its error row

    def _collect(self, worker: _Worker) -> None:
        """Read a finished result, or handle the death of ``worker``."""
        message: Any = None
        try:
            if worker.conn.poll():
                message = worker.conn.recv()
        except (EOFError, OSError):
            message = None
        if isinstance(message, _StartFailed):
            self._fail_all(f"a preprocessing process could not start: {message.message}")
            return
        if message == _READY:
            worker.ready = True
            return
        if message is not None:
            task, worker.task = worker.task, None
            if task is not None:
                task.future.set_result(message)
            return
        if worker.process.is_alive():
            return  # woken by something else; nothing to read yet
        self._replace(worker)

    def _replace(self, worker: _Worker) -> None:
        worker.process.join()
        how = _how_it_ended(worker.process.exitcode)
        worker.conn.close()
        if not worker.ready:
            self._workers.remove(worker)
            self._fail_all(
                f"a preprocessing process ended before it was ready ({how}); a program that starts runs with "
                "worker processes must guard its entry point with `if __name__ == '__main__':` (spawn start method)"
            )
            return
        task = worker.task
        with self._lock:
            self._workers.remove(worker)
            if task is not None:
                self.crashes += 1
                reason = worker.kill_reason or f"the preprocessing process died while reading this file ({how})"
                logger.warning("%s: %s; a new process takes its place", task.item.path, reason)
                task.future.set_result(ResultRow(task.item.name, status=ERROR, reason=reason, kind=task.item.kind,
                                                 seconds=time.perf_counter() - task.started))
            if not self._cancel and not self._broken:
                self._workers.append(self._spawn())

    def _fail_all(self, message: str) -> None:
        with self._lock:
            self._broken = message
            tasks = list(self._pending) + [w.task for w in self._workers if w.task is not None]
            self._pending.clear()
            for worker in self._workers:
                worker.task = None
            self._cancel = True
        for task in tasks:
            if not task.future.done():
                task.future.set_exception(MMDetError(message))

    def _stop_workers(self) -> None:
        with self._lock:
            workers = list(self._workers)
        for worker in workers:
            try:
                worker.conn.send(None)
            except (BrokenPipeError, OSError):
                pass
        deadline = time.monotonic() + (0.0 if self._cancel else EXIT_GRACE_S)
        for worker in workers:
            worker.process.join(max(0.0, deadline - time.monotonic()))
            if worker.process.is_alive():
                worker.process.terminate()
                worker.process.join(EXIT_GRACE_S)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()
            if worker.task is not None and not worker.task.future.done():
                worker.task.future.set_exception(CancelledError())
            worker.conn.close()
        with self._lock:
            self._wake_r.close()
            self._wake_w.close()
