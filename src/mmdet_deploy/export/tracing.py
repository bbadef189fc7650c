"""The trace step of the export: the model behind a wrapper whose forward takes the contract's inputs, traced
with the dynamo exporter (fallback: the TorchScript exporter, and the reason is kept).
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

from mmdet_deploy.contract import OUTPUT_NAMES, ModelContract
from mmdet_deploy.deps import require
from mmdet_deploy.errors import ExportError, one_line

log = logging.getLogger(__name__)

#: Extra output with the pooled (B, C) feature that the head classifies (for INT8 gates).
FEATURES = "features"
#: Largest batch the dynamo exporter's symbolic batch axis is declared for.
MAX_TRACE_BATCH = 4096


def model_wrapper(model: Any, with_features: bool) -> Any:
    """A module whose forward takes the contract's inputs positionally and returns the contract's outputs."""
    torch = require("torch")

    class ClipWrapper(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def outputs(self, feats: Any) -> tuple[Any, ...]:
            logits = self.model.head(feats)
            prob = torch.softmax(logits, dim=1)[:, 1]
            return (logits, prob, feats) if with_features else (logits, prob)

        def forward(self, original: Any, recons: Any) -> tuple[Any, ...]:
            return self.outputs(self.model.features(original, recons))

    class FusionWrapper(ClipWrapper):
        def forward(self, original: Any, recons: Any, clip_feature: Any, mm_tokens: Any) -> tuple[Any, ...]:  # type: ignore[override]
            return self.outputs(self.model.features(original, recons, clip_feature, mm_tokens))

    return (FusionWrapper if model.head_mode == "fusion" else ClipWrapper)().eval()


def example_inputs(contract: ModelContract, batch: int, seed: int = 0) -> dict[str, Any]:
    """Seeded standard-normal float32 inputs for every contract input (numpy)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    return {s.name: rng.standard_normal(s.concrete(batch), dtype=np.float32) for s in contract.inputs}


def trace_to_onnx(
    wrapper: Any, contract: ModelContract, tmp: Path, opset: int, exporter: str, with_features: bool = False
) -> tuple[str, str]:
    """Export ``wrapper`` to ``tmp``; returns (exporter used, fallback reason or "")."""
    torch = require("torch")
    names = list(contract.input_names)
    outputs = list(OUTPUT_NAMES) + ([FEATURES] if with_features else [])
    args = tuple(_torch_inputs(contract, 2))
    reason = ""
    if exporter in ("auto", "dynamo"):
        try:
            batch = torch.export.Dim("batch", min=1, max=MAX_TRACE_BATCH)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                program = torch.onnx.export(
                    wrapper,
                    args,
                    dynamo=True,
                    input_names=names,
                    output_names=outputs,
                    opset_version=opset,
                    dynamic_shapes={n: {0: batch} for n in names},
                    optimize=True,
                    verbose=False,
                )
                program.save(str(tmp))
            return "dynamo", ""
        except Exception as exc:  # the dynamo exporter raises many types; fall back and say why
            if exporter == "dynamo":
                raise ExportError(f"the dynamo exporter failed: {type(exc).__name__}: {exc}") from exc
            reason = f"{type(exc).__name__}: {one_line(exc)}"
            log.warning("dynamo exporter failed (%s); falling back to the TorchScript exporter", reason)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapper,
            args,
            str(tmp),
            dynamo=False,
            input_names=names,
            output_names=outputs,
            opset_version=opset,
            dynamic_axes={n: {0: "batch"} for n in names + outputs},
            do_constant_folding=True,
        )
    return "torchscript", reason


def _torch_inputs(contract: ModelContract, batch: int) -> list[Any]:
    torch = require("torch")
    return [torch.from_numpy(a) for a in example_inputs(contract, batch, seed=1234).values()]
