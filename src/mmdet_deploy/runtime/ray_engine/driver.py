"""The driver of ``--engine ray``: pre-flight checks on the cluster, the Ray Data pipeline, and the rows it
streams back, written through the runtime's :func:`~mmdet_deploy.runtime.run.score_items` as files finish.

Order of ``results.csv``: non-media files (``skipped``) first, then every media file in the order its last
window came back from the actor pool. That order depends on scheduling and differs between runs; what is
guaranteed is one row per file (a window that Ray delivers twice after a retry is dropped, and a file
without a row at the end is an error, never silently missing). Sort by ``filename`` to compare runs.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import os
import pickle
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from mmdet_deploy.contract import ModelContract
from mmdet_deploy.errors import BackendError, MMDetError
from mmdet_deploy.fileio import sha256_file
from mmdet_deploy.runtime.discovery import MediaItem, discover
from mmdet_deploy.runtime.pipeline import PipelineStats
from mmdet_deploy.runtime.prepare import score_source, scored_row, skipped_row
from mmdet_deploy.runtime.preprocess import PreparedFile, Preprocessor
from mmdet_deploy.runtime.ray_engine.cluster import (
    RaySession,
    check_capacity,
    check_nodes,
    import_ray,
    remote_error,
)
from mmdet_deploy.runtime.ray_engine.stages import (
    CRASH_ENV,
    DecodeSpec,
    InferenceActor,
    decode_stage,
    with_pixels,
)
from mmdet_deploy.runtime.results import ResultRow
from mmdet_deploy.runtime.run import OnFile, ProgressHook, RunConfig, RunSummary, open_backend, score_items
from mmdet_deploy.runtime.sink import ResultsSink

logger = logging.getLogger(__name__)

#: Largest block Ray Data should build (bytes): about 5 windows of 10 x 224 x 224 x 3 uint8, so memory
#: moves in small pieces and one slow block holds back little.
BLOCK_BYTES = 8 << 20
#: Ray Data decode tasks running at once (each a worker process that waits on its files' tasks).
DECODE_TASKS = 2
#: Files per input block at most (a retried block re-decodes no more than this).
FILES_PER_BLOCK = 64
#: Object-store budget of a run's datasets at least (bytes); more with more files in flight.
OBJECT_STORE_FLOOR = 256 << 20
#: Seconds a pre-flight task (node check, backend probe) may take; the probe loads the model.
PREFLIGHT_TIMEOUT_S = 600.0


@contextmanager
def data_context(object_store_bytes: int, verbose: bool) -> Iterator[None]:
    """Ray Data settings of the datasets created and run inside: small blocks, an object-store budget
    (backpressure: decoding pauses while the actors are behind), no progress bars or INFO lines (mmdet-run
    has its own). The process's own settings are restored on exit."""
    from ray.data import DataContext, ExecutionResources

    ctx = DataContext.get_current()
    saved = {name: getattr(ctx, name) for name in ("target_max_block_size", "enable_progress_bars",
                                                    "print_on_execution_start", "execution_options")}
    data_logger = logging.getLogger("ray.data")
    level = data_logger.level
    try:
        ctx.target_max_block_size = BLOCK_BYTES
        ctx.enable_progress_bars = ctx.print_on_execution_start = verbose
        options = copy.copy(ctx.execution_options)
        options.resource_limits = ExecutionResources.for_limits(object_store_memory=object_store_bytes)
        ctx.execution_options = options
        if not verbose:
            data_logger.setLevel(logging.ERROR)
        yield
    finally:
        for name, value in saved.items():
            setattr(ctx, name, value)
        data_logger.setLevel(level)


@dataclass
class RayStats(PipelineStats):
    """:class:`PipelineStats` plus what the cluster did (``summary.json`` key ``ray``): nodes, actors, the
    windows each actor scored, duplicate deliveries dropped."""

    ray: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return super().to_dict() | {"ray": self.ray}


def absolute_paths(config: RunConfig) -> RunConfig:
    """``config`` with every path absolute: workers do not share the driver's working directory."""
    changes = {name: Path(os.path.abspath(value)) for name in ("input_path", "model", "out", "yunet_model",
                                                              "mediapipe_model", "trt_cache", "vqvae_model")
               if (value := getattr(config, name)) is not None}
    return dataclasses.replace(config, **changes)


def artefact_paths(config: RunConfig) -> list[Path]:
    """Files every node must hold: the model, its engine sidecar (``FILE.engine.json``), detector models and
    the VQ-VAE of ``--recons vqvae``."""
    paths = [config.model, config.model.with_name(config.model.name + ".json")]
    paths += [p for p in (config.yunet_model, config.mediapipe_model, config.vqvae_model) if p is not None]
    return [p for p in paths if p.is_file()]


def describe_backend(config: RunConfig) -> dict[str, Any]:
    """Runs on a worker with an actor's resources: open the backend once, return its contract and facts."""
    backend = open_backend(config)
    try:
        assert backend.contract is not None  # set by open()
        return {"contract": backend.contract.to_dict(), "describe": backend.describe(),
                "max_batch": backend.max_batch}
    finally:
        backend.close()


def probe_backend(ray: ModuleType, config: RunConfig) -> tuple[ModelContract, dict[str, Any], int | None]:
    """Open the backend once on the cluster (a bad model is refused before any file is read)."""
    task = ray.remote(describe_backend).options(num_cpus=config.ray_cpus_per_actor, max_retries=0,
                                                num_gpus=config.ray_gpus_per_actor)
    ref = task.remote(config)
    try:
        report = ray.get(ref, timeout=PREFLIGHT_TIMEOUT_S)
    except ray.exceptions.GetTimeoutError:
        ray.cancel(ref, force=True)
        raise BackendError(f"no Ray node opened the {config.backend} backend within {PREFLIGHT_TIMEOUT_S:g} s "
                           f"(is a node with {config.ray_cpus_per_actor:g} CPUs and {config.ray_gpus_per_actor:g} "
                           "GPUs free?)") from None
    except ray.exceptions.RayTaskError as exc:
        if isinstance(exc.cause, MMDetError):
            raise exc.cause from None
        raise BackendError(f"opening the {config.backend} backend on the cluster failed: {remote_error(exc)}") from None
    contract = ModelContract.from_dict(report["contract"], source=str(config.model))
    return contract, dict(report["describe"]), report["max_batch"]


def run_ray(config: RunConfig, progress: ProgressHook) -> RunSummary:
    """:func:`~mmdet_deploy.runtime.run.run_folder` for ``engine="ray"`` (same outputs, same statuses)."""
    config.check_paths()
    import_ray(local=config.ray_address is None)  # ray missing: one line naming the extra, before any work
    worker_config = absolute_paths(config)
    items = discover(config.input_path, exclude=[config.out])
    artefacts = {str(path): sha256_file(path) for path in artefact_paths(worker_config)}
    sample = next((os.path.abspath(i.path) for i in items if i.is_media and os.access(i.path, os.R_OK)), None)
    local_cpus = max(os.cpu_count() or 1,
                     math.ceil(config.ray_actors * config.ray_cpus_per_actor + config.ray_cpus_per_task))
    session = RaySession(config.ray_address, num_cpus=local_cpus, connect_timeout=config.ray_connect_timeout,
                         verbose=logger.isEnabledFor(logging.DEBUG))
    with session as ray:
        check_capacity(ray, config.ray_actors, config.ray_cpus_per_actor, config.ray_gpus_per_actor,
                       config.ray_cpus_per_task)
        nodes = check_nodes(ray, artefacts, [sample] if sample else [], timeout=PREFLIGHT_TIMEOUT_S)
        contract, facts, max_batch = probe_backend(ray, worker_config)
        scorer = RayScorer(ray, worker_config, contract, max_batch)
        scorer.info = {"address": config.ray_address or "local", "nodes": nodes}
        return score_items(config, contract, facts, scorer.score, progress, items=items)


@dataclass
class _Pending:
    """A file whose windows are coming back: the file without pixels, scores (and crops) per window."""

    prepared: PreparedFile
    windows: int
    probs: dict[int, float] = field(default_factory=dict)
    pixels: dict[int, bytes] = field(default_factory=dict)
    infer_s: float = 0.0


class RayScorer:
    """The :data:`~mmdet_deploy.runtime.run.Scorer` of the ray engine (one run)."""

    def __init__(self, ray: ModuleType, config: RunConfig, contract: ModelContract, max_batch: int | None) -> None:
        self.ray = ray
        self.config = config
        self.contract = contract
        self.batch_size = min(config.batch_size, max_batch) if max_batch else config.batch_size
        self.threshold = contract.threshold if config.threshold is None else float(config.threshold)
        self.info: dict[str, Any] = {}

    def score(self, todo: list[MediaItem], preprocessor: Preprocessor, sink: ResultsSink,
              on_row: Callable[[ResultRow], None],
              on_file: OnFile) -> RayStats:
        self.sink, self.on_row, self.on_file = sink, on_row, on_file
        self.stats = RayStats(workers=self.config.ray_actors, batch_size=self.batch_size)
        self.by_actor: Counter[str] = Counter()
        self.calls: set[tuple[str, int]] = set()
        self.duplicates = 0
        start = time.perf_counter()
        try:
            media = []
            for item in todo:
                if item.is_media:
                    media.append(item)
                else:
                    self._emit(skipped_row(item), None, [])
            if media:
                with data_context(self._object_store_budget(), verbose=logger.isEnabledFor(logging.DEBUG)):
                    self._consume(self._dataset(media, preprocessor), media)
        finally:
            self.stats.wall_s = time.perf_counter() - start
            self.stats.batches = len(self.calls)
            self.stats.ray = self.info | {
                "actors": self.config.ray_actors, "gpus_per_actor": self.config.ray_gpus_per_actor,
                "windows_by_actor": dict(sorted(self.by_actor.items())), "duplicates_dropped": self.duplicates}
        return self.stats

    @property
    def in_flight(self) -> int:
        """Files being decoded at once, at most."""
        return self.config.ray_max_in_flight or 2 * self.config.ray_actors * self.batch_size

    def _object_store_budget(self) -> int:
        size = self.contract.image_size
        window_bytes = 2 * self.contract.frames * size * size * 3  # uint8 crops and (at most) reconstructions
        return max(OBJECT_STORE_FLOOR, 8 * self.in_flight * window_bytes)

    def _dataset(self, media: list[MediaItem], preprocessor: Preprocessor) -> Any:
        from ray.data import ActorPoolStrategy, TaskPoolStrategy

        config = self.config
        # Two decode tasks, each with up to half the files in flight as per-file tasks: the per-file tasks are
        # the parallelism; a second decode task keeps files coming while the first waits on a slow one.
        tasks = min(DECODE_TASKS, self.in_flight)
        per_task = math.ceil(self.in_flight / tasks)
        # Workers must use the driver's preset and detectors (another node may have more detectors installed).
        names = preprocessor.faces.names if preprocessor.faces is not None else None
        pinned = dataclasses.replace(config, preset=preprocessor.preset, face_detectors=names or None)
        # Before any file: every node must be able to build this preprocessing (same detectors as the driver).
        check_nodes(self.ray, {}, [], timeout=PREFLIGHT_TIMEOUT_S, decode=(pinned, self.contract))
        spec = DecodeSpec(pinned, self.contract, retries=config.ray_retries, cpus=config.ray_cpus_per_task,
                          crash=os.environ.get(CRASH_ENV) or None, key=uuid.uuid4().hex)
        rows = [{"index": i, "path": os.path.abspath(item.path), "name": item.name, "kind": item.kind}
                for i, item in enumerate(media)]
        blocks = min(len(rows), max(tasks, math.ceil(len(rows) / FILES_PER_BLOCK)))
        ds = self.ray.data.from_items(rows, override_num_blocks=blocks)
        # The decode tasks only wait on their per-file tasks (which hold the CPUs): they reserve none.
        ds = ds.map_batches(decode_stage, fn_kwargs={"spec": spec}, batch_size=per_task, batch_format="pyarrow",
                            num_cpus=0, compute=TaskPoolStrategy(size=tasks))
        return ds.map_batches(InferenceActor, fn_constructor_kwargs={"config": config}, batch_size=self.batch_size,
                              batch_format="pyarrow", num_cpus=config.ray_cpus_per_actor,
                              num_gpus=config.ray_gpus_per_actor or None,
                              compute=ActorPoolStrategy(size=config.ray_actors))

    def _consume(self, ds: Any, media: list[MediaItem]) -> None:
        pending: dict[int, _Pending] = {}
        done: set[int] = set()
        batches = iter(ds.iter_batches(batch_size=None, batch_format="pyarrow"))
        while True:
            t0 = time.perf_counter()
            try:
                batch = next(batches)
            except StopIteration:
                break
            except Exception as exc:  # the Ray job itself failed (not a file: those are rows)
                raise MMDetError(f"the Ray job failed after {len(done)} of {len(media)} media files "
                                 f"({type(exc).__name__}: {remote_error(exc)}); their rows are kept, rerun with "
                                 "--resume to score the rest") from exc
            self.stats.stage_s["waiting"] += time.perf_counter() - t0
            for row in batch.to_pylist():
                self._take(row, media, pending, done)
        if len(done) != len(media):
            raise MMDetError(f"Ray returned no result for {len(media) - len(done)} of {len(media)} media files; "
                             "rerun with --resume to score them")

    def _take(self, row: dict[str, Any], media: list[MediaItem], pending: dict[int, _Pending],
              done: set[int]) -> None:
        index, window = int(row["index"]), int(row["window"])
        if index in done:
            self.duplicates += 1
            return
        if window < 0:  # the file's final row (error) from the decode stage
            done.add(index)
            self._emit(pickle.loads(row["meta"]), None, [])
            return
        entry = pending.get(index)
        if entry is None:
            entry = pending[index] = _Pending(pickle.loads(row["meta"]), int(row["windows"]))
        if window in entry.probs:
            self.duplicates += 1
            return
        entry.probs[window] = float(row["prob"])
        entry.infer_s += float(row["infer_s"])
        if row.get("pixels") is not None:
            entry.pixels[window] = row["pixels"]
        self.by_actor[row["actor"]] += 1
        self.calls.add((row["actor"], int(row["call"])))
        if len(entry.probs) < entry.windows:
            return
        del pending[index]
        done.add(index)
        prepared = self._reassemble(entry)
        for stage, seconds in prepared.timings.items():
            self.stats.stage_s[stage] = self.stats.stage_s.get(stage, 0.0) + seconds
        self.stats.stage_s["inference"] += entry.infer_s
        self.stats.windows += entry.windows
        seconds = sum(prepared.timings.values()) + entry.infer_s
        probs = [entry.probs[w] for w in range(entry.windows)]
        source = score_source(self.config.backend, self.contract.precision)  # named in a non-finite score's row
        self._emit(scored_row(media[index], prepared, probs, self.threshold, seconds, source=source), prepared, probs)

    def _reassemble(self, entry: _Pending) -> PreparedFile:
        shape = (entry.windows, self.contract.frames, self.contract.image_size, self.contract.image_size, 3)
        originals = None
        if len(entry.pixels) == entry.windows:
            flat = b"".join(entry.pixels[w] for w in range(entry.windows))
            originals = np.frombuffer(flat, np.uint8).reshape(shape)
        return with_pixels(entry.prepared, originals, shape)

    def _emit(self, row: ResultRow, prepared: PreparedFile | None, probs: list[float]) -> None:
        t0 = time.perf_counter()
        self.on_file(row, prepared, probs)  # faces.csv, windows.csv, crops: on disk before the row
        self.sink.write(row)
        self.stats.stage_s["writing"] += time.perf_counter() - t0
        self.stats.counts[row.status] += 1
        self.on_row(row)
