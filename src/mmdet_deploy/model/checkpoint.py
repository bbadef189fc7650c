"""Checkpoint reading and strict loading (model-spec section 7), and deterministic demo weights.

Rules: ``.pth``/``.pt`` via ``torch.load(weights_only=True)`` (a file that needs arbitrary unpickling is
refused), ``.safetensors`` via safetensors; unwrap ``model_state_dict``; strip every ``module.``;
rename ``temporal_token`` to ``fc_token``; then a strict comparison with the model that reports missing,
unexpected and mis-shaped keys by name. Nothing is ever loaded partially.
"""

from __future__ import annotations

import logging
import pickle
import re
import warnings
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mmdet_deploy.errors import CheckpointError, StateDictMismatchError, UnsafeCheckpointError, UsageError
from mmdet_deploy.fileio import sha256_file

log = logging.getLogger(__name__)

#: Prefixes of the full model that only the ``fusion`` head uses.
FUSION_PREFIXES = ("clip_proj.", "mm_proj.", "final_fusion.")
#: Key under which demo checkpoints record what they are (inside the training-dump dict / safetensors metadata).
DEMO_KEY = "mmdet_deploy_demo"
SAFETENSORS_SUFFIXES = (".safetensors",)
DEMO_WARNING = "DEMO WEIGHTS: random, seeded weights; predictions are meaningless (toolchain testing only)"


@dataclass(frozen=True)
class CheckpointInfo:
    """What was read from a checkpoint file."""

    path: str
    sha256: str
    format: str  # "torch" or "safetensors"
    wrapped: bool  # a training dump with model_state_dict
    kind: str  # "full" (fusion weights present) or "simplified"
    num_tensors: int
    demo: bool
    demo_config: str | None = None


def normalize_key(key: str) -> str:
    """Strip every ``module`` path component (DataParallel) and rename ``temporal_token`` to ``fc_token``."""
    parts = [p for p in key.split(".") if p != "module"]
    parts = ["fc_token" if p == "temporal_token" else p for p in parts]
    return ".".join(parts)


def _read_raw(path: Path) -> tuple[Mapping[str, Any], dict[str, str], str]:
    """Return (top-level mapping, safetensors metadata, format) of a checkpoint file."""
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if not path.is_file():
        raise CheckpointError(f"{path}: not a regular file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: the checkpoint file is empty")
    if path.suffix.lower() in SAFETENSORS_SUFFIXES:
        from mmdet_deploy.deps import require

        require("safetensors", "reading .safetensors checkpoints")
        from safetensors import safe_open

        try:
            tensors: dict[str, torch.Tensor] = {}
            with safe_open(str(path), framework="pt") as f:
                metadata = dict(f.metadata() or {})
                for k in f.keys():
                    tensors[k] = f.get_tensor(k)
        except Exception as exc:  # safetensors raises several unrelated types on corrupt files
            raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from exc
        return tensors, metadata, "safetensors"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # protocol warnings of the weights-only unpickler
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if "Weights only load failed" not in text:
            raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({text.splitlines()[0]})") from exc
        detail = (
            text.split("WeightsUnpickler error:", 1)[-1].strip().splitlines()[0] if "WeightsUnpickler" in text else ""
        )
        raise UnsafeCheckpointError(
            f"{path}: refused: loading it needs arbitrary unpickling, which could run code ({detail or 'not tensors'})."
            " If you trust its origin, re-save only its state dict (torch.save(sd, 'clean.pth')) or convert it"
            " to .safetensors"
        ) from exc
    except Exception as exc:  # corrupt zip / truncated pickle raise RuntimeError, EOFError, IndexError, ...
        reason = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({type(exc).__name__}: {reason})") from exc
    if not isinstance(obj, Mapping):
        raise CheckpointError(
            f"{path}: expected a state dict (a mapping of names to tensors), got {type(obj).__name__}"
        )
    return obj, {}, "torch"


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], CheckpointInfo]:
    """Read a checkpoint file and return its normalised state dict and a description."""
    path = Path(path)
    raw, metadata, fmt = _read_raw(path)
    wrapped = "model_state_dict" in raw
    demo_meta: Any = raw.get(DEMO_KEY) if wrapped else None
    if metadata.get(DEMO_KEY):
        demo_meta = {"config": metadata.get(DEMO_KEY)}
    state = raw["model_state_dict"] if wrapped else raw
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{path}: 'model_state_dict' is not a mapping")
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(
                f"{path}: entry {key!r} is a {type(value).__name__}, not a tensor; is this a model state dict?"
            )
        new = normalize_key(str(key))
        if new in out:
            raise CheckpointError(f"{path}: two entries map to the same key {new!r} after normalisation")
        out[new] = value
    if not out:
        raise CheckpointError(f"{path}: the checkpoint holds no tensors")
    info = CheckpointInfo(
        path=str(path),
        sha256=sha256_file(path),
        format=fmt,
        wrapped=wrapped,
        kind="full" if any(k.startswith(FUSION_PREFIXES) for k in out) else "simplified",
        num_tensors=len(out),
        demo=demo_meta is not None,
        demo_config=(demo_meta or {}).get("config") if isinstance(demo_meta, Mapping) else None,
    )
    return out, info


def group_keys(keys: Iterable[str], limit: int = 12) -> str:
    """Summarise key names, collapsing numeric indices of repeated ones: ``backbone.blocks.*.attn.qkv.weight (x12)``."""
    groups: dict[str, list[str]] = defaultdict(list)
    for key in keys:
        groups[re.sub(r"\.\d+(?=\.|$)", ".*", key)].append(key)
    items = [f"{g} (x{len(ks)})" if len(ks) > 1 else ks[0] for g, ks in sorted(groups.items())]
    more = f", ... and {len(items) - limit} more groups" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def state_differences(expected: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor],
                      ) -> tuple[list[str], list[str], list[str]]:
    """``(missing, unexpected, problems)`` of ``state`` against ``expected``: the missing and unexpected key
    names, and one summary part per kind of difference (missing, unexpected, wrong shape); none when they fit."""
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k} (checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)})"
        for k in expected
        if k in state and tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing: {group_keys(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected: {group_keys(unexpected)}")
    if mismatched:
        shown = "; ".join(mismatched[:8]) + (f"; ... {len(mismatched) - 8} more" if len(mismatched) > 8 else "")
        problems.append(f"{len(mismatched)} with the wrong shape: {shown}")
    return missing, unexpected, problems


def check_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """Return the state dict restricted to the model's keys, or raise with every difference by name.

    Fusion weights in a full checkpoint are accepted (and ignored) by the ``simplified`` and ``fc`` heads.
    """
    expected = model.state_dict()
    head_mode = getattr(model, "head_mode", None)
    usable = dict(state)
    if head_mode != "fusion":
        usable = {k: v for k, v in state.items() if not k.startswith(FUSION_PREFIXES)}
    missing, unexpected, problems = state_differences(expected, usable)
    if head_mode == "fusion" and missing and all(k.startswith(FUSION_PREFIXES) for k in missing):
        raise StateDictMismatchError(
            f"{source}: head 'fusion' needs the full checkpoint, but this is a simplified one (backbone + head "
            f"only); missing: {group_keys(missing)}. Use head 'simplified' or 'fc', or supply the full checkpoint"
        )
    if problems:
        raise StateDictMismatchError(f"{source}: checkpoint does not fit the model; " + " | ".join(problems))
    return {k: usable[k] for k in expected}


def load_model(
    checkpoint: str | Path, head: str = "simplified", config: str = "base", *, prepare: bool = True
) -> nn.Module:
    """Build MM-Det with ``head`` and ``config``, load ``checkpoint`` strictly, return it in eval mode.

    ``forward(original, recons)`` (plus ``clip_feature, mm_tokens`` for ``fusion``) takes float32
    (B, 10, 3, 224, 224) tensors and returns logits (B, 2), index 1 = fake. With ``prepare`` (default) the
    conv weights are standardised once in fp32, eval BatchNorm is folded and the embeddings are
    precomputed; the state-dict keys are unchanged. ``model.checkpoint_info`` describes the file.
    """
    from mmdet_deploy.model.mmdet import MMDet

    state, info = read_checkpoint(checkpoint)
    model = MMDet(config, head)
    try:
        usable = check_state_dict(model, state, str(checkpoint))
    except StateDictMismatchError as exc:
        if info.demo_config and info.demo_config != model.cfg.name:
            raise StateDictMismatchError(
                f"{exc} (these are demo weights of config '{info.demo_config}': pass config='{info.demo_config}')"
            ) from None
        raise
    model.load_state_dict(usable, strict=True)
    model.eval()
    if info.demo:
        warnings.warn(f"{checkpoint}: {DEMO_WARNING}", UserWarning, stacklevel=2)
    if prepare:
        model.prepare()
    model.checkpoint_info = info  # type: ignore[assignment]
    return model


# ---------------------------------------------------------------------------------------------------
# demo weights
# ---------------------------------------------------------------------------------------------------


@torch.no_grad()
def init_demo_weights(model: nn.Module, seed: int) -> None:
    """Seeded random weights with realistic statistics (BatchNorm stats included, so folding is exercised)."""
    gen = torch.Generator().manual_seed(seed)

    def normal(t: torch.Tensor, std: float, mean: float = 0.0) -> None:
        t.copy_(torch.randn(t.shape, generator=gen) * std + mean)

    for name, param in model.state_dict(keep_vars=True).items():
        t = param.data if isinstance(param, nn.Parameter) else param
        leaf = name.rsplit(".", 1)[-1]
        if leaf == "num_batches_tracked":
            t.fill_(1000)
        elif leaf == "running_mean":
            normal(t, 0.1)
        elif leaf == "running_var":
            t.copy_(torch.rand(t.shape, generator=gen) + 0.5)
        elif t.ndim == 4:  # conv kernels (raw; weight standardisation rescales most of them)
            fan_in = t.shape[1] * t.shape[2] * t.shape[3]
            normal(t, (2.0 / fan_in) ** 0.5)
        elif leaf == "weight" and t.ndim == 1:  # norm scales
            normal(t, 0.1, 1.0)
        elif leaf == "bias":
            normal(t, 0.02)
        else:  # linears, tokens and embeddings
            normal(t, 0.02)


def write_demo_checkpoint(out: str | Path, config: str = "base", seed: int = 0, head: str = "fusion") -> Path:
    """Write a deterministic random checkpoint in the real full format (705 keys for ``base``).

    ``.safetensors`` files carry the demo marker in their metadata; ``.pth``/``.pt`` files are a
    training dump ``{model_state_dict, epoch, step, mmdet_deploy_demo}`` (loadable with weights_only).
    """
    from mmdet_deploy.model.mmdet import MMDet

    out = Path(out)
    if out.suffix.lower() not in (".pth", ".pt", *SAFETENSORS_SUFFIXES):
        raise UsageError(f"{out}: demo weights are written as .pth, .pt or .safetensors")
    model = MMDet(config, head)
    init_demo_weights(model, seed)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    try:
        if out.suffix.lower() in SAFETENSORS_SUFFIXES:
            from safetensors.torch import save_file

            save_file(state, str(tmp), metadata={DEMO_KEY: model.cfg.name, "seed": str(seed)})
        else:
            demo = {"config": model.cfg.name, "seed": seed, "note": DEMO_WARNING}
            torch.save({"model_state_dict": state, "epoch": 0, "step": 0, DEMO_KEY: demo}, str(tmp))
        tmp.replace(out)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise CheckpointError(f"{out}: could not write the checkpoint ({exc})") from exc
    log.warning("%s: %s", out, DEMO_WARNING)
    return out
