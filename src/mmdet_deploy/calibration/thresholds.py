"""ROC curve, AUC and the decision threshold for a target false-positive rate (numpy only; plot lazily).

Conventions: label 1 is fake (positive), 0 real; a file is called fake when ``score >= threshold`` (the
contract's rule). The ROC curve has one point per distinct score, from "nothing positive" (fpr = tpr = 0)
to "everything positive" (fpr = tpr = 1). The AUC is the trapezoidal area under that curve, which equals
the probability that a random fake scores above a random real, ties counting one half (Mann-Whitney U).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mmdet_deploy.deps import require
from mmdet_deploy.errors import UsageError


@dataclass(frozen=True)
class RocCurve:
    """``fpr[i]``, ``tpr[i]``: rates when calling fake every score ``>= thresholds[i]`` (first point: +inf)."""

    fpr: np.ndarray
    tpr: np.ndarray
    thresholds: np.ndarray
    positives: int
    negatives: int


@dataclass(frozen=True)
class Metrics:
    """Confusion counts and rates at one threshold."""

    threshold: float
    tp: int
    fp: int
    tn: int
    fn: int
    accuracy: float
    precision: float
    recall: float
    fpr: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise UsageError(f"{y.size} labels but {s.size} scores")
    if not np.isin(y, (0, 1)).all():
        raise UsageError("labels must be 0 (real) or 1 (fake)")
    if not np.isfinite(s).all():
        raise UsageError("scores must be finite")
    y = y.astype(np.int64)
    if y.sum() == 0 or y.sum() == y.size:
        raise UsageError(
            "a ROC curve needs both real (0) and fake (1) examples; "
            f"got {int((y == 0).sum())} real, {int(y.sum())} fake"
        )
    return y, s


def roc_curve(labels: np.ndarray, scores: np.ndarray) -> RocCurve:
    """The ROC curve of ``scores`` against binary ``labels``, one point per distinct score (descending)."""
    y, s = _check(labels, scores)
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last_of_run = np.r_[np.flatnonzero(np.diff(s)), y.size - 1]  # index of the last item of each distinct score
    tps = np.cumsum(y)[last_of_run]
    fps = (last_of_run + 1) - tps
    pos, neg = int(y.sum()), int(y.size - y.sum())
    return RocCurve(
        fpr=np.r_[0.0, fps / neg],
        tpr=np.r_[0.0, tps / pos],
        thresholds=np.r_[np.inf, s[last_of_run]],
        positives=pos,
        negatives=neg,
    )


def auc(curve: RocCurve) -> float:
    """Area under the ROC curve (trapezoidal rule)."""
    dx = np.diff(curve.fpr)
    return float(np.sum(dx * (curve.tpr[1:] + curve.tpr[:-1]) / 2.0))


def metrics_at(labels: np.ndarray, scores: np.ndarray, threshold: float) -> Metrics:
    """Accuracy, precision, recall and false-positive rate when calling fake every ``score >= threshold``."""
    y, s = _check(labels, scores)
    pred = s >= threshold
    tp = int(np.sum(pred & (y == 1)))
    fp = int(np.sum(pred & (y == 0)))
    fn = int(np.sum(~pred & (y == 1)))
    tn = int(np.sum(~pred & (y == 0)))
    return Metrics(
        threshold=float(threshold),
        tp=tp,
        fp=fp,
        tn=tn,
        fn=fn,
        accuracy=(tp + tn) / y.size,
        precision=tp / (tp + fp) if tp + fp else 1.0,  # no positive call: no false alarm (convention)
        recall=tp / (tp + fn),
        fpr=fp / (fp + tn),
    )


def threshold_for_fpr(curve: RocCurve, target_fpr: float) -> float:
    """The threshold with the highest true-positive rate whose false-positive rate is ``<= target_fpr``.

    Among thresholds reaching that rate, the highest one (fewest false positives) is taken. The result is a
    score value (so ``score >= threshold`` reproduces the ROC point), kept in [0, 1]: when only "nothing
    positive" qualifies, it is just above the highest score, or 1.0.
    """
    if not 0.0 <= target_fpr <= 1.0:
        raise UsageError(f"--target-fpr {target_fpr} is outside [0, 1]")
    ok = np.flatnonzero(curve.fpr <= target_fpr + 1e-12)
    best_tpr = curve.tpr[ok].max()
    idx = int(ok[curve.tpr[ok] >= best_tpr][0])  # first (highest threshold) point with that tpr
    t = curve.thresholds[idx]
    if np.isinf(t):
        top = float(curve.thresholds[1])
        return float(min(1.0, np.nextafter(top, np.inf)))
    return float(min(max(t, 0.0), 1.0))


def plot_roc(curve: RocCurve, area: float, chosen: Metrics, path: Path, title: str = "ROC") -> Path:
    """Write the ROC curve with the chosen operating point as a PNG (matplotlib, Agg canvas, no GUI)."""
    require("matplotlib", "the ROC plot")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(curve.fpr, curve.tpr, drawstyle="steps-post", label=f"ROC (AUC {area:.4f})")
    ax.plot([0, 1], [0, 1], linestyle=":", color="grey", label="chance")
    ax.plot([chosen.fpr], [chosen.recall], marker="o", color="red",
            label=f"threshold {chosen.threshold:.4g}: FPR {chosen.fpr:.3f}, TPR {chosen.recall:.3f}")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("false-positive rate (real called fake)")
    ax.set_ylabel("true-positive rate (fake called fake)")
    ax.set_title(f"{title} ({curve.positives} fake, {curve.negatives} real)")
    ax.legend(loc="lower right", fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path
