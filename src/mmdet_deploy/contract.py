"""The model contract: tensor names and shapes, and the preprocessing an artefact expects.

This module is the single declaration read by the exporter (to name inputs and embed the contract),
by every runtime backend (to bind inputs and check the artefact), by calibration and by the tests.
It imports only the standard library and numpy.

The contract travels inside every artefact: as ONNX ``metadata_props`` under :data:`METADATA_KEY`,
and in the JSON sidecar of a TensorRT engine.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mmdet_deploy.errors import ContractError

#: Bumped when a field changes meaning; readers refuse a newer major version.
CONTRACT_VERSION = 1
#: Key of the JSON contract in ONNX ``metadata_props`` and in engine sidecars.
METADATA_KEY = "mmdet_deploy.contract"

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

#: Name of the dynamic batch axis in every tensor spec.
BATCH = "batch"

CLIP_INPUTS = ("original", "recons")
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
    ``versions`` records the producing package / torch / onnx (/ tensorrt) versions.
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
        if self.channel_order != "RGB":
            raise ContractError(f"unsupported channel order {self.channel_order!r}; only RGB is defined")
        if not 0.0 <= float(self.threshold) <= 1.0:
            raise ContractError(f"threshold {self.threshold} is outside [0, 1]")
        if self.frames < 1 or self.image_size < 1:
            raise ContractError(f"invalid frames/image_size {self.frames}/{self.image_size}")

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
        for key in ("mean", "std"):
            if key in kwargs:
                kwargs[key] = tuple(float(x) for x in kwargs[key])
        try:
            return cls(**kwargs)
        except (TypeError, ValueError) as exc:
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

    def replace(self, **changes: Any) -> ModelContract:
        return dataclasses.replace(self, **changes)

    def label(self, prob_fake: float) -> int:
        """Decision for one probability of fake under this contract's threshold."""
        return int(prob_fake >= self.threshold)
