"""Parity of an exported ONNX model against the PyTorch fp32 model it came from, on CPU backends.

ONNX Runtime by default; OpenVINO too with ``--check-backend onnxruntime,openvino[,openvino-bf16]``. Each
backend has its tolerance: the artefact precision's (fp32 1e-4), or bf16's for ``openvino-bf16``. A NaN or
infinite logit fails every backend's check.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mmdet_deploy.contract import LOGITS, ORIGINAL, RECONS, ModelContract
from mmdet_deploy.deps import require
from mmdet_deploy.errors import MMDetError, ParityError, UsageError
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


#: ``--check-backend`` name -> (what the report calls it, tolerance precision; None = the artefact's).
CHECK_BACKENDS: dict[str, tuple[str, str | None]] = {
    "onnxruntime": ("ONNX Runtime, CPUExecutionProvider", None),
    "openvino": ("OpenVINO CPU, INFERENCE_PRECISION_HINT=f32", None),
    "openvino-bf16": ("OpenVINO CPU, INFERENCE_PRECISION_HINT=bf16", "bf16"),
}


def parse_check_backends(text: str | Sequence[str]) -> list[str]:
    """``"onnxruntime,openvino"`` -> names of :data:`CHECK_BACKENDS` (:class:`UsageError` on others)."""
    names = [t.strip() for t in (text.split(",") if isinstance(text, str) else text) if t.strip()]
    unknown = [n for n in names if n not in CHECK_BACKENDS]
    if unknown or not names:
        raise UsageError(f"--check-backend {text!r}: choose a comma-separated subset of {', '.join(CHECK_BACKENDS)}")
    return list(dict.fromkeys(names))


def _runner(name: str, onnx_path: Path) -> Callable[[dict[str, np.ndarray]], np.ndarray]:
    """A function inputs -> logits on backend ``name`` (opened now, so that a bad setup fails early)."""
    if name == "onnxruntime":
        ort = require("onnxruntime", "parity checking")
        session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
        return lambda inputs: session.run([LOGITS], inputs)[0]
    from mmdet_deploy.runtime.backends import create_backend

    backend = create_backend("openvino", onnx_path, precision="bf16" if name.endswith("bf16") else "fp32").open()
    return lambda inputs: backend.infer(inputs)[LOGITS]


def _timed(run: Callable[[dict[str, np.ndarray]], np.ndarray], inputs: dict[str, np.ndarray]
           ) -> tuple[np.ndarray, float]:
    start = time.perf_counter()
    logits = run(inputs)
    return logits, time.perf_counter() - start


def check_parity(
    model: Any,
    onnx_path: Path,
    contract: ModelContract,
    report_path: Path,
    clips: int = 2,
    samples: str | Path | None = None,
    atol: float | None = None,
    backends: Sequence[str] = ("onnxruntime",),
) -> dict[str, Any]:
    """Compare PyTorch fp32 logits with each of ``backends`` (:data:`CHECK_BACKENDS`); write ``report_path``.

    The report's top-level ``candidate``, ``tolerance``, ``groups`` and ``overall`` are the first backend's;
    ``backends`` holds every backend's; ``passed`` is true when all passed. Raises :class:`ParityError` if not.
    """
    from mmdet_deploy.export.tracing import example_inputs

    backends = parse_check_backends(backends)
    runners = {name: _runner(name, onnx_path) for name in backends}
    groups: dict[str, dict[str, np.ndarray]] = {"random": example_inputs(contract, clips, seed=2024)}
    used: list[str] = []
    if samples is not None:
        real, used = sample_inputs(contract, samples)
        if real:
            groups["samples"] = real
    references = {name: run_torch(model, contract, inputs) for name, inputs in groups.items()}
    results = {name: _check_one(name, run, contract, groups, references, atol) for name, run in runners.items()}
    first = results[backends[0]]
    report: dict[str, Any] = {
        "model": str(onnx_path),
        "precision": contract.precision,
        "reference": "PyTorch fp32 (prepared model), CPU",
        "candidate": first["candidate"],
        "tolerance": first["tolerance"],
        "sample_files": used,
        "demo_weights": contract.demo_weights,
        "groups": first["groups"],
        "overall": first["overall"],
        "backends": results,
        "passed": all(r["passed"] for r in results.values()),
    }
    report_path.write_text(json.dumps(report, indent=2) + "\n")
    for name, r in results.items():
        o = r["overall"]
        log.info("parity on %s %s: max|d logit| %.3g (tol %.3g), cosine %.8f, agreement %.3f over %d clips", name,
                 "OK" if r["passed"] else "FAILED", o["max_abs"], r["tolerance"]["max_abs_logit"], o["cosine"],
                 o["agreement"], o["n"])
    failed = [n for n, r in results.items() if not r["passed"]]
    if failed:
        why = "; ".join(
            f"{n}: max |d logit| {results[n]['overall']['max_abs']:.3g} (tol "
            f"{results[n]['tolerance']['max_abs_logit']:.3g}), max |d p(fake)| "
            f"{results[n]['overall']['max_abs_prob']:.3g} (tol {results[n]['tolerance']['max_abs_prob_fake']:.3g}), "
            f"{results[n]['overall']['nonfinite']} non-finite clips" for n in failed
        )
        raise ParityError(f"{onnx_path}: differs from PyTorch ({why}); model and report {report_path} kept")
    return report


def _check_one(name: str, run: Callable[[dict[str, np.ndarray]], np.ndarray], contract: ModelContract,
               groups: dict[str, dict[str, np.ndarray]], references: dict[str, tuple[np.ndarray, float]],
               atol: float | None) -> dict[str, Any]:
    """One backend's figures per input group and overall, against the PyTorch references."""
    label, tolerance_of = CHECK_BACKENDS[name]
    atol_logit, atol_prob = TOLERANCES[tolerance_of or contract.precision]
    if atol is not None and tolerance_of is None:
        atol_logit = atol
    out: dict[str, Any] = {"candidate": label, "groups": {},
                           "tolerance": {"max_abs_logit": atol_logit, "max_abs_prob_fake": atol_prob}}
    all_ref, all_cand = [], []
    for group, inputs in groups.items():
        ref, t_torch = references[group]
        cand, t_cand = _timed(run, inputs)
        n = len(ref)
        stats = compare_logits(ref, cand).to_dict()
        stats.update(torch_seconds_per_clip=t_torch / n, candidate_seconds_per_clip=t_cand / n)
        if name == "onnxruntime":  # the name earlier reports used
            stats["onnxruntime_seconds_per_clip"] = t_cand / n
        out["groups"][group] = stats
        all_ref.append(ref)
        all_cand.append(cand)
    overall = compare_logits(np.concatenate(all_ref), np.concatenate(all_cand))
    out["overall"] = overall.to_dict()
    out["passed"] = overall.within(atol_logit, atol_prob)
    return out
