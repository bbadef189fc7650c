"""Worker threads the run never has to wait for: a per-file time limit and a prompt Ctrl-C need them.

::

    pool = WorkerPool(2)
    job = pool.submit(work, item, capacity=4)    # work(job, item) runs in a worker thread
    # in the worker: job.emit(value) hands a value to the scheduler, blocking while `capacity` are unread
    value = job.channel.get(timeout=0.1)         # in the scheduler: a value, EMPTY, or CLOSED (work returned)
    job.future.result()                          # work's return value, once CLOSED
    job.busy_for()                               # seconds the worker has worked on its current step
    pool.abandon(job)                            # give up on a stuck job: a fresh thread takes its place
    pool.shutdown()                              # never blocks on a stuck thread

``concurrent.futures.ThreadPoolExecutor`` cannot do this: its threads cannot be abandoned (a thread stuck in
a decoder keeps its slot for good) and the interpreter joins them at exit, so one stuck file hangs the
process even after Ctrl-C. These threads are daemons; an abandoned one is replaced, so the pool keeps its
size, and is told to stop (:class:`Cancelled` is raised from its next :meth:`Job.emit`).

The scheduler (:mod:`mmdet_deploy.runtime.pipeline`) decides when a job is stuck from :meth:`Job.busy_for`
alone, so the time limit does not depend on how the work is done.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

#: What :meth:`Channel.get` returns when nothing is there yet.
EMPTY = object()
#: What :meth:`Channel.get` returns once the job has returned and every value was read.
CLOSED = object()


class Cancelled(BaseException):
    """Raised inside a worker by :meth:`Job.emit` once the scheduler gave up on the job.

    A ``BaseException`` so that ``except Exception`` blocks around a decoder do not turn it into an error row.
    """


class Channel:
    """Values from one job to the scheduler, at most ``capacity`` unread (the back-pressure that bounds
    memory); :meth:`close` always succeeds, so the end of a job never waits for the scheduler."""

    def __init__(self, capacity: int, on_change: Callable[[], None] | None = None) -> None:
        self.capacity = max(1, capacity)
        self._items: deque[Any] = deque()
        self._closed = False
        self._cond = threading.Condition()
        self._on_change = on_change or (lambda: None)

    def put(self, value: Any, cancelled: threading.Event) -> None:
        with self._cond:
            while len(self._items) >= self.capacity:
                if cancelled.is_set():
                    raise Cancelled
                self._cond.wait(0.1)  # woken by get(); the timeout re-checks cancellation
            if cancelled.is_set():
                raise Cancelled
            self._items.append(value)
            self._cond.notify_all()
        self._on_change()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._on_change()

    def get(self, timeout: float = 0.0) -> Any:
        """The next value, waiting up to ``timeout`` seconds; :data:`EMPTY` or :data:`CLOSED` otherwise."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self._items and not self._closed:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return EMPTY
                self._cond.wait(remaining)
            if self._items:
                value = self._items.popleft()
                self._cond.notify_all()
                return value
            return CLOSED

    def finished(self) -> bool:
        """True once the job has returned and every value was read (a :meth:`get` would give CLOSED)."""
        with self._cond:
            return self._closed and not self._items

    def clear(self) -> None:
        """Drop unread values (the job was abandoned: its values are of no use)."""
        with self._cond:
            self._items.clear()
            self._cond.notify_all()


class Job:
    """One unit of work: its ``future`` (the return value), its ``channel`` (values emitted on the way) and
    what the scheduler needs to tell a stuck job from a busy one."""

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...], capacity: int,
                 on_change: Callable[[], None] | None = None) -> None:
        self.fn = fn
        self.args = args
        self.future: Future[Any] = Future()
        self.channel = Channel(capacity, on_change)
        self.cancelled = threading.Event()
        self.abandoned = False
        #: monotonic time the current step started; None before the job starts, while it waits for the
        #: scheduler to read (back-pressure is not the job's fault) and once it has finished.
        self._busy_since: float | None = None
        self._thread: threading.Thread | None = None

    def emit(self, value: Any) -> None:
        """Called by the work function: hand ``value`` to the scheduler (blocks while the channel is full;
        raises :class:`Cancelled` when the job was abandoned)."""
        self._busy_since = None
        self.channel.put(value, self.cancelled)
        self._busy_since = time.monotonic()

    def busy_for(self, now: float | None = None) -> float:
        """Seconds the job has been working on its current step (0 when not started, waiting, or done)."""
        since = self._busy_since
        return 0.0 if since is None else (time.monotonic() if now is None else now) - since


class WorkerPool:
    """``size`` daemon threads running :class:`Job` s in submission order (see the module docstring)."""

    def __init__(self, size: int, name: str = "mmdet-prep") -> None:
        self.size = size
        self.name = name
        self._queue: deque[Job] = deque()
        self._cond = threading.Condition()
        self._active: set[threading.Thread] = set()
        self._stopping = False
        self._started = 0
        #: Bumped whenever any job hands over a value or ends (see :meth:`wait_for_activity`).
        self.activity = 0
        self._activity_cond = threading.Condition()
        for _ in range(size):
            self._spawn()

    def _signal(self) -> None:
        with self._activity_cond:
            self.activity += 1
            self._activity_cond.notify_all()

    def wait_for_activity(self, seen: int, timeout: float) -> None:
        """Wait up to ``timeout`` s until :attr:`activity` differs from ``seen`` (read it before looking at
        the channels, so a value handed over in between is not missed)."""
        with self._activity_cond:
            self._activity_cond.wait_for(lambda: self.activity != seen, timeout)

    def _spawn(self) -> None:
        self._started += 1
        thread = threading.Thread(target=self._work, name=f"{self.name}-{self._started}", daemon=True)
        self._active.add(thread)
        thread.start()

    def submit(self, fn: Callable[..., Any], *args: Any, capacity: int = 1) -> Job:
        """Queue ``fn(job, *args)``; ``capacity`` is how many emitted values may wait unread."""
        job = Job(fn, args, capacity, self._signal)
        with self._cond:
            if self._stopping:
                raise RuntimeError("the worker pool is shut down")
            self._queue.append(job)
            self._cond.notify()
        return job

    def abandon(self, job: Job) -> bool:
        """Give up on ``job``: it is told to stop and a new thread replaces its own. False when the job had
        already finished (its result stands)."""
        with self._cond:
            if job.future.done():
                return False
            job.abandoned = True
            job.cancelled.set()
            job.channel.clear()
            if job.future.cancel():  # not started yet: it never will be
                job.channel.close()
                return True
            if job._thread in self._active:
                self._active.discard(job._thread)
                if not self._stopping:
                    self._spawn()
            return True

    def shutdown(self, wait_s: float = 0.0) -> None:
        """Cancel queued jobs, tell running ones to stop, and wait at most ``wait_s`` seconds for them."""
        with self._cond:
            self._stopping = True
            while self._queue:
                job = self._queue.popleft()
                job.future.cancel()
                job.channel.close()
            threads = list(self._active)
            for thread in threads:
                thread_job = getattr(thread, "mmdet_job", None)
                if thread_job is not None:
                    thread_job.cancelled.set()
            self._cond.notify_all()
        deadline = time.monotonic() + wait_s
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def _work(self) -> None:
        me = threading.current_thread()
        while True:
            with self._cond:
                while not self._queue and not self._stopping:
                    self._cond.wait()
                if self._stopping and not self._queue:
                    self._active.discard(me)
                    return
                job = self._queue.popleft()
                if not job.future.set_running_or_notify_cancel():
                    continue
                job._thread = me
                me.mmdet_job = job  # type: ignore[attr-defined]
                job._busy_since = time.monotonic()
            try:
                result = job.fn(job, *job.args)
            except BaseException as exc:  # Cancelled included: the future carries it, nobody is waiting
                job.future.set_exception(exc)
            else:
                job.future.set_result(result)
            finally:
                job._busy_since = None
                job.channel.close()
                me.mmdet_job = None  # type: ignore[attr-defined]
            with self._cond:
                if job.abandoned or me not in self._active:
                    return  # a replacement thread already took this one's place
