"""The one timing module: warm-up excluded, repetitions by count and budget, percentiles on known samples."""

from __future__ import annotations

import numpy as np
import pytest

from mmdet_deploy.benchmarks.timing import TimingPolicy, estimate_seconds, measure, percentile
from mmdet_deploy.errors import UsageError


class FakeClock:
    """A clock that only moves when the timed function says how long it took (nanoseconds)."""

    def __init__(self, durations: list[int]) -> None:
        self.now = 0
        self.durations = list(durations)
        self.calls = 0

    def __call__(self) -> int:
        return self.now

    def work(self) -> None:
        self.now += self.durations[min(self.calls, len(self.durations) - 1)]
        self.calls += 1


@pytest.mark.parametrize(
    ("samples", "q", "expected"),
    [
        ([1, 2, 3, 4], 50, 2.5),
        ([1, 2, 3, 4], 95, 3.85),  # rank h = 3 * 0.95 = 2.85 -> 3 + 0.85 * (4 - 3)
        ([1, 2, 3, 4], 0, 1.0),
        ([1, 2, 3, 4], 100, 4.0),
        ([4, 1, 3, 2], 25, 1.75),  # order of the input does not matter
        ([7], 95, 7.0),
        ([10, 20], 50, 15.0),
        ([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 100], 95, 20.0),
    ],
)
def test_percentile_known_samples(samples: list[float], q: float, expected: float) -> None:
    assert percentile(samples, q) == pytest.approx(expected, abs=1e-12)


def test_percentile_matches_numpy_linear_method() -> None:
    rng = np.random.default_rng(3)
    for n in (2, 3, 7, 50, 101):
        xs = rng.exponential(size=n).tolist()
        for q in (5, 50, 90, 95, 99):
            assert percentile(xs, q) == pytest.approx(float(np.percentile(xs, q, method="linear")), rel=1e-12)


@pytest.mark.parametrize(("samples", "q"), [([], 50), ([1.0], -1), ([1.0], 100.5)])
def test_percentile_rejects_bad_input(samples: list[float], q: float) -> None:
    with pytest.raises(UsageError):
        percentile(samples, q)


def test_warmup_calls_are_excluded_from_the_statistics() -> None:
    clock = FakeClock([900, 800, 10, 20, 30, 40, 50])
    result = measure(clock.work, TimingPolicy(warmup=2, min_reps=5, time_budget_s=0.0), clock=clock)
    assert result.warmup_ns == (900, 800)
    assert result.samples_ns == (10, 20, 30, 40, 50)
    assert result.p50_ms == pytest.approx(30 / 1e6)
    assert result.p95_ms == pytest.approx(48 / 1e6)  # h = 4 * 0.95 = 3.8 -> 40 + 0.8 * 10
    assert result.mean_ms == pytest.approx(30 / 1e6)
    assert result.min_ms == pytest.approx(10 / 1e6)
    assert clock.calls == 7


def test_time_budget_extends_beyond_min_reps_and_max_reps_caps() -> None:
    second = 1_000_000_000
    clock = FakeClock([second])
    result = measure(clock.work, TimingPolicy(warmup=0, min_reps=1, time_budget_s=2.5), clock=clock)
    assert result.reps == 3  # stops at the first sample that brings the timed total to >= 2.5 s
    assert result.total_s == pytest.approx(3.0)
    clock = FakeClock([second])
    result = measure(clock.work, TimingPolicy(warmup=0, min_reps=4, time_budget_s=0.5), clock=clock)
    assert result.reps == 4  # slow calls still get the minimum count
    clock = FakeClock([1])
    result = measure(clock.work, TimingPolicy(warmup=0, min_reps=2, time_budget_s=10.0, max_reps=7), clock=clock)
    assert result.reps == 7


def test_synchronize_brackets_every_call() -> None:
    events: list[str] = []
    policy = TimingPolicy(warmup=1, min_reps=2, time_budget_s=0.0)
    measure(lambda: events.append("call"), policy, synchronize=lambda: events.append("sync"))
    assert events == ["sync", "call", "sync"] * 3


def test_summary_is_json_ready_and_in_milliseconds() -> None:
    clock = FakeClock([2_000_000])
    summary = measure(clock.work, TimingPolicy(warmup=1, min_reps=3, time_budget_s=0.0), clock=clock).summary()
    assert summary["reps"] == 3 and summary["warmup"] == 1
    assert summary["samples_ms"] == [2.0, 2.0, 2.0] and summary["warmup_ms"] == [2.0]
    assert summary["p50_ms"] == pytest.approx(2.0)


@pytest.mark.parametrize(
    "kwargs", [{"warmup": -1}, {"min_reps": 0}, {"min_reps": 5, "max_reps": 4}, {"time_budget_s": -1}]
)
def test_invalid_policy(kwargs: dict[str, float]) -> None:
    with pytest.raises(UsageError):
        TimingPolicy(**kwargs)  # type: ignore[arg-type]


def test_estimate_seconds() -> None:
    policy = TimingPolicy(warmup=1, min_reps=3, time_budget_s=20.0)
    assert estimate_seconds(policy, 10.0) == pytest.approx(40.0)  # 1 warm-up + 3 reps of 10 s
    assert estimate_seconds(policy, 0.5) == pytest.approx(20.5)  # 1 warm-up + 40 reps of 0.5 s
    assert estimate_seconds(policy, 0.0) == 0.0
