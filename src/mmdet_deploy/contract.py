"""The model contract: tensor names and shapes, and the preprocessing an artefact expects.

This module is the single declaration read by the exporter (to name inputs and embed the contract),
by every runtime backend (to bind inputs and check the artefact), by calibration and by the tests.
It imports only the standard library (onnx only inside :meth:`ModelContract.from_onnx`, to read a file).

The contract travels inside every artefact, and this module is the one place that reads and writes it
there: :meth:`ModelContract.to_onnx` / :meth:`ModelContract.from_onnx` (ONNX ``metadata_props`` under
:data:`METADATA_KEY`, with the demo-weights flag under :data:`DEMO_WEIGHTS_KEY` and the producer and a
readable ``doc_string`` as provenance) and :meth:`ModelContract.to_sidecar` /
:meth:`ModelContract.from_sidecar` (the ``contract`` entry of a TensorRT engine's JSON sidecar).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from mmdet_deploy import __version__
from mmdet_deploy.errors import ContractError

#: Bumped when a field changes meaning; readers refuse a newer major version.
CONTRACT_VERSION = 1
#: Key of the JSON contract in ONNX ``metadata_props`` and in engine sidecars.
METADATA_KEY = "mmdet_deploy.contract"
#: ONNX ``metadata_props`` entry mirroring ``demo_weights`` ("true"/"false"), visible in any ONNX viewer.
DEMO_WEIGHTS_KEY = "mmdet_deploy.demo_weights"
#: Key of the contract inside an engine sidecar (``FILE.engine.json``).
SIDECAR_CONTRACT_KEY = "contract"
#: Producer recorded in every ONNX model this package writes.
PRODUCER = "mmdet-deploy"

_Sidecar = TypeVar("_Sidecar")

FRAMES = 10
IMAGE_SIZE = 224
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_FEATURE_DIM = 1024
MM_TOKENS = 64
MM_TOKEN_DIM = 4096

HEADS = ("simplified", "fc", "fusion")
PRESETS = ("faces", "frames")
CONFIGS = ("base", "tiny")
PRECISIONS = ("fp32", "fp16", "int8")
#: What the model expects as ``recons``: the frames again (the seed) or their VQ-VAE reconstructions (official).
RECONS_MODES = ("original", "vqvae")

#: Name of the dynamic batch axis in every tensor spec.
BATCH = "batch"

#: The two clip inputs every head takes: the frames, and their reconstruction.
ORIGINAL = "original"
RECONS = "recons"
CLIP_INPUTS = (ORIGINAL, RECONS)
FUSION_INPUTS = ("clip_feature", "mm_tokens")
LOGITS = "logits"
PROB_FAKE = "prob_fake"
OUTPUT_NAMES = (LOGITS, PROB_FAKE)
#: Index of the "fake" class in ``logits``.
FAKE_INDEX = 1


@dataclass(frozen=True)
class TensorSpec:
    """Name, shape (``"batch"`` marks the dynamic axis) and dtype of one model input or output."""

    name: str
    shape: tuple[int | str, ...]
    dtype: str = "float32"

    def concrete(self, batch: int) -> tuple[int, ...]:
        """The shape with the batch axis filled in."""
        return tuple(batch if d == BATCH else int(d) for d in self.shape)


def input_names(head: str) -> tuple[str, ...]:
    """Input tensor names of a head, in the order of ``forward``'s arguments."""
    _check_choice("head", head, HEADS)
    return CLIP_INPUTS + (FUSION_INPUTS if head == "fusion" else ())


def input_specs(head: str, frames: int = FRAMES, image_size: int = IMAGE_SIZE) -> tuple[TensorSpec, ...]:
    """Input specs of a head: two clips, plus the multimodal features for ``fusion``."""
    clip = (BATCH, frames, 3, image_size, image_size)
    specs = [TensorSpec(name, clip) for name in CLIP_INPUTS]
    if head == "fusion":
        specs.append(TensorSpec("clip_feature", (BATCH, CLIP_FEATURE_DIM)))
        specs.append(TensorSpec("mm_tokens", (BATCH, MM_TOKENS, MM_TOKEN_DIM)))
    _check_choice("head", head, HEADS)
    return tuple(specs)


def output_specs() -> tuple[TensorSpec, ...]:
    """Output specs: ``logits`` (B, 2) with index 1 = fake, and ``prob_fake`` (B,)."""
    return (TensorSpec(LOGITS, (BATCH, 2)), TensorSpec(PROB_FAKE, (BATCH,)))


def _check_choice(what: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ContractError(f"unknown {what} {value!r}; expected one of {', '.join(choices)}")


@dataclass(frozen=True)
class ModelContract:
    """What an artefact computes and the preprocessing it expects (the versioned JSON contract).

    ``threshold`` is the decision threshold on ``prob_fake`` (label 1 when ``prob_fake >= threshold``).
    ``versions`` records the producing package / torch / onnx (/ tensorrt) versions. ``recons`` is what the
    checkpoint was trained with as its ``recons`` input (contracts written before the field read "original").
    """

    head: str = "simplified"
    preset: str = "faces"
    config: str = "base"
    frames: int = FRAMES
    image_size: int = IMAGE_SIZE
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    channel_order: str = "RGB"
    layout: str = "NTCHW"
    precision: str = "fp32"
    threshold: float = 0.5
    threshold_source: str = "default"
    recons: str = "original"
    checkpoint_sha256: str = ""
    demo_weights: bool = False
    exporter: str = ""
    opset: int = 0
    versions: Mapping[str, str] = field(default_factory=dict)
    extra: Mapping[str, Any] = field(default_factory=dict)
    contract_version: int = CONTRACT_VERSION

    def __post_init__(self) -> None:
        _check_choice("head", self.head, HEADS)
        _check_choice("preset", self.preset, PRESETS)
        _check_choice("precision", self.precision, PRECISIONS)
        _check_choice("recons", self.recons, RECONS_MODES)
        if self.channel_order != "RGB":
            raise ContractError(f"unsupported channel order {self.channel_order!r}; only RGB is defined")
        if not 0.0 <= float(self.threshold) <= 1.0:  # NaN fails this too
            raise ContractError(f"threshold {self.threshold} is outside [0, 1]")
        for name in ("frames", "image_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ContractError(f"{name} must be a positive integer, got {value!r}")
        # Checked here, when the model is opened, not mid-run: the normalisation divides by std per channel.
        for name in ("mean", "std"):
            values = getattr(self, name)
            if (len(values) != 3 or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in values)
                    or not all(math.isfinite(v) for v in values)):
                raise ContractError(f"{name} must be 3 finite numbers (R, G, B), got {list(values)!r}")
        if any(v <= 0 for v in self.std):
            raise ContractError(f"std must be positive per channel (it divides the pixels), got {list(self.std)!r}")

    # -- tensor declarations ---------------------------------------------------------------------
    @property
    def input_names(self) -> tuple[str, ...]:
        return input_names(self.head)

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        return input_specs(self.head, self.frames, self.image_size)

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        return output_specs()

    # -- (de)serialisation -----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["mean"] = list(self.mean)
        d["std"] = list(self.std)
        d["versions"] = dict(self.versions)
        d["extra"] = dict(self.extra)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "contract") -> ModelContract:
        if not isinstance(data, Mapping):
            raise ContractError(f"{source}: the contract is not a JSON object")
        version = int(data.get("contract_version", 0))
        if version < 1 or version > CONTRACT_VERSION:
            raise ContractError(
                f"{source}: contract version {version} is not supported by this mmdet-deploy "
                f"(supports 1..{CONTRACT_VERSION}); upgrade mmdet-deploy or re-export the model"
            )
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in names}
        try:
            for key in ("mean", "std"):
                if key in kwargs:
                    if not isinstance(kwargs[key], (list, tuple)):
                        raise ValueError(f"{key} must be a list of 3 numbers, got {kwargs[key]!r}")
                    kwargs[key] = tuple(float(x) for x in kwargs[key])
            return cls(**kwargs)
        except (TypeError, ValueError, ContractError) as exc:
            raise ContractError(f"{source}: invalid contract ({exc})") from exc

    @classmethod
    def from_json(cls, text: str, source: str = "contract") -> ModelContract:
        try:
            data = json.loads(text)
        except (TypeError, ValueError) as exc:
            raise ContractError(f"{source}: the contract is not valid JSON ({exc})") from exc
        return cls.from_dict(data, source)

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, str], source: str) -> ModelContract:
        """Read the contract from ONNX ``metadata_props`` (or ORT's ``custom_metadata_map``)."""
        if METADATA_KEY not in metadata:
            raise ContractError(
                f"{source}: no '{METADATA_KEY}' contract in the model metadata; "
                "export the model with `mmdet-export onnx` so that it carries its contract"
            )
        return cls.from_json(metadata[METADATA_KEY], source)

    # -- artefacts: the one place that reads and writes the contract inside a model file ----------------
    @classmethod
    def from_onnx(cls, model: Any, source: str | None = None) -> ModelContract:
        """The contract embedded in an ONNX model: an ``onnx.ModelProto``, or the path of an ``.onnx`` file
        (read without its external weights). :class:`ContractError` when it is missing or invalid."""
        if isinstance(model, (str, os.PathLike)):
            from mmdet_deploy.deps import require

            onnx = require("onnx", "reading the contract of an ONNX model")
            path = os.fspath(model)
            try:
                model = onnx.load(path, load_external_data=False)
            except Exception as exc:  # protobuf DecodeError, OSError...
                raise ContractError(f"{path}: not a readable ONNX model ({exc})") from exc
            source = source or path
        return cls.from_metadata({p.key: p.value for p in model.metadata_props}, source or "ONNX model")

    def to_onnx(self, model: Any) -> Any:
        """Stamp this contract into an ``onnx.ModelProto`` (in place; returned for chaining).

        Writes the JSON contract, the demo-weights flag, the producer and a readable ``doc_string``; every
        other ``metadata_props`` entry is kept. Every stage that writes a model (export, fp16, INT8,
        threshold) calls this, so the flag and the provenance always match the contract.
        """
        props = {p.key: p.value for p in model.metadata_props}
        props[METADATA_KEY] = self.to_json()
        props[DEMO_WEIGHTS_KEY] = str(bool(self.demo_weights)).lower()
        del model.metadata_props[:]
        for key, value in sorted(props.items()):
            entry = model.metadata_props.add()
            entry.key, entry.value = key, value
        model.producer_name = PRODUCER
        model.producer_version = __version__
        model.doc_string = (
            f"MM-Det ({self.config}, head {self.head}, {self.precision}); inputs {', '.join(self.input_names)} "
            f"float32 [batch,{self.frames},3,{self.image_size},{self.image_size}] ImageNet-normalised RGB; "
            "outputs logits [batch,2] (index 1 = fake), prob_fake"
            + (" -- DEMO WEIGHTS, predictions are meaningless" if self.demo_weights else "")
        )
        return model

    @classmethod
    def from_sidecar(cls, sidecar: Any, source: str = "engine sidecar") -> ModelContract:
        """The contract recorded in an engine sidecar (an ``EngineSidecar`` or its JSON dict)."""
        data = sidecar.get(SIDECAR_CONTRACT_KEY) if isinstance(sidecar, Mapping) else getattr(
            sidecar, SIDECAR_CONTRACT_KEY, None)
        if data is None:
            raise ContractError(f"{source}: the engine sidecar records no model contract; rebuild the engine")
        return cls.from_dict(data, source)

    def to_sidecar(self, sidecar: _Sidecar) -> _Sidecar:
        """A copy of ``sidecar`` (an ``EngineSidecar`` dataclass or its JSON dict) that carries this contract."""
        if isinstance(sidecar, Mapping):
            return {**sidecar, SIDECAR_CONTRACT_KEY: self.to_dict()}  # type: ignore[return-value]
        return dataclasses.replace(sidecar, **{SIDECAR_CONTRACT_KEY: self.to_dict()})  # type: ignore[type-var]

    def replace(self, **changes: Any) -> ModelContract:
        return dataclasses.replace(self, **changes)

    def label(self, prob_fake: float) -> int:
        """Decision for one probability of fake under this contract's threshold."""
        return int(prob_fake >= self.threshold)


def read_contract(model: Any, source: str | None = None) -> ModelContract:
    """The contract of an ONNX model or ``.onnx`` path: the functional spelling of :meth:`ModelContract.from_onnx`."""
    return ModelContract.from_onnx(model, source)
