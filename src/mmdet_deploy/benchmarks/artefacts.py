"""The artefacts the matrix runs from, built on demand into an explicit cache folder (never the cwd).

Each artefact kind of :data:`~.capabilities.ARTEFACT_KINDS` has one builder; a kind is built at most once
per run, after the artefact it is built from, and only when a runnable row needs it. Files are named by
model configuration, head and the checkpoint's sha256, with a ``.build.json`` sidecar holding the build
time, the source's sha256 and the builder fingerprint (the code that builds artefacts and the versions of
the libraries it uses), so a second run with the same ``--cache-dir`` reuses them (the report says
``cached``) until the source, the exporter or a library changes.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from mmdet_deploy.benchmarks.capabilities import ARTEFACT_SOURCE
from mmdet_deploy.contract import ModelContract
from mmdet_deploy.deps import require
from mmdet_deploy.errors import MMDetError
from mmdet_deploy.fileio import Sha256Cache

log = logging.getLogger(__name__)

#: File suffix of each artefact kind.
SUFFIX = {"checkpoint": ".pth", "onnx": ".onnx", "engine": ".engine"}


@dataclass(frozen=True)
class Artefact:
    """A built (or failed) artefact. ``build_s`` is the seconds it took to build (from the sidecar when cached)."""

    kind: str
    path: Path | None
    build_s: float | None = None
    cached: bool = False
    error: str | None = None

    @property
    def size_mb(self) -> float | None:
        """Size on disk (MiB), the TensorRT sidecar excluded."""
        return self.path.stat().st_size / 2**20 if self.path and self.path.is_file() else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "path": str(self.path) if self.path else None,
            "size_mb": self.size_mb,
            "build_s": self.build_s,
            "cached": self.cached,
            "error": self.error,
        }


@dataclass(frozen=True)
class BuildContext:
    """What builders share: the checkpoint, the model choice, calibration clips and the output folder."""

    weights: Path
    config: str
    head: str
    cache_dir: Path
    calibration_clips: Callable[[], np.ndarray]
    device: str = "cpu"
    max_batch: int = 4
    #: A calibration set sampled from media: the INT8 builders use its calibration split instead of
    #: ``calibration_clips``. ``calibration_tag`` names the data; a cached INT8 file made from other data is rebuilt.
    calibration_set: Path | None = None
    calibration_tag: str = "synthetic"


#: A builder writes ``dst`` from the ``src`` artefact's path.
Builder = Callable[[BuildContext, Path, Path], None]


#: Subpackages whose code decides what a built artefact contains.
_BUILDER_PACKAGES = ("model", "export", "calibration")
_BUILDER_LIBRARIES = ("torch", "onnx", "onnxscript", "onnxslim", "onnxruntime", "onnxruntime-gpu", "tensorrt",
                      "nncf")


@functools.lru_cache(maxsize=1)
def builder_fingerprint() -> str:
    """sha256 over the source of the artefact-building code and the versions of the libraries it uses.

    A cached artefact built by other code (an exporter change, a new onnxruntime) is rebuilt, not reused.
    """
    return code_fingerprint(Path(__file__).resolve().parent.parent, _BUILDER_PACKAGES, _BUILDER_LIBRARIES)


def code_fingerprint(root: Path, packages: tuple[str, ...], libraries: tuple[str, ...]) -> str:
    """sha256 over every ``*.py`` under ``root/<package>`` (path and bytes) and the installed ``libraries``."""
    digest = hashlib.sha256()
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            digest.update(str(path.relative_to(root)).encode())
            digest.update(path.read_bytes())
    for name in libraries:
        try:
            digest.update(f"{name}=={metadata.version(name)}".encode())
        except metadata.PackageNotFoundError:
            continue
    return digest.hexdigest()


def build_onnx_fp32(ctx: BuildContext, src: Path, dst: Path) -> None:
    """``export_onnx`` (opset 18, onnxslim); parity is measured by the benchmark itself, so ``check=False``."""
    from mmdet_deploy.export import export_onnx

    export_onnx(src, dst, head=ctx.head, config=ctx.config, opset=18, simplify=True, check=False)


def build_onnx_fp16(ctx: BuildContext, src: Path, dst: Path) -> None:
    """Mixed fp16/fp32 ONNX with fp32 I/O (:func:`mmdet_deploy.export.precision.convert_fp16`)."""
    from mmdet_deploy.export.precision import convert_fp16

    convert_fp16(src, dst)


def _calibration_for(ctx: BuildContext, src: Path, dst: Path) -> Path:
    """The calibration set INT8 builders quantise with: the context's own (sampled from media), or the
    benchmark's synthetic face clips written next to ``dst`` (``*.calibration/``) in the calibration-set format.

    Synthetic clips are enough to measure speed; accuracy claims need a calibration set from media.
    """
    if ctx.calibration_set is not None:
        return ctx.calibration_set
    require("onnx", "INT8 quantisation")
    from mmdet_deploy.calibration.dataset import CalibrationClip, write_calibration_set

    contract = ModelContract.from_onnx(src)
    clips = ctx.calibration_clips()
    calib_dir = dst.with_name(dst.stem + ".calibration")
    entries = [
        CalibrationClip(source=f"synthetic_{i:03d}", window=0, frame_indices=tuple(range(clip.shape[0])),
                        original=clip, recons=clip)
        for i, clip in enumerate(clips)
    ]  # fmt: skip
    provenance = {"source": "mmdet-bench synthetic face clips (benchmarks/synthetic_media.py)", "clips": len(entries)}
    write_calibration_set(
        calib_dir, entries, contract=contract, seed=0, holdout=0.0, min_clips=1, provenance=provenance, overwrite=True
    )
    return calib_dir


def build_onnx_int8(ctx: BuildContext, src: Path, dst: Path) -> None:
    """Static INT8 Q/DQ (linear layers and convolutions) by ONNX Runtime's quantiser (ModelOpt when installed),
    :func:`mmdet_deploy.calibration.quantize.quantize_onnx`, on :func:`_calibration_for`'s set."""
    from mmdet_deploy.calibration.quantize import quantize_onnx

    quantize_onnx(src, _calibration_for(ctx, src, dst), dst)


def build_onnx_int8_nncf(ctx: BuildContext, src: Path, dst: Path) -> None:
    """INT8 Q/DQ by NNCF (``--engine nncf``: TRANSFORMER, MIXED, sensitive ops float) on the same calibration set."""
    from mmdet_deploy.calibration.quantize import quantize_onnx

    quantize_onnx(src, _calibration_for(ctx, src, dst), dst, engine="nncf")


def build_engine(ctx: BuildContext, src: Path, dst: Path) -> None:
    """A TensorRT engine (:func:`mmdet_deploy.export.tensorrt.build_engine`) whose precision is in its name.

    One optimisation profile for batches 1..``max_batch`` (optimised for the largest), a timing cache in
    the cache folder. fp16 engines are built from the fp16 ONNX, INT8 ones from the Q/DQ ONNX.
    """
    from mmdet_deploy.export.tensorrt import BuildOptions
    from mmdet_deploy.export.tensorrt import build_engine as trt_build

    precision = dst.stem.rsplit("-", 1)[-1]
    options = BuildOptions(
        precision=precision, min_batch=1, opt_batch=ctx.max_batch, max_batch=ctx.max_batch,
        timing_cache=ctx.cache_dir / "tensorrt.timing.cache",
    )  # fmt: skip
    trt_build(src, dst, options)


#: Builders by artefact kind (the checkpoint is given, never built).
BUILDERS: dict[str, Builder] = {
    "onnx-fp32": build_onnx_fp32,
    "onnx-fp16": build_onnx_fp16,
    "onnx-int8": build_onnx_int8,
    "onnx-int8-nncf": build_onnx_int8_nncf,
    "engine-fp32": build_engine,
    "engine-fp16": build_engine,
    "engine-int8": build_engine,
}


class ArtefactStore:
    """Builds and remembers artefacts for one run; a failed build is remembered too (with its error)."""

    def __init__(self, ctx: BuildContext, builders: Mapping[str, Builder] | None = None) -> None:
        self.ctx = ctx
        self.builders = dict(BUILDERS if builders is None else builders)
        self._done: dict[str, Artefact] = {}
        self._tag: str | None = None
        #: Digests of the checkpoint and built artefacts, hashed once per store (its files are GBs).
        self._sha256 = Sha256Cache()

    def _name(self, kind: str) -> Path:
        if self._tag is None:
            self._tag = f"{self.ctx.config}-{self.ctx.head}-{self._sha256(self.ctx.weights)[:12]}"
        family, _, precision = kind.partition("-")
        return self.ctx.cache_dir / f"{self._tag}-{precision}{SUFFIX[family]}"

    def _calibration(self, kind: str) -> str | None:
        """What an INT8 artefact was calibrated on (None for the other kinds)."""
        return self.ctx.calibration_tag if kind.startswith("onnx-int8") else None

    def get(self, kind: str) -> Artefact:
        """The artefact of ``kind``, building it (and its sources) first if needed."""
        if kind not in self._done:
            self._done[kind] = self._make(kind)
        return self._done[kind]

    def built(self) -> list[Artefact]:
        """Every artefact requested so far, in request order."""
        return list(self._done.values())

    def _make(self, kind: str) -> Artefact:
        if kind == "checkpoint":
            return Artefact(kind, self.ctx.weights, build_s=None)
        source_kind = ARTEFACT_SOURCE[kind]
        assert source_kind is not None  # only the checkpoint has no source
        source = self.get(source_kind)
        if source.error or source.path is None:
            return Artefact(kind, None, error=f"its source {source_kind} failed: {source.error}")
        builder = self.builders.get(kind)
        if builder is None:
            return Artefact(kind, None, error=f"no builder for {kind} in this installation")
        dst = self._name(kind)
        sidecar = dst.with_name(dst.name + ".build.json")
        if dst.is_file() and sidecar.is_file():
            meta = json.loads(sidecar.read_text())
            if (meta.get("source_sha256") == self._sha256(source.path) and meta.get("builder") == builder_fingerprint()
                    and meta.get("calibration") == self._calibration(kind)):
                log.info("reusing %s (%s)", dst, kind)
                return Artefact(kind, dst, build_s=meta.get("build_s"), cached=True)
            log.info("rebuilding %s: its source or the building code changed since it was built", dst)
        dst.parent.mkdir(parents=True, exist_ok=True)
        log.info("building %s -> %s", kind, dst)
        t0 = time.perf_counter()
        try:
            builder(self.ctx, source.path, dst)
        except MMDetError as exc:
            return Artefact(kind, None, error=str(exc))
        except Exception as exc:  # a failing build fails its rows, not the run
            log.exception("building %s failed", kind)
            return Artefact(kind, None, error=f"{type(exc).__name__}: {exc}")
        build_s = time.perf_counter() - t0
        sidecar.write_text(json.dumps({"kind": kind, "build_s": build_s, "source_sha256": self._sha256(source.path),
                                       "builder": builder_fingerprint(), "calibration": self._calibration(kind)}))
        return Artefact(kind, dst, build_s=build_s)
