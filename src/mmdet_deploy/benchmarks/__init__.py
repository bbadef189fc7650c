"""``mmdet-bench``: PyTorch vs ONNX Runtime vs TensorRT, model-level and end-to-end, in one report.

Modules (each usable on its own):

* :mod:`.timing`: the one timing method (warm-up, repetitions by count and time budget, device
  synchronisation, percentiles);
* :mod:`.capabilities`: the capability table as data and the availability of each row here;
* :mod:`.flops`: analytic FLOPs per clip and the machine's measured matmul peak;
* :mod:`.matrix` / :mod:`.worker` / :mod:`.artefacts` / :mod:`.memory`: the model matrix;
* :mod:`.media` / :mod:`.seed_pipeline` / :mod:`.e2e`: the end-to-end comparison;
* :mod:`.targets` / :mod:`.report` / :mod:`.suite`: derived figures, report files, the whole run.

Importing this package imports neither torch nor onnxruntime; each module imports what it needs on use.
"""

from mmdet_deploy.benchmarks.capabilities import CAPABILITIES, Capability, Environment, availability
from mmdet_deploy.benchmarks.flops import flops_per_clip
from mmdet_deploy.benchmarks.timing import TimingPolicy, TimingResult, measure, percentile

__all__ = [
    "CAPABILITIES",
    "Capability",
    "Environment",
    "TimingPolicy",
    "TimingResult",
    "availability",
    "flops_per_clip",
    "measure",
    "percentile",
]
