"""The exported VQ-VAE at run time, without torch: full-frame reconstructions and the crop-with-margin method.

::

    rec = VQVAEReconstructor("vqvae.onnx")              # ONNX Runtime CPU; providers=["cuda", "cpu"] for GPUs
    full = rec(frames)                                  # uint8 RGB (N, H, W, 3) -> (N, H, W, 3)
    crop = rec.center_crop(frames, size=224)            # == torchvision CenterCrop(224) of ``full``

``__call__`` is the reference's per-frame procedure without its JPEG steps: ``ToTensor`` and
``Normalize(0.5, 0.5)`` in float32, the model, nearest resize back when a side is not a multiple of 4,
``x * 0.5 + 0.5`` and ``np.uint8(x * 255.)``. Every method is built on :meth:`region`: the exact full-frame
reconstruction of any rectangle, computed on the smallest stride-aligned window whose receptive field covers
it (``runtime/vqvae_geometry.py``). For a 1280x720 frame the 224 centre crop costs a 272x272 window,
about 1/12 of the frame. Sessions are thread-safe: preprocessing workers share one reconstructor.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mmdet_deploy.deps import require
from mmdet_deploy.errors import BackendError, ContractError, UsageError
from mmdet_deploy.fileio import sha256_file
from mmdet_deploy.runtime import vqvae_geometry as geo
from mmdet_deploy.runtime.vqvae_contract import (
    VQVAE_CODES,
    VQVAE_INPUT,
    VQVAE_METADATA_KEY,
    VQVAE_OUTPUT,
    VQVAEContract,
)

logger = logging.getLogger(__name__)

#: Pixels per model call when reconstructing full frames (bounds memory: ~0.5 GB of activations per 720p
#: frame at width 256).
CHUNK_PIXELS = 1 << 20
BACKENDS = ("onnxruntime", "openvino")


def normalise_half(frames: np.ndarray) -> np.ndarray:
    """uint8 RGB (N, H, W, 3) -> float32 (N, 3, H, W) in [-1, 1], with the reference's float32 operations
    (``ToTensor``: ``x / 255``; ``Normalize(0.5, 0.5)``: ``(x - 0.5) / 0.5``), so it is bit-identical."""
    x = np.ascontiguousarray(frames.transpose(0, 3, 1, 2)).astype(np.float32)
    x /= np.float32(255.0)
    x -= np.float32(0.5)
    x /= np.float32(0.5)
    return x


def denormalise_uint8(recons: np.ndarray) -> np.ndarray:
    """float32 (N, 3, h, w) model output -> uint8 (N, h, w, 3): ``x * 0.5 + 0.5`` then ``np.uint8(x * 255.)``."""
    x = recons.astype(np.float32, copy=True)
    x *= np.float32(0.5)
    x += np.float32(0.5)
    x *= np.float32(255.0)
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1)).astype(np.uint8)


def _check_frames(frames: np.ndarray) -> None:
    if not isinstance(frames, np.ndarray) or frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        got = f"{frames.dtype} {frames.shape}" if isinstance(frames, np.ndarray) else type(frames).__name__
        raise UsageError(f"expected uint8 RGB frames of shape (N, H, W, 3), got {got}")
    if frames.shape[1] < 1 or frames.shape[2] < 1:
        raise UsageError(f"empty frames of shape {frames.shape}")


class VQVAEReconstructor:
    """An exported VQ-VAE (``mmdet-export vqvae``) on ONNX Runtime or OpenVINO.

    ``providers`` (ONNX Runtime; short names ``cuda``, ``tensorrt``, ``cpu`` or ORT names) default from
    ``device``; the session's active providers are checked, so a GPU request never runs on the CPU silently.
    ``threads`` sets the intra-op threads (0: the runtime's default). ``backend="openvino"`` runs the same
    file on OpenVINO's CPU plugin in f32 (its default would be bf16 on CPUs that have it).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        backend: str = "onnxruntime",
        providers: Sequence[str] | None = None,
        device: str = "cpu",
        threads: int = 0,
    ) -> None:
        self.path = Path(path)
        if backend not in BACKENDS:
            raise UsageError(f"unknown VQ-VAE backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        if not self.path.is_file():
            raise BackendError(f"{self.path}: VQ-VAE model file not found")
        if self.path.stat().st_size == 0:
            raise ContractError(f"{self.path}: the VQ-VAE model file is empty")
        self.backend = backend
        self.requested_providers = list(providers) if providers else None
        self.device = device
        self.threads = int(threads)
        self.providers: list[str] = []
        self._run: Any = None
        self._sha256: str | None = None
        if backend == "onnxruntime":
            self.contract = self._open_onnxruntime(providers)
        else:
            if providers:
                raise UsageError("execution providers apply to the onnxruntime VQ-VAE backend only")
            self.contract = self._open_openvino()

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle as the constructor's arguments (a session is not picklable): a worker process opens its own."""
        options = {"backend": self.backend, "providers": self.requested_providers, "device": self.device,
                   "threads": self.threads}  # fmt: skip
        return (_reopen, (self.path, options))

    # -- backends ----------------------------------------------------------------------------------------------
    def _open_onnxruntime(self, providers: Sequence[str] | None) -> VQVAEContract:
        from mmdet_deploy.runtime.backends.onnxruntime import resolve_providers

        ort = require("onnxruntime", "the VQ-VAE reconstructor")
        wanted = resolve_providers(list(providers) if providers else None, self.device)
        built = ort.get_available_providers()
        missing = [p for p in wanted if p not in built]
        if missing:
            raise BackendError(
                f"{self.path}: execution provider(s) {', '.join(missing)} are not in this ONNX Runtime build "
                f"(available: {', '.join(built)})"
            )
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        try:
            session = ort.InferenceSession(str(self.path), options, providers=wanted)
        except Exception as exc:  # ORT raises its own pybind types for corrupt files
            text = " ".join(str(exc).split())[:300]
            raise ContractError(f"{self.path}: not a loadable ONNX model ({type(exc).__name__}: {text})") from None
        active = session.get_providers()
        if wanted[0] not in active:
            raise BackendError(f"{self.path}: requested {wanted[0]} but ONNX Runtime runs on {', '.join(active)}")
        contract = VQVAEContract.from_metadata(session.get_modelmeta().custom_metadata_map, str(self.path))
        inputs = {i.name: i.shape for i in session.get_inputs()}
        outputs = [o.name for o in session.get_outputs()]
        shape = inputs.get(VQVAE_INPUT)
        if shape is None or len(shape) != 4 or shape[1] != 3 or not {VQVAE_OUTPUT, VQVAE_CODES} <= set(outputs):
            raise ContractError(
                f"{self.path}: graph signature {inputs} -> {outputs} is not the VQ-VAE's "
                f"({VQVAE_INPUT} [batch,3,H,W] -> {VQVAE_OUTPUT}, {VQVAE_CODES})"
            )
        self.providers = active

        def run(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            recons, codes = session.run([VQVAE_OUTPUT, VQVAE_CODES], {VQVAE_INPUT: x})
            return recons, codes

        self._run = run
        return contract

    def _open_openvino(self) -> VQVAEContract:
        ov = require("openvino", "the OpenVINO VQ-VAE backend")
        core = ov.Core()
        try:
            model = core.read_model(str(self.path))
        except Exception as exc:  # OpenVINO raises RuntimeError subclasses for unreadable files
            text = " ".join(str(exc).split())[:300]
            raise ContractError(f"{self.path}: OpenVINO cannot read the model ({text})") from None
        try:
            text = model.get_rt_info(["framework", VQVAE_METADATA_KEY]).astype(str)
        except Exception:  # key absent: OpenVINO raises instead of returning None
            text = None
        contract = VQVAEContract.from_metadata({VQVAE_METADATA_KEY: text} if text else {}, str(self.path))
        config = {"INFERENCE_PRECISION_HINT": "f32"}  # else bf16 on CPUs with AVX512_BF16/AMX
        if self.threads:
            config["INFERENCE_NUM_THREADS"] = str(self.threads)
        compiled = core.compile_model(model, "CPU", config)
        self.providers = ["openvino:CPU"]

        def run(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            result = compiled.create_infer_request().infer({VQVAE_INPUT: x})  # one request per call: thread-safe
            values = {port.get_any_name(): value for port, value in result.items()}
            return values[VQVAE_OUTPUT], values[VQVAE_CODES]

        self._run = run
        return contract

    # -- the model ---------------------------------------------------------------------------------------------
    def run_model(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Normalised float32 (N, 3, h, w) -> (float32 (N, 3, 4*(h//4), 4*(w//4)), int64 codes (N, h//4, w//4)).

        A side under 4 pixels (the reference fails on it: the encoder's output would be empty) is zero-padded
        (black) at the bottom/right to 4 first; the output then has 4 rows/columns on that side.
        """
        h, w = x.shape[2:]
        if h < geo.STRIDE or w < geo.STRIDE:
            pad = ((0, 0), (0, 0), (0, max(0, geo.STRIDE - h)), (0, max(0, geo.STRIDE - w)))
            x = np.pad(x, pad, constant_values=-1.0)  # -1.0 is black after Normalize(0.5, 0.5)
        try:
            return self._run(np.ascontiguousarray(x, dtype=np.float32))
        except Exception as exc:  # out of memory, provider failures: one line, not a pybind trace
            raise BackendError(f"{self.path}: VQ-VAE inference failed ({type(exc).__name__}: {exc})") from exc

    # -- geometry ----------------------------------------------------------------------------------------------
    @staticmethod
    def axis_plan(n: int, start: int, stop: int) -> tuple[tuple[int, int], np.ndarray]:
        """For frame positions ``start:stop`` of a side ``n``: the model input window ``(a, b)`` on that side and,
        per wanted position, the model-output index (frame coordinates) the nearest resize takes it from."""
        if not 0 <= start < stop <= n:
            raise UsageError(f"region {start}:{stop} is outside a side of {n} pixels")
        out = geo.output_size(n)
        if out == 0:  # side under 4: padded to 4, the output's first n positions are the frame's
            return (0, n), np.arange(start, stop)
        src = geo.nearest_source(n, out)[start:stop]
        return geo.model_window(int(src.min()), int(src.max()), n), src

    def window_for(
        self, shape: tuple[int, int], rows: tuple[int, int], cols: tuple[int, int]
    ) -> tuple[tuple[int, int], tuple[int, int]]:
        """The input window (row range, column range) :meth:`region` needs for that region of a frame."""
        return self.axis_plan(shape[0], *rows)[0], self.axis_plan(shape[1], *cols)[0]

    def region(
        self,
        source: np.ndarray,
        shape: tuple[int, int],
        rows: tuple[int, int],
        cols: tuple[int, int],
        origin: tuple[int, int] = (0, 0),
    ) -> np.ndarray:
        """uint8 (N, rows, cols, 3): the full-frame reconstruction of frames of ``shape`` (H, W) on frame rows
        ``rows[0]:rows[1]`` and columns ``cols[0]:cols[1]``, exactly.

        ``source`` (N, h, w, 3) holds frame pixels with ``source[:, 0, 0]`` at frame position ``origin``; it
        must cover :meth:`window_for` of the region (the whole frame always does).
        """
        _check_frames(source)
        (ra, rb), src_r = self.axis_plan(shape[0], *rows)
        (ca, cb), src_c = self.axis_plan(shape[1], *cols)
        oy, ox = origin
        if ra < oy or ca < ox or rb - oy > source.shape[1] or cb - ox > source.shape[2]:
            raise UsageError(
                f"source pixels at {origin} of shape {source.shape[1:3]} do not cover the model window "
                f"rows {ra}:{rb}, columns {ca}:{cb}"
            )
        window = source[:, ra - oy : rb - oy, ca - ox : cb - ox]
        recons, _ = self.run_model(normalise_half(window))
        picked = recons[:, :, src_r - ra][:, :, :, src_c - ca]
        return denormalise_uint8(picked)

    # -- public API --------------------------------------------------------------------------------------------
    def __call__(self, frames: np.ndarray) -> np.ndarray:
        """uint8 RGB (N, H, W, 3) -> uint8 RGB reconstructions of the full frames (N, H, W, 3)."""
        _check_frames(frames)
        n, height, width = frames.shape[:3]
        step = max(1, CHUNK_PIXELS // (height * width))
        parts = [self.region(frames[i : i + step], (height, width), (0, height), (0, width)) for i in range(0, n, step)]
        return np.concatenate(parts) if len(parts) > 1 else parts[0]

    def center_crop(self, frames: np.ndarray, size: int = 224) -> np.ndarray:
        """uint8 (N, size, size, 3): torchvision ``CenterCrop(size)`` of :meth:`__call__`'s reconstruction (zero
        padding where a side is shorter than ``size``), computed on the centre window with its margin only."""
        _check_frames(frames)
        if size < 1:
            raise UsageError(f"crop size must be positive, got {size}")
        height, width = frames.shape[1:3]
        rows, cols = geo.center_span(height, size), geo.center_span(width, size)
        crop = self.region(frames, (height, width), (rows.start, rows.stop), (cols.start, cols.stop))
        return geo.pad_crop(crop, rows, cols)

    def describe(self) -> dict[str, Any]:
        """Facts for ``run.json``: the file, its contract's essentials and where it runs."""
        if self._sha256 is None:
            self._sha256 = sha256_file(self.path)
        return {
            "path": str(self.path.resolve()),
            "sha256": self._sha256,
            "backend": self.backend,
            "providers": list(self.providers),
            "width": self.contract.width,
            "codes": self.contract.codes,
            "checkpoint_sha256": self.contract.checkpoint_sha256,
            "demo_weights": self.contract.demo_weights,
        }


def _reopen(path: Path, options: dict[str, Any]) -> VQVAEReconstructor:
    return VQVAEReconstructor(path, **options)
