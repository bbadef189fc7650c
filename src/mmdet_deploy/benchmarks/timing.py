"""The one timing method of every benchmark in this package.

Every backend is timed the same way (house style, point 11):

1. ``warmup`` calls that are run, synchronised and thrown away (first-call costs: allocator growth,
   kernel selection, CUDA graph capture, ``torch.compile``, ONNX Runtime's arena);
2. timed calls until at least ``min_reps`` samples exist **and** ``time_budget_s`` seconds of timed
   work have passed (or ``max_reps`` is reached), so that slow models still get a median over
   ``min_reps`` samples and fast ones get many samples within the budget;
3. each sample is ``time.perf_counter_ns()`` after the device ``synchronize`` callback minus
   ``time.perf_counter_ns()`` before the call (after a synchronize that drains earlier work), so queued
   asynchronous GPU work is never credited to the next call.

Percentiles use linear interpolation between closest ranks (Hyndman & Fan type 7, NumPy's default
``method="linear"``): for sorted samples ``x[0..n-1]`` and ``q`` in [0, 100], the rank is
``h = (n - 1) * q / 100`` and the value ``x[floor(h)] + (h - floor(h)) * (x[floor(h) + 1] - x[floor(h)])``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from mmdet_deploy.errors import UsageError

#: The clock of every measurement: monotonic, integer nanoseconds.
clock_ns: Callable[[], int] = time.perf_counter_ns


def no_sync() -> None:
    """Synchronisation callback for synchronous backends (CPU): nothing to wait for."""


def percentile(samples: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (``q`` in [0, 100]) of ``samples`` by linear interpolation (type 7).

    Raises :class:`UsageError` on an empty sample or a ``q`` outside [0, 100].
    """
    if not samples:
        raise UsageError("percentile of an empty sample")
    if not 0.0 <= q <= 100.0:
        raise UsageError(f"percentile {q} is outside [0, 100]")
    xs = sorted(float(x) for x in samples)
    h = (len(xs) - 1) * q / 100.0
    lo = math.floor(h)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (h - lo) * (xs[hi] - xs[lo])


@dataclass(frozen=True)
class TimingPolicy:
    """How many calls to make.

    ``warmup``: untimed calls first. ``min_reps``: timed calls at least. ``time_budget_s``: keep timing
    until this many seconds of timed calls have accumulated (seconds). ``max_reps``: hard cap on timed calls.
    """

    warmup: int = 2
    min_reps: int = 5
    time_budget_s: float = 2.0
    max_reps: int = 1000

    def __post_init__(self) -> None:
        if self.warmup < 0 or self.min_reps < 1 or self.max_reps < self.min_reps or self.time_budget_s < 0:
            raise UsageError(
                f"invalid timing policy: warmup={self.warmup}, min_reps={self.min_reps}, "
                f"max_reps={self.max_reps}, time_budget_s={self.time_budget_s}"
            )


@dataclass(frozen=True)
class TimingResult:
    """Timed samples of one callable, in nanoseconds, with their summary in milliseconds."""

    samples_ns: tuple[int, ...]
    warmup_ns: tuple[int, ...] = field(default=())

    @property
    def reps(self) -> int:
        """Number of timed calls."""
        return len(self.samples_ns)

    @property
    def p50_ms(self) -> float:
        """Median latency of one call (milliseconds)."""
        return percentile(self.samples_ns, 50.0) / 1e6

    @property
    def p95_ms(self) -> float:
        """95th percentile latency of one call (milliseconds)."""
        return percentile(self.samples_ns, 95.0) / 1e6

    @property
    def mean_ms(self) -> float:
        """Arithmetic mean latency of one call (milliseconds)."""
        return sum(self.samples_ns) / len(self.samples_ns) / 1e6

    @property
    def min_ms(self) -> float:
        """Fastest call (milliseconds)."""
        return min(self.samples_ns) / 1e6

    @property
    def total_s(self) -> float:
        """Timed seconds, warm-up excluded."""
        return sum(self.samples_ns) / 1e9

    def summary(self) -> dict[str, Any]:
        """Every figure as plain JSON-ready values (milliseconds unless named otherwise)."""
        return {
            "reps": self.reps,
            "warmup": len(self.warmup_ns),
            "p50_ms": self.p50_ms,
            "p95_ms": self.p95_ms,
            "mean_ms": self.mean_ms,
            "min_ms": self.min_ms,
            "warmup_ms": [w / 1e6 for w in self.warmup_ns],
            "samples_ms": [s / 1e6 for s in self.samples_ns],
        }


def measure(
    fn: Callable[[], object],
    policy: TimingPolicy | None = None,
    synchronize: Callable[[], None] = no_sync,
    clock: Callable[[], int] = clock_ns,
) -> TimingResult:
    """Time ``fn()`` under ``policy``; ``synchronize`` waits for the device (e.g. ``torch.cuda.synchronize``).

    Warm-up calls are timed only for the record (``warmup_ns``) and never enter the statistics.
    """
    policy = policy or TimingPolicy()
    warm: list[int] = []
    for _ in range(policy.warmup):
        synchronize()
        t0 = clock()
        fn()
        synchronize()
        warm.append(clock() - t0)
    samples: list[int] = []
    budget_ns = int(policy.time_budget_s * 1e9)
    spent = 0
    while len(samples) < policy.max_reps and (len(samples) < policy.min_reps or spent < budget_ns):
        synchronize()
        t0 = clock()
        fn()
        synchronize()
        dt = clock() - t0
        samples.append(dt)
        spent += dt
    return TimingResult(tuple(samples), tuple(warm))


def estimate_seconds(policy: TimingPolicy, call_s: float) -> float:
    """Expected wall seconds of :func:`measure` for a call of ``call_s`` seconds (for run-time estimates)."""
    if call_s <= 0:
        return 0.0
    reps = max(policy.min_reps, min(policy.max_reps, math.ceil(policy.time_budget_s / call_s)))
    return (policy.warmup + reps) * call_s


def as_dict(policy: TimingPolicy) -> dict[str, Any]:
    """The policy as a JSON-ready dict (for the report)."""
    return asdict(policy)
