"""The two Ray Data stages of ``--engine ray`` and the rows they pass along (pyarrow tables).

* :func:`decode_stage` (a Ray Data task over a batch of file paths) starts one :func:`decode_file` task per
  file and yields each file's rows as it comes back. ``decode_file`` runs the runtime's
  :func:`~mmdet_deploy.runtime.prepare.prepare_file` (decode, faces, crops; a bad file becomes its final
  ``error`` row, never an exception). A file whose worker process dies (a decoder segfault, the OOM killer,
  SIGKILL) is retried ``retries`` times by Ray, then gets an ``error`` row: one crashing file costs itself.
* :class:`InferenceActor` (the actor pool) opens the backend once per actor and scores the clips of a
  batch, whatever files they come from.

A row is one window (``window >= 0``: its uint8 crops in ``pixels``, and in ``meta`` the file's
:class:`~mmdet_deploy.runtime.preprocess.PreparedFile` without its pixels, pickled: notes, faces, frame
indices, timings...) or one file's final row (``window == -1``: the pickled
:class:`~mmdet_deploy.runtime.results.ResultRow` in ``meta``). Pixels travel as uint8 bytes, a quarter of the
float32 clip (1.5 MB per 10 x 224 x 224 window); they come back to the driver only when ``--save-crops`` or
``--report`` need them.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import os
import pickle
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mmdet_deploy.contract import ModelContract
from mmdet_deploy.runtime.discovery import MediaItem
from mmdet_deploy.runtime.prepare import prepare_file
from mmdet_deploy.runtime.preprocess import PreparedFile, Preprocessor
from mmdet_deploy.runtime.ray_engine.cluster import remote_error
from mmdet_deploy.runtime.results import ERROR, ResultRow
from mmdet_deploy.runtime.run import RunConfig, build_preprocessor, open_backend

#: Test-only crash hook, read by the driver: rules ``SIGNAL:GLOB[:MARKER_DIR]`` separated by ``;`` make the
#: worker decoding a file whose name matches GLOB kill itself with SIGNAL (``SIGSEGV:crash*`` simulates a
#: decoder segfault); with MARKER_DIR only on the first attempt per file (a marker file records it): a worker
#: lost once, then retried.
CRASH_ENV = "MMDET_DEPLOY_TEST_CRASH"


@dataclass(frozen=True)
class DecodeSpec:
    """What every decode task needs: the run's settings (absolute paths, detectors pinned to the driver's),
    the model's contract, the retry budget and CPUs of one file's task, and the optional crash hook."""

    config: RunConfig
    contract: ModelContract
    retries: int = 2
    cpus: float = 1.0
    crash: str | None = None
    #: Identifies the settings: a worker keeps one Preprocessor per key.
    key: str = ""


# -- decode ------------------------------------------------------------------------------------------------------
_PREPROCESSORS: dict[str, Preprocessor] = {}
_DECODE_TASK: Any = None


def _preprocessor(spec: DecodeSpec) -> Preprocessor:
    """One Preprocessor per worker process and settings (face detectors load once, not once per file)."""
    if spec.key not in _PREPROCESSORS:
        _PREPROCESSORS[spec.key] = build_preprocessor(spec.config, spec.contract)
    return _PREPROCESSORS[spec.key]


def _crash_hook(spec: DecodeSpec, name: str) -> None:
    for rule in (spec.crash or "").split(";"):
        signame, _, rest = rule.strip().partition(":")
        pattern, _, marker_dir = rest.partition(":")
        if not pattern or not fnmatch.fnmatch(name, pattern):
            continue
        if marker_dir:
            marker = Path(marker_dir) / (name.replace("/", "_") + ".crashed")
            if marker.exists():
                continue
            marker.write_text(str(os.getpid()), encoding="utf-8")
        os.kill(os.getpid(), getattr(signal, signame))


#: Stands in for the pixels of a PreparedFile that travels without them (see :func:`without_pixels`).
_NO_PIXELS = np.zeros((0, 0, 0, 0, 3), np.uint8)


def without_pixels(prepared: PreparedFile) -> PreparedFile:
    """``prepared`` minus its crops (they travel separately, one window per row)."""
    return dataclasses.replace(prepared, originals=_NO_PIXELS, reconstructions=_NO_PIXELS)


def with_pixels(prepared: PreparedFile, originals: np.ndarray | None, shape: tuple[int, ...]) -> PreparedFile:
    """The driver's copy of a scored file: its crops when they came back, else a zero-copy black stand-in of
    ``shape`` (W, T, S, S, 3), so that ``windows`` is right. Only crops/ and the report thumbnails read the
    pixels, and the driver asks for them back whenever those are written."""
    if originals is None:
        originals = np.broadcast_to(np.zeros((1, 1, 1, 1, 3), np.uint8), shape)
    return dataclasses.replace(prepared, originals=originals, reconstructions=originals)


def decode_file(spec: DecodeSpec, path: str, name: str, kind: str) -> dict[str, Any]:
    """One file's Ray task: ``{"row": ResultRow}`` for a final row, else the file without pixels and its crops."""
    _crash_hook(spec, name)
    outcome = prepare_file(_preprocessor(spec), MediaItem(Path(path), name, kind))
    if isinstance(outcome, ResultRow):
        return {"row": outcome}
    same = outcome.reconstructions is outcome.originals
    return {"prepared": without_pixels(outcome), "originals": outcome.originals,
            "recons": None if same else outcome.reconstructions}


def crash_row(name: str, kind: str, exc: BaseException, retries: int) -> ResultRow:
    """The ``error`` row of a file whose decoding task could not finish (its worker died, or Ray failed)."""
    import ray

    if isinstance(exc, ray.exceptions.WorkerCrashedError | ray.exceptions.OutOfMemoryError):
        reason = (f"the worker process decoding this file died on all {retries + 1} attempts "
                  f"(a decoder crash or the out-of-memory killer)")
    else:
        reason = f"the decoding task failed: {type(exc).__name__}: {remote_error(exc)}"
    return ResultRow(name, status=ERROR, reason=reason, kind=kind)


def decode_stage(batch: Any, *, spec: DecodeSpec) -> Iterator[Any]:
    """Ray Data UDF over a batch of files (columns ``index``, ``path``, ``name``, ``kind``): yields their rows."""
    import ray

    global _DECODE_TASK
    if _DECODE_TASK is None:
        _DECODE_TASK = ray.remote(decode_file)
    task = _DECODE_TASK.options(num_cpus=spec.cpus, max_retries=spec.retries, retry_exceptions=False)
    files = batch.to_pylist()
    refs = [task.remote(spec, f["path"], f["name"], f["kind"]) for f in files]
    for file, ref in zip(files, refs, strict=True):
        try:
            outcome = ray.get(ref)
        except Exception as exc:  # Ray Data has no per-row errors: catch here or lose the whole block
            outcome = {"row": crash_row(file["name"], file["kind"], exc, spec.retries)}
        yield pack(file["index"], outcome)


def pack(index: int, outcome: dict[str, Any]) -> Any:
    """A file's outcome as a pyarrow table: one row per window, or its single final row."""
    import pyarrow as pa

    if "row" in outcome:
        columns: dict[str, list[Any]] = {"index": [index], "window": [-1], "windows": [0], "pixels": [b""],
                                         "recons": [b""], "meta": [pickle.dumps(outcome["row"])]}
    else:
        originals: np.ndarray = outcome["originals"]
        recons: np.ndarray | None = outcome["recons"]
        count = int(originals.shape[0])
        meta = pickle.dumps(outcome["prepared"])
        columns = {"index": [index] * count, "window": list(range(count)), "windows": [count] * count,
                   "pixels": [originals[w].tobytes() for w in range(count)],
                   "recons": [b"" if recons is None else recons[w].tobytes() for w in range(count)],
                   "meta": [meta] * count}
    schema = pa.schema([("index", pa.int64()), ("window", pa.int32()), ("windows", pa.int32()),
                        ("pixels", pa.large_binary()), ("recons", pa.large_binary()), ("meta", pa.large_binary())])
    return pa.table(columns, schema=schema)


# -- inference ---------------------------------------------------------------------------------------------------
class InferenceActor:
    """Ray Data actor: opens the backend once, then scores batches of window rows (final rows pass through).

    Output columns: ``index``, ``window``, ``windows``, ``meta`` (and ``pixels`` when the run saves crops or
    a report) as they came, ``prob`` (the window's
    p(fake), NaN for a final row), ``infer_s`` (this row's share of the inference call, seconds),
    ``actor`` (node id prefix and pid: which actor scored it) and ``call`` (that actor's inference call).
    """

    def __init__(self, config: RunConfig) -> None:
        import ray

        self.backend = open_backend(config)
        contract = self.backend.contract
        assert contract is not None  # set by open()
        self.contract = contract
        self.shape = (contract.frames, contract.image_size, contract.image_size, 3)
        self.max_batch = self.backend.max_batch
        node = ray.get_runtime_context().get_node_id()
        self.tag = f"{node[:8]}:{os.getpid()}"
        self.calls = 0
        #: crops/ and report thumbnails are written by the driver: it needs the pixels back for them.
        self.return_pixels = config.save_crops or config.report

    def _clips(self, column: Any, rows: Any) -> np.ndarray:
        """uint8 (len(rows), T, S, S, 3) from a binary column (zero-copy views of the block's buffers)."""
        return np.stack([np.frombuffer(column[int(i)].as_buffer(), np.uint8).reshape(self.shape) for i in rows])

    def __call__(self, table: Any) -> Any:
        import pyarrow as pa
        import pyarrow.compute as pc

        from mmdet_deploy.runtime import frame_sampling

        windows = table.column("window").to_numpy()
        own_recons = pc.binary_length(table.column("recons")).to_numpy(zero_copy_only=False) > 0
        probs = np.full(table.num_rows, np.nan)
        seconds = np.zeros(table.num_rows)
        calls = np.full(table.num_rows, -1, np.int64)
        todo = np.flatnonzero(windows >= 0)
        step = self.max_batch or len(todo) or 1
        mean, std = self.contract.mean, self.contract.std
        for start in range(0, len(todo), step):
            rows = todo[start : start + step]
            pixels = self._clips(table.column("pixels"), rows)
            original = frame_sampling.normalise(pixels, mean, std)
            recons = original
            if own_recons[rows].any():  # a reconstruction source other than the identity: its own crops
                recon_pixels = pixels.copy()
                for j, i in enumerate(rows):
                    if own_recons[i]:
                        recon_pixels[j] = self._clips(table.column("recons"), [i])[0]
                recons = frame_sampling.normalise(recon_pixels, mean, std)
            t0 = time.perf_counter()
            outputs = self.backend.infer({self.contract.input_names[0]: original,
                                          self.contract.input_names[1]: recons})
            elapsed = time.perf_counter() - t0
            probs[rows] = np.asarray(outputs["prob_fake"], dtype=np.float64).reshape(-1)
            seconds[rows] = elapsed / len(rows)
            calls[rows] = self.calls
            self.calls += 1
        columns = {"pixels": table.column("pixels")} if self.return_pixels else {}
        return pa.table(columns | {"index": table.column("index"), "window": table.column("window"),
                         "windows": table.column("windows"), "meta": table.column("meta"),
                         "prob": pa.array(probs, pa.float64()), "infer_s": pa.array(seconds, pa.float64()),
                         "actor": pa.array([self.tag] * table.num_rows, pa.string()),
                         "call": pa.array(calls, pa.int64())})

    def __del__(self) -> None:
        backend = getattr(self, "backend", None)
        if backend is not None:
            backend.close()
