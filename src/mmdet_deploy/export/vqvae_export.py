"""VQ-VAE checkpoint -> ONNX (``mmdet-export vqvae``): dynamic batch/height/width, BatchNorm folded, contract
embedded, written atomically, parity against the PyTorch reference proven on ONNX Runtime (CPU).

Steps: strict load -> :class:`~mmdet_deploy.model.vqvae.ExportableVQVAE` (folded BatchNorm, distances as a
1x1 convolution) -> dynamo export (fallback: TorchScript exporter) -> drop unused initializers, optional
onnxslim -> check the graph (one ``ArgMin`` with ``select_last_index=0``, no ``BatchNormalization``) ->
contract -> ``onnx.checker`` -> atomic write -> ``NAME.parity.json`` (exit 3 when out of tolerance).
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmdet_deploy import __version__
from mmdet_deploy.deps import require
from mmdet_deploy.errors import ExportError, UsageError
from mmdet_deploy.export.onnx_export import (
    _simplify,
    artefact_paths,
    check_output_path,
    remove_unused_initializers,
    save_atomic,
    versions,
)
from mmdet_deploy.runtime.vqvae_contract import (
    VQVAE_CODES,
    VQVAE_INPUT,
    VQVAE_METADATA_KEY,
    VQVAE_OUTPUT,
    VQVAEContract,
)
from mmdet_deploy.runtime.vqvae_geometry import receptive_margin

log = logging.getLogger(__name__)

MIN_OPSET = 13  # ArgMin select_last_index needs opset >= 12; ReduceSum with axes as input >= 13


@dataclass
class VQVAEExportResult:
    """What :func:`export_vqvae` wrote and measured."""

    path: Path
    contract: VQVAEContract
    exporter: str
    opset: int
    export_seconds: float
    size_bytes: int
    node_count: int
    parity: dict[str, Any] | None = None
    parity_path: Path | None = None
    notes: list[str] = field(default_factory=list)


def _trace(module: Any, tmp: Path, opset: int, exporter: str) -> tuple[str, str]:
    """Export ``module`` to ``tmp`` with batch, height and width dynamic; returns (exporter, fallback reason)."""
    torch = require("torch")
    example = (torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(0)),)
    names, outputs = [VQVAE_INPUT], [VQVAE_OUTPUT, VQVAE_CODES]
    reason = ""
    if exporter in ("auto", "dynamo"):
        try:
            dims = {
                0: torch.export.Dim("batch", min=1, max=4096),
                2: torch.export.Dim("height", min=4, max=16384),
                3: torch.export.Dim("width", min=4, max=16384),
            }
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                program = torch.onnx.export(
                    module, example, dynamo=True, input_names=names, output_names=outputs,
                    opset_version=opset, dynamic_shapes={VQVAE_INPUT: dims}, optimize=True, verbose=False,
                )  # fmt: skip
                program.save(str(tmp))
            return "dynamo", ""
        except Exception as exc:  # the dynamo exporter raises many types; fall back and say why
            if exporter == "dynamo":
                raise ExportError(f"the dynamo exporter failed: {type(exc).__name__}: {exc}") from exc
            reason = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
            log.warning("dynamo exporter failed (%s); falling back to the TorchScript exporter", reason)
    axes = {VQVAE_INPUT: {0: "batch", 2: "height", 3: "width"}, VQVAE_OUTPUT: {0: "batch", 2: "out_h", 3: "out_w"},
            VQVAE_CODES: {0: "batch", 1: "latent_h", 2: "latent_w"}}  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module, example, str(tmp), dynamo=False, input_names=names, output_names=outputs,
            opset_version=opset, dynamic_axes=axes, do_constant_folding=True,
        )  # fmt: skip
    return "torchscript", reason


def check_graph(proto: Any, source: str) -> None:
    """The quantisation must be one ``ArgMin`` over the code axis with ties to the lowest index (made explicit
    when the exporter left the attribute at its default), and no BatchNorm may remain."""
    onnx = require("onnx")
    argmins = [n for n in proto.graph.node if n.op_type == "ArgMin"]
    if len(argmins) != 1:
        raise ExportError(f"{source}: expected one ArgMin (the quantisation), found {len(argmins)}")
    node = argmins[0]
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    if attrs.get("axis", 0) != 1 or attrs.get("keepdims", 1) != 0:
        raise ExportError(f"{source}: ArgMin {node.name!r} is not over the code axis ({attrs})")
    if attrs.get("select_last_index", 0) != 0:
        raise ExportError(f"{source}: ArgMin selects the last index on ties; the reference takes the first")
    if "select_last_index" not in attrs:
        node.attribute.append(onnx.helper.make_attribute("select_last_index", 0))
    bns = [n.name for n in proto.graph.node if n.op_type == "BatchNormalization"]
    if bns:
        raise ExportError(f"{source}: BatchNormalization left in the graph ({', '.join(bns[:4])}); folding failed")


def set_vqvae_contract(proto: Any, contract: VQVAEContract) -> None:
    """Write the JSON contract into ``metadata_props`` and a readable description into ``doc_string``."""
    props = {p.key: p.value for p in proto.metadata_props}
    props[VQVAE_METADATA_KEY] = contract.to_json()
    props["mmdet_deploy.demo_weights"] = str(contract.demo_weights).lower()
    del proto.metadata_props[:]
    for key, value in sorted(props.items()):
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name = "mmdet-deploy"
    proto.producer_version = __version__
    proto.doc_string = (
        f"MM-Det VQ-VAE (width {contract.width}, {contract.codes} codes, BatchNorm folded); input {VQVAE_INPUT} "
        f"float32 [batch,3,H,W] RGB normalised with mean/std 0.5; outputs {VQVAE_OUTPUT} [batch,3,4*(H//4),"
        f"4*(W//4)] in [-1,1] and {VQVAE_CODES} int64 [batch,H//4,W//4]"
        + (" -- DEMO WEIGHTS, reconstructions are meaningless" if contract.demo_weights else "")
    )


def export_vqvae(
    weights: str | Path,
    out: str | Path,
    *,
    config: str | None = None,
    opset: int = 18,
    simplify: bool = True,
    check: bool = True,
    samples: str | Path | None = None,
    exporter: str = "auto",
    max_share: float | None = None,
) -> VQVAEExportResult:
    """Export the VQ-VAE checkpoint ``weights`` to ``out``; see the module docstring.

    Raises :class:`~mmdet_deploy.errors.ParityError` (exit 3) after writing the model and its report when
    ONNX Runtime's reconstructions differ from PyTorch's on more than ``max_share`` of the pixels by more
    than one grey level (default 0.5 %, issue 16's tolerance).
    """
    from mmdet_deploy.model.vqvae import ExportableVQVAE
    from mmdet_deploy.model.vqvae_io import load_vqvae

    onnx = require("onnx", "ONNX export")
    out = Path(out)
    if opset < MIN_OPSET:
        raise UsageError(f"opset {opset} is too old: the VQ-VAE graph needs opset >= {MIN_OPSET}")
    if exporter not in ("auto", "dynamo", "torchscript"):
        raise UsageError(f"unknown exporter {exporter!r}; choose auto, dynamo or torchscript")
    check_output_path(out)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the demo-weights warning is logged below, once
        model, info = load_vqvae(weights, config)
    if info.demo:
        log.warning("%s: demo VQ-VAE weights; the exported model's reconstructions are meaningless", weights)
    before, after = receptive_margin()
    contract = VQVAEContract(
        width=model.cfg.width, codes=model.cfg.codes, margin=max(before, after), checkpoint_sha256=info.sha256,
        demo_weights=info.demo, opset=opset, versions=versions(),
        extra={"checkpoint": Path(weights).name, "config": model.cfg.name},
    )  # fmt: skip
    tmp = out.with_name(f".{out.name}.{os.getpid()}.trace.onnx")
    notes: list[str] = []
    try:
        used, reason = _trace(ExportableVQVAE(model).eval(), tmp, opset, exporter)
        proto = onnx.load(str(tmp))
    finally:
        tmp.unlink(missing_ok=True)
    if reason:
        notes.append(f"dynamo exporter failed ({reason}); the TorchScript exporter produced the file")
    real_opset = next((imp.version for imp in proto.opset_import if imp.domain in ("", "ai.onnx")), opset)
    remove_unused_initializers(proto)
    if simplify:
        proto = _simplify(proto, notes)
    check_graph(proto, str(out))
    contract = contract.replace(exporter=used, opset=real_opset, extra={**contract.extra, "fallback_reason": reason})
    set_vqvae_contract(proto, contract)
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"{out}: onnx.checker rejected the exported graph: {exc}") from exc
    save_atomic(proto, out)
    result = VQVAEExportResult(
        path=out, contract=contract, exporter=used, opset=real_opset, export_seconds=time.perf_counter() - start,
        size_bytes=out.stat().st_size, node_count=len(proto.graph.node), notes=notes,
    )  # fmt: skip
    if check:
        from mmdet_deploy.export.vqvae_parity import check_vqvae_parity

        parity_path = artefact_paths(out)[1]
        result.parity = check_vqvae_parity(model, out, contract, parity_path, samples=samples, max_share=max_share)
        result.parity_path = parity_path
    return result
