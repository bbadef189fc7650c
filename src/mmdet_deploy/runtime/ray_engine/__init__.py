"""``mmdet-run --engine ray``: the same run as the local engine, spread over a Ray cluster with Ray Data.

::

    from mmdet_deploy.runtime import RunConfig, run_folder

    summary = run_folder(RunConfig("videos/", model="model.onnx", out="runs/x", engine="ray", ray_actors=2))

The driver (this process) lists the files, records ``run.json``, resumes and writes every row through the
runtime's :class:`~mmdet_deploy.runtime.sink.ResultsSink`, exactly as the local engine does. Ray Data runs
two stages over a dataset of file paths:

1. **decode** (CPU tasks, :func:`~mmdet_deploy.runtime.ray_engine.stages.decode_stage`): each file is
   decoded and cropped by :func:`~mmdet_deploy.runtime.prepare.prepare_file` in its own Ray task, so a file
   that crashes its worker process (a decoder segfault) costs that file alone: it is retried a bounded
   number of times and then gets an ``error`` row. Every other failure is caught per file into the same
   ``error`` row the local engine writes (Ray Data has no per-row error handling).
2. **inference** (an actor pool, :class:`~mmdet_deploy.runtime.ray_engine.stages.InferenceActor`): each
   actor opens the backend once (:func:`~mmdet_deploy.runtime.run.open_backend`) and scores batches of
   clips, mixed across files; actors that die are restarted by Ray and their batch is retried.

The driver streams the scores back and appends each file's row as soon as its last window is scored
(:func:`~mmdet_deploy.runtime.prepare.scored_row`). Nothing here imports ray until a run starts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mmdet_deploy.runtime.ray_engine.driver import run_ray

__all__ = ["run_ray"]


def __getattr__(name: str) -> Any:
    if name == "run_ray":
        from mmdet_deploy.runtime.ray_engine.driver import run_ray

        return run_ray
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
