"""Parity metrics between a reference and a candidate (numpy only; used by export, engines, INT8, bench).

Tolerances per precision live here, in one table, with the reason for each. A NaN or infinity in either
side's logits is never "within tolerance" (``nan <= tol`` happens to be False, but every gate here checks
:attr:`ParityStats.nonfinite` explicitly rather than rely on that), and a non-finite decision never counts
as agreeing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

#: precision -> (max |d logit|, max |d p(fake)|); see deployment-facts.md section 4.
TOLERANCES: Mapping[str, tuple[float, float]] = {
    "fp32": (1e-4, 1e-5),  # ONNX fp32 vs PyTorch fp32 (ViT-B class, measured ~3e-6)
    "fp16": (5e-2, 1e-2),  # mixed precision with norms/softmax in fp32
    "bf16": (5e-2, 1e-2),  # bf16 arithmetic (OpenVINO / autocast); 8 mantissa bits instead of fp16's 11
    "int8": (float("inf"), float("inf")),  # judged by decision agreement, not by logit error
}


def softmax_fake(logits: np.ndarray) -> np.ndarray:
    """p(fake) = softmax(logits)[:, 1], computed in float64 for stability."""
    z = np.asarray(logits, dtype=np.float64)
    with np.errstate(invalid="ignore"):  # a NaN / inf logit gives a NaN probability, which callers check
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e[:, 1] / e.sum(axis=1)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two arrays, flattened (1.0 for two all-zero arrays)."""
    x = np.asarray(a, dtype=np.float64).ravel()
    y = np.asarray(b, dtype=np.float64).ravel()
    nx, ny = np.linalg.norm(x), np.linalg.norm(y)
    if nx == 0.0 and ny == 0.0:
        return 1.0
    if nx == 0.0 or ny == 0.0:
        return 0.0
    with np.errstate(invalid="ignore"):  # NaN in, NaN out (the gates count non-finite values themselves)
        return float(np.dot(x, y) / (nx * ny))


@dataclass(frozen=True)
class ParityStats:
    """How far a candidate's logits are from the reference's, over N clips."""

    n: int
    max_abs: float
    mean_abs: float
    max_rel: float
    cosine: float
    max_abs_prob: float
    mean_abs_prob: float
    agreement: float  # share of clips with the same decision (argmax / threshold 0.5)
    nonfinite: int = 0  # clips with a NaN or infinite logit in either array: never within any tolerance

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def within(self, atol_logit: float, atol_prob: float = float("inf"), min_agreement: float = 0.0) -> bool:
        return (self.nonfinite == 0 and self.max_abs <= atol_logit and self.max_abs_prob <= atol_prob
                and self.agreement >= min_agreement)


def compare_logits(reference: np.ndarray, candidate: np.ndarray) -> ParityStats:
    """Compare (N, 2) logits: max/mean abs error, relative error, cosine, p(fake) error, decision agreement."""
    ref = np.asarray(reference, dtype=np.float64)
    cand = np.asarray(candidate, dtype=np.float64)
    if ref.shape != cand.shape:
        raise ValueError(f"shape mismatch: reference {ref.shape} vs candidate {cand.shape}")
    nonfinite = int((~np.isfinite(ref).all(axis=-1) | ~np.isfinite(cand).all(axis=-1)).sum()) if ref.ndim else 0
    diff = np.abs(ref - cand)
    rel = diff / np.maximum(np.abs(ref), 1e-6)
    p_ref, p_cand = softmax_fake(ref), softmax_fake(cand)
    dprob = np.abs(p_ref - p_cand)
    both_finite = np.isfinite(p_ref) & np.isfinite(p_cand)
    agree = float(np.mean(((p_ref >= 0.5) == (p_cand >= 0.5)) & both_finite)) if len(ref) else 1.0
    return ParityStats(
        n=int(ref.shape[0]),
        max_abs=float(diff.max(initial=0.0)),
        mean_abs=float(diff.mean()) if diff.size else 0.0,
        max_rel=float(rel.max(initial=0.0)),
        cosine=cosine(ref, cand),
        max_abs_prob=float(dprob.max(initial=0.0)),
        mean_abs_prob=float(dprob.mean()) if dprob.size else 0.0,
        agreement=agree,
        nonfinite=nonfinite,
    )
