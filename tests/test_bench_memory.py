"""Peak memory per row: a worker's own high-water mark, not its parent's."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest

from mmdet_deploy.benchmarks.memory import RssSampler, current_rss_mb, max_rss_mb


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="VmHWM is Linux-only")
def test_worker_peak_excludes_the_parents_peak() -> None:
    held = np.ones(400 * 2**20 // 8)  # the parent touches 400 MiB before starting a worker
    assert max_rss_mb() >= 400
    code = "from mmdet_deploy.benchmarks.memory import max_rss_mb; print(max_rss_mb())"
    child = float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert 0 < child < 200, child  # ru_maxrss would say >= 400 here (inherited across fork and exec)
    del held


def test_sampler_sees_a_temporary_allocation() -> None:
    before = current_rss_mb()
    with RssSampler(interval_s=0.001) as sampler:
        block = np.ones(200 * 2**20 // 8)
        time.sleep(0.05)  # held for a moment (the sampler runs while this thread sleeps)
        del block
    assert sampler.start_mb == pytest.approx(before, abs=50)
    assert sampler.peak_mb - sampler.start_mb > 150
