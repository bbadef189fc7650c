"""The VQ-VAE artefact's contract: tensor names, the pre/post-processing it expects, what it was built from.

The reconstruction model of MM-Det (model-spec section 9) is exported on its own (``mmdet-export vqvae``).
Its contract travels in the ONNX ``metadata_props`` under :data:`VQVAE_METADATA_KEY` and is read by
:class:`mmdet_deploy.runtime.recons.VQVAEReconstructor`. Standard library only, like ``contract.py``.

Graph signature: input :data:`VQVAE_INPUT` float32 ``[batch, 3, height, width]`` (RGB, ``ToTensor`` then
``Normalize(0.5, 0.5)``: values in [-1, 1]); outputs :data:`VQVAE_OUTPUT` float32
``[batch, 3, 4*(height//4), 4*(width//4)]`` (the decoder's Tanh, in [-1, 1]) and :data:`VQVAE_CODES` int64
``[batch, height//4, width//4]`` (the codebook index of every latent position).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mmdet_deploy.contract import RECONS_MODES
from mmdet_deploy.errors import ContractError

VQVAE_CONTRACT_VERSION = 1
VQVAE_METADATA_KEY = "mmdet_deploy.vqvae_contract"
VQVAE_INPUT = "image"
VQVAE_OUTPUT = "recons"
VQVAE_CODES = "codes"
#: Total stride of the encoder (two 4x4/s2 convolutions): the output is 4*(H//4) x 4*(W//4).
VQVAE_STRIDE = 4


@dataclass(frozen=True)
class VQVAEContract:
    """What a VQ-VAE artefact computes: ``VectorQuantizedVAE(3, width, K=codes)`` with BatchNorm folded.

    ``quantisation`` names the rule the graph implements (nearest code by ||c||^2 + ||z||^2 - 2 z.c, ties
    to the lowest index, as ``torch.min`` of the reference). ``margin`` is the receptive-field margin in
    input pixels per side that the crop-with-margin method uses (derived from the architecture at export).
    """

    width: int = 256
    codes: int = 512
    in_channels: int = 3
    stride: int = VQVAE_STRIDE
    mean: float = 0.5
    std: float = 0.5
    channel_order: str = "RGB"
    layout: str = "NCHW"
    quantisation: str = "argmin(|c|^2 + |z|^2 - 2 z.c), ties to the lowest index"
    batchnorm_folded: bool = True
    margin: int = 0
    checkpoint_sha256: str = ""
    demo_weights: bool = False
    exporter: str = ""
    opset: int = 0
    versions: Mapping[str, str] = field(default_factory=dict)
    extra: Mapping[str, Any] = field(default_factory=dict)
    kind: str = "vqvae"
    contract_version: int = VQVAE_CONTRACT_VERSION

    def __post_init__(self) -> None:
        if self.kind != "vqvae":
            raise ContractError(f"not a VQ-VAE contract (kind {self.kind!r})")
        if self.width < 1 or self.codes < 1 or self.in_channels != 3:
            raise ContractError(f"invalid VQ-VAE shape: width {self.width}, codes {self.codes}, {self.in_channels} ch")
        if self.channel_order != "RGB" or self.layout != "NCHW" or self.stride != VQVAE_STRIDE:
            raise ContractError(
                f"unsupported VQ-VAE layout {self.channel_order}/{self.layout}/stride {self.stride}; "
                f"this runtime implements RGB/NCHW/stride {VQVAE_STRIDE}"
            )

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["versions"] = dict(self.versions)
        d["extra"] = dict(self.extra)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def replace(self, **changes: Any) -> VQVAEContract:
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, str], source: str) -> VQVAEContract:
        """Read the contract from ONNX ``metadata_props`` (or ONNX Runtime's ``custom_metadata_map``)."""
        if VQVAE_METADATA_KEY not in metadata:
            hint = (
                " (this is an MM-Det detector, not a VQ-VAE)"
                if "mmdet_deploy.contract" in metadata
                else "; export the VQ-VAE with `mmdet-export vqvae` so that it carries its contract"
            )
            raise ContractError(f"{source}: no '{VQVAE_METADATA_KEY}' contract in the model metadata{hint}")
        try:
            data = json.loads(metadata[VQVAE_METADATA_KEY])
        except (TypeError, ValueError) as exc:
            raise ContractError(f"{source}: the VQ-VAE contract is not valid JSON ({exc})") from exc
        if not isinstance(data, Mapping):
            raise ContractError(f"{source}: the VQ-VAE contract is not a JSON object")
        version = int(data.get("contract_version", 0))
        if version < 1 or version > VQVAE_CONTRACT_VERSION:
            raise ContractError(
                f"{source}: VQ-VAE contract version {version} is not supported (supports 1..{VQVAE_CONTRACT_VERSION})"
            )
        names = {f.name for f in dataclasses.fields(cls)}
        try:
            return cls(**{k: v for k, v in data.items() if k in names})
        except (TypeError, ValueError) as exc:
            raise ContractError(f"{source}: invalid VQ-VAE contract ({exc})") from exc


#: Re-exported: what ``recons`` a detector is fed (``ModelContract.recons``), the frame or its reconstruction.
__all__ = ["RECONS_MODES", "VQVAE_CODES", "VQVAE_INPUT", "VQVAE_METADATA_KEY", "VQVAE_OUTPUT", "VQVAEContract"]
