"""Derived figures (achieved TFLOP/s, share of the measured peak) and the issue's targets, met or not.

Speed-ups compare two rows at the smallest batch size both measured (p50 latency per clip); the ratios
at every common batch size are kept in the report too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from mmdet_deploy.benchmarks.status import E2E_DISABLED, RowStatus, Status, is_ok, status_of

#: Precision of a row -> dtype of the measured peak it is compared with (INT8 against the fp16/fp32 peak:
#: the machine's int8 matmul peak is not measured; the share is then an upper-bound style indicator).
PEAK_DTYPE = {
    "cpu": {"fp32": "float32", "fp16": "float32", "bf16": "float32", "int8": "float32"},
    "cuda": {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16", "int8": "float16"},
}


def add_compute_figures(records: Sequence[dict[str, Any]], flops_per_clip: float, peaks: Mapping[str, Any]) -> None:
    """Add ``tflops`` and ``peak_share`` (0..1) to every measured batch of every record, in place.

    ``peaks`` maps ``"{device}:{dtype}"`` to a :func:`~.flops.measure_peak_tflops` result.
    """
    for rec in records:
        dtype = PEAK_DTYPE.get(rec["device"], {}).get(rec["precision"], "float32")
        peak = peaks.get(f"{rec['device']}:{dtype}")
        rec["peak_reference"] = f"{rec['device']}:{dtype}" if peak else None
        for batch in rec.get("batches", {}).values():
            if not is_ok(batch):
                continue
            batch["tflops"] = flops_per_clip * batch["clips_per_s"] / 1e12
            batch["peak_share"] = batch["tflops"] / peak["tflops"] if peak else None


def _by_key(records: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["key"]: r for r in records}


def speedup(records: Sequence[dict[str, Any]], fast: str, slow: str) -> dict[str, Any] | None:
    """Per-clip p50 speed-up of row ``fast`` over row ``slow``: ``{batch, ratio, by_batch}``, or None."""
    rows = _by_key(records)
    a, b = rows.get(fast), rows.get(slow)
    if not is_ok(a) or not is_ok(b):
        return None
    by_batch = {}
    for bs, fa in a["batches"].items():
        fb = b["batches"].get(bs)
        if is_ok(fa) and is_ok(fb):
            by_batch[bs] = fb["p50_ms_per_clip"] / fa["p50_ms_per_clip"]
    if not by_batch:
        return None
    first = min(by_batch, key=int)
    return {"batch": int(first), "ratio": by_batch[first], "by_batch": by_batch}


def _target(
    name: str, threshold: float, unit: str, value: float | None, why_na: str, detail: str = "",
    also: tuple[bool, str] = (True, ""),
) -> dict[str, Any]:
    """One target. ``unit`` ``x`` and ``ratio``: met when value >= threshold; ``max``: met when value <= threshold.
    ``also``: a further condition and what it means when it fails (e.g. a fidelity bound)."""
    if value is None:
        status = RowStatus(Status.NOT_APPLICABLE, why_na)
    else:
        ok = value <= threshold if unit == "max" else value >= threshold
        if ok and also[0]:
            status = RowStatus(Status.MET)
        else:
            status = RowStatus(Status.NOT_MET, also[1] if ok else "")
    return {"target": name, "threshold": threshold, "unit": unit, "value": value, "status": status.text,
            "detail": detail}


def _row_status(records: Sequence[dict[str, Any]], *keys: str) -> str:
    rows = _by_key(records)
    for key in keys:
        rec = rows.get(key)
        if rec is None:
            return f"{key} not in this run (--rows)"
        if not is_ok(rec):
            return f"{key} {status_of(rec).text}"
    return "rows share no batch size"


def evaluate_targets(records: Sequence[dict[str, Any]], e2e: Mapping[str, Any] | None,
                     fidelity_inputs: str = "synthetic") -> list[dict[str, Any]]:
    """The targets with measured value, threshold and ``met`` / ``not met`` / ``n/a: why``: issue 5's five,
    then issue 14's OpenVINO four (:func:`openvino_targets`). ``fidelity_inputs``: ``synthetic`` or ``media``."""
    out = []
    pairs = (
        ("CPU: ONNX Runtime fp32 at least as fast as PyTorch eager fp32 per clip", 1.0,
         "ort-fp32@cpu", "torch-eager-fp32@cpu"),
        ("CPU: ONNX Runtime INT8 at least 2x PyTorch eager fp32", 2.0, "ort-int8@cpu", "torch-eager-fp32@cpu"),
    )  # fmt: skip
    for name, threshold, fast, slow in pairs:
        s = speedup(records, fast, slow)
        detail = f"p50 per clip at batch {s['batch']}" if s else ""
        out.append(_target(name, threshold, "x", s["ratio"] if s else None, _row_status(records, fast, slow), detail))
    overlap = e2e.get("overlap_efficiency") if e2e else None
    ratio = e2e.get("speedup_vs_seed") if e2e else None
    why = status_of(e2e).text if e2e and "status" in e2e else E2E_DISABLED
    out.append(_target("End-to-end overlap efficiency (pipeline / model-only, same backend)", 0.9, "ratio", overlap,
                       why, (e2e or {}).get("overlap_detail", "")))
    out.append(_target("End-to-end at least 2x the seed-style pipeline (files/s, same model)", 2.0, "x", ratio, why))
    gpu = speedup(records, "torch-fp16-graphs@cuda", "torch-eager-fp32@cuda")
    out.append(
        _target(
            "GPU: PyTorch fp16 + fused attention + CUDA graphs at least 4x eager fp32", 4.0, "x",
            gpu["ratio"] if gpu else None, _row_status(records, "torch-fp16-graphs@cuda", "torch-eager-fp32@cuda"),
            f"p50 per clip at batch {gpu['batch']}" if gpu else "",
        )
    )  # fmt: skip
    return out + openvino_targets(records, e2e, fidelity_inputs)


def _fid(records: Sequence[dict[str, Any]], key: str) -> dict[str, Any]:
    return (_by_key(records).get(key) or {}).get("fidelity") or {}


def openvino_targets(records: Sequence[dict[str, Any]], e2e: Mapping[str, Any] | None,
                     fidelity_inputs: str) -> list[dict[str, Any]]:
    """Issue 14: OpenVINO fp32 parity, bf16 speed within its tolerance, the fastest INT8 path, end to end."""
    out = []
    fp32 = _fid(records, "ov-fp32@cpu")
    value = fp32.get("max_abs_dlogit") if is_ok(_by_key(records).get("ov-fp32@cpu")) else None
    out.append(_target("OpenVINO fp32: max |d logit| vs PyTorch fp32", 1e-4, "max", value,
                       _row_status(records, "ov-fp32@cpu"), f"{fp32.get('clips')} clips" if fp32 else "",
                       (not fp32.get("nonfinite"), "non-finite outputs")))
    bf16 = speedup(records, "ov-bf16@cpu", "ort-fp32@cpu")
    fid = _fid(records, "ov-bf16@cpu")
    within = bool(fid) and not fid.get("nonfinite") and fid["max_abs_dlogit"] <= 5e-2 and fid["max_abs_dprob"] <= 1e-2
    detail = (f"p50 per clip at batch {bf16['batch']}; max |d logit| {fid['max_abs_dlogit']:.2g} (<= 5e-2), "
              f"max |d p(fake)| {fid['max_abs_dprob']:.2g} (<= 1e-2)") if bf16 and fid else ""
    out.append(_target("OpenVINO bf16 at least 1.8x ONNX Runtime fp32, within the bf16 tolerances", 1.8, "x",
                       bf16["ratio"] if bf16 else None, _row_status(records, "ov-bf16@cpu", "ort-fp32@cpu"), detail,
                       (within, "outside the bf16 tolerances")))
    out.append(_fastest_int8(records, fidelity_inputs))
    ratio = e2e.get("speedup_vs_seed") if e2e else None
    overlap = (e2e or {}).get("overlap_efficiency")
    row = ((e2e or {}).get("pipeline") or {}).get("row", "")
    out.append(_target("End to end with the fastest CPU path at least 2.5x the seed-style loop, overlap >= 90 %",
                       2.5, "x", ratio, (e2e or {}).get("status", "end-to-end not run (--no-e2e)"),
                       f"{row}, overlap {100 * overlap:.1f} %" if overlap is not None else row,
                       (overlap is not None and overlap >= 0.9, "overlap efficiency below 90 %")))
    return out


def _fastest_int8(records: Sequence[dict[str, Any]], fidelity_inputs: str) -> dict[str, Any]:
    """The fastest INT8 CPU row against ONNX Runtime fp32, with agreement 1.0 and max |d p(fake)| <= 0.01."""
    name = ("Fastest INT8 path at least 3x ONNX Runtime fp32, agreement 1.0 and max |d p(fake)| <= 0.01 on "
            "held-out clips from media")
    best = None
    for rec in records:
        if rec.get("precision") == "int8" and rec.get("device") == "cpu":
            s = speedup(records, rec["key"], "ort-fp32@cpu")
            if s and (best is None or s["ratio"] > best[0]["ratio"]):
                best = (s, rec)
    if best is None:
        return _target(name, 3.0, "x", None, "no INT8 CPU row and ort-fp32 ran side by side")
    s, rec = best
    fid = rec.get("fidelity") or {}
    faithful = (fid.get("decision_agreement") == 1.0 and fid.get("max_abs_dprob", 1.0) <= 0.01
                and not fid.get("nonfinite"))
    detail = (f"{rec['key']} at batch {s['batch']}; agreement {fid.get('decision_agreement')}, max |d p(fake)| "
              f"{fid.get('max_abs_dprob', float('nan')):.2g} on {fid.get('clips')} {fidelity_inputs} clips")
    if fidelity_inputs != "media":
        return _target(name, 3.0, "x", s["ratio"], "", detail, (False, "fidelity measured on synthetic clips; "
                                                                  "run with --calibration media"))
    return _target(name, 3.0, "x", s["ratio"], "", detail, (faithful, "fidelity outside the bound"))
