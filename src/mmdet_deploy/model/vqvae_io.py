"""Strict, safe loading of VQ-VAE checkpoints (``vqvae/model.pt``) and seeded demo weights.

Same rules as the detector's loader (``model/checkpoint.py``): ``torch.load(weights_only=True)`` (a file
that needs arbitrary unpickling is refused) or safetensors; a training dump's ``model_state_dict`` is
unwrapped and ``module.`` prefixes stripped; then every missing, unexpected or mis-shaped key is named and
nothing loads partially. The reference's file is a plain state dict loaded with ``strict=True``.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from mmdet_deploy.errors import CheckpointError, StateDictMismatchError, UsageError
from mmdet_deploy.model.checkpoint import (
    DEMO_KEY,
    SAFETENSORS_SUFFIXES,
    CheckpointInfo,
    init_demo_weights,
    read_checkpoint,
    state_differences,
)
from mmdet_deploy.model.vqvae import VectorQuantizedVAE, VQVAEConfig, get_vqvae_config

log = logging.getLogger(__name__)

VQVAE_DEMO_WARNING = "DEMO VQ-VAE WEIGHTS: random, seeded weights; reconstructions are meaningless (testing only)"
#: Prefix of the demo marker's config name, so a detector's demo marker is never taken for a VQ-VAE's.
DEMO_PREFIX = "vqvae-"


def check_vqvae_state(model: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Raise :class:`StateDictMismatchError` naming every missing, unexpected and mis-shaped key."""
    _, _, problems = state_differences(model.state_dict(), state)
    if problems:
        raise StateDictMismatchError(f"{source}: checkpoint does not fit the VQ-VAE; " + " | ".join(problems))


def demo_config_of(info: CheckpointInfo) -> str | None:
    """The VQ-VAE config a demo checkpoint was written for (None for real weights)."""
    name = info.demo_config or ""
    return name[len(DEMO_PREFIX) :] if info.demo and name.startswith(DEMO_PREFIX) else None


def load_vqvae(
    checkpoint: str | Path, config: str | VQVAEConfig | None = None
) -> tuple[VectorQuantizedVAE, CheckpointInfo]:
    """Build the VQ-VAE, load ``checkpoint`` strictly, return it in eval mode with the file's description.

    ``config`` None takes the demo marker's config for demo weights, else ``base`` (the reference's
    ``VectorQuantizedVAE(3, 256, K=512)``).
    """
    state, info = read_checkpoint(checkpoint)
    if info.demo and demo_config_of(info) is None:
        raise CheckpointError(
            f"{checkpoint}: these are demo weights of an MM-Det detector ({info.demo_config}), not of a VQ-VAE"
        )
    chosen = get_vqvae_config(config or demo_config_of(info) or "base")
    model = VectorQuantizedVAE(chosen)
    try:
        check_vqvae_state(model, state, str(checkpoint))
    except StateDictMismatchError as exc:
        demo = demo_config_of(info)
        if demo and demo != chosen.name:
            raise StateDictMismatchError(f"{exc} (demo weights of VQ-VAE config '{demo}': pass that config)") from None
        raise
    model.load_state_dict(state, strict=True)
    model.eval()
    if info.demo:
        warnings.warn(f"{checkpoint}: {VQVAE_DEMO_WARNING}", UserWarning, stacklevel=2)
    return model, info


@torch.no_grad()
def init_vqvae_demo_weights(model: VectorQuantizedVAE, seed: int) -> None:
    """Seeded random weights whose activations stay in range (He-scaled transposed convs, a codebook drawn
    from the latents' own scale), with BatchNorm statistics so that folding is exercised."""
    init_demo_weights(model, seed)
    gen = torch.Generator().manual_seed(seed + 1)
    for module in model.modules():
        if isinstance(module, nn.ConvTranspose2d):  # (in, out, k, k): each output sums in * (k/stride)^2 taps
            fan_in = module.weight.shape[0] * (module.weight.shape[2] // module.stride[0]) ** 2
            module.weight.copy_(torch.randn(module.weight.shape, generator=gen) * (2.0 / fan_in) ** 0.5)
    last = model.decoder[6]
    last.weight.mul_(0.5)  # keep Tanh out of saturation: reconstructions span the grey levels
    codebook = model.codebook.embedding.weight
    codebook.copy_(torch.randn(codebook.shape, generator=gen) * 0.5)


def write_vqvae_demo(out: str | Path, config: str = "base", seed: int = 0) -> Path:
    """Write deterministic random VQ-VAE weights: a training-dump dict ``{model_state_dict, mmdet_deploy_demo}``
    (``.pt``/``.pth``) or safetensors with the marker in its metadata. The state dict has the reference's keys."""
    out = Path(out)
    if out.suffix.lower() not in (".pth", ".pt", *SAFETENSORS_SUFFIXES):
        raise UsageError(f"{out}: demo weights are written as .pt, .pth or .safetensors")
    cfg = get_vqvae_config(config)
    model = VectorQuantizedVAE(cfg)
    init_vqvae_demo_weights(model, seed)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    marker = DEMO_PREFIX + cfg.name
    try:
        if out.suffix.lower() in SAFETENSORS_SUFFIXES:
            from safetensors.torch import save_file

            save_file(state, str(tmp), metadata={DEMO_KEY: marker, "seed": str(seed)})
        else:
            demo = {"config": marker, "seed": seed, "note": VQVAE_DEMO_WARNING}
            torch.save({"model_state_dict": state, DEMO_KEY: demo}, str(tmp))
        tmp.replace(out)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise CheckpointError(f"{out}: could not write the checkpoint ({exc})") from exc
    log.warning("%s: %s", out, VQVAE_DEMO_WARNING)
    return out
