"""Parity of an exported ONNX model against the PyTorch fp32 model it came from (ONNX Runtime, CPU)."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from mmdet_deploy.contract import LOGITS, ORIGINAL, RECONS, ModelContract
from mmdet_deploy.deps import require
from mmdet_deploy.errors import MMDetError, ParityError
from mmdet_deploy.parity import TOLERANCES, compare_logits

log = logging.getLogger(__name__)

MEDIA_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".mp4", ".avi", ".mov", ".mkv", ".webm"}


def sample_inputs(
    contract: ModelContract, samples: str | Path, limit: int = 4
) -> tuple[dict[str, np.ndarray], list[str]]:
    """Real clips (first window of up to ``limit`` files) through the runtime's own preprocessing."""
    from mmdet_deploy.runtime.preprocess import Preprocessor

    pre = Preprocessor(contract)
    files = sorted(p for p in Path(samples).rglob("*") if p.is_file() and p.suffix.lower() in MEDIA_SUFFIXES)
    clips, recons, used = [], [], []
    for path in files:
        try:
            item = pre(path)
        except MMDetError as exc:
            log.warning("parity sample skipped: %s", exc)
            continue
        clips.append(item.clips[0])
        recons.append(item.recons[0])
        used.append(str(path))
        if len(used) >= limit:
            break
    if not used:
        return {}, []
    inputs = {ORIGINAL: np.stack(clips), RECONS: np.stack(recons)}
    if contract.head == "fusion":  # no multimodal features for real media here: seeded stand-ins
        rng = np.random.default_rng(7)
        for spec in contract.inputs[2:]:
            inputs[spec.name] = rng.standard_normal(spec.concrete(len(used)), dtype=np.float32)
    return inputs, used


def run_torch(model: Any, contract: ModelContract, inputs: dict[str, np.ndarray]) -> tuple[np.ndarray, float]:
    torch = require("torch")
    args = [torch.from_numpy(inputs[n]) for n in contract.input_names]
    start = time.perf_counter()
    with torch.inference_mode():
        logits = model(*args).float().numpy()
    return logits, time.perf_counter() - start


def run_onnxruntime(session: Any, inputs: dict[str, np.ndarray]) -> tuple[np.ndarray, float]:
    start = time.perf_counter()
    logits = session.run([LOGITS], inputs)[0]
    return logits, time.perf_counter() - start


def check_parity(
    model: Any,
    onnx_path: Path,
    contract: ModelContract,
    report_path: Path,
    clips: int = 2,
    samples: str | Path | None = None,
    atol: float | None = None,
) -> dict[str, Any]:
    """Compare PyTorch fp32 and ONNX Runtime CPU logits; write ``report_path``; raise if out of tolerance."""
    from mmdet_deploy.export.tracing import example_inputs

    ort = require("onnxruntime", "parity checking")
    atol_logit, atol_prob = TOLERANCES[contract.precision]
    if atol is not None:
        atol_logit = atol
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    groups: dict[str, dict[str, np.ndarray]] = {"random": example_inputs(contract, clips, seed=2024)}
    used: list[str] = []
    if samples is not None:
        real, used = sample_inputs(contract, samples)
        if real:
            groups["samples"] = real
    report: dict[str, Any] = {
        "model": str(onnx_path),
        "precision": contract.precision,
        "reference": "PyTorch fp32 (prepared model), CPU",
        "candidate": "ONNX Runtime, CPUExecutionProvider",
        "tolerance": {"max_abs_logit": atol_logit, "max_abs_prob_fake": atol_prob},
        "sample_files": used,
        "demo_weights": contract.demo_weights,
        "groups": {},
    }
    all_ref, all_cand = [], []
    for name, inputs in groups.items():
        ref, t_torch = run_torch(model, contract, inputs)
        cand, t_ort = run_onnxruntime(session, inputs)
        n = len(ref)
        stats = compare_logits(ref, cand).to_dict()
        stats.update(torch_seconds_per_clip=t_torch / n, onnxruntime_seconds_per_clip=t_ort / n)
        report["groups"][name] = stats
        all_ref.append(ref)
        all_cand.append(cand)
    overall = compare_logits(np.concatenate(all_ref), np.concatenate(all_cand))
    passed = overall.within(atol_logit, atol_prob)  # also False on any NaN / infinity
    report["overall"] = overall.to_dict()
    report["passed"] = bool(passed)
    report_path.write_text(json.dumps(report, indent=2) + "\n")
    log.info(
        "parity %s: max|d logit| %.3g (tol %.3g), cosine %.8f, agreement %.3f over %d clips",
        "OK" if passed else "FAILED",
        overall.max_abs,
        atol_logit,
        overall.cosine,
        overall.agreement,
        overall.n,
    )
    if not passed and overall.non_finite:
        raise ParityError(
            f"{onnx_path}: {overall.non_finite} non-finite logits (NaN or infinity) from PyTorch or ONNX Runtime "
            f"({contract.precision}); model and report {report_path} kept"
        )
    if not passed:
        raise ParityError(
            f"{onnx_path}: ONNX Runtime differs from PyTorch: max |d logit| {overall.max_abs:.3g} > {atol_logit:.3g} "
            f"or max |d p(fake)| {overall.max_abs_prob:.3g} > {atol_prob:.3g}; model and report {report_path} kept"
        )
    return report
