"""``MMDetConfig`` and the FLOP count need no torch: they import and compute with torch made unimportable."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def test_config_and_flops_without_torch(tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    (blocker / "torch").mkdir(parents=True)
    (blocker / "torch" / "__init__.py").write_text("raise ImportError('torch is blocked')\n", encoding="utf-8")
    script = """
import json
from mmdet_deploy.model import BASE, MMDetConfig, get_config
from mmdet_deploy.model.config import TINY
from mmdet_deploy.benchmarks import flops_per_clip
from mmdet_deploy.errors import MissingDependencyError
try:
    from mmdet_deploy.model import load_model
except MissingDependencyError as exc:
    missing = str(exc)
else:
    missing = ""
print(json.dumps({"flops": flops_per_clip("base"), "base": get_config("base") == BASE,
                  "tiny": isinstance(TINY, MMDetConfig), "missing": missing}))
"""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(blocker), str(SRC)])
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert abs(report["flops"] - 1.05e12) / 1.05e12 < 0.01 and report["base"] and report["tiny"]
    assert "mmdet-deploy[export]" in report["missing"]
