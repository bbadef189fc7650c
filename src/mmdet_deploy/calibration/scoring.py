"""Score a labelled folder with any backend, choose a decision threshold, store it in the artefact's contract.

``labels.csv`` has a header ``filename,label`` (label 0 real, 1 fake; ``real``/``fake`` accepted). A file
name matches a media file by its path relative to the folder (as ``results.csv`` writes it) or, when that
is unique, by its bare name. Scoring runs :func:`mmdet_deploy.runtime.pipeline.run_inference`, the code path
of ``mmdet-run`` (same preprocessing, batching and per-file mean over windows). Files that fail are
reported and left out of the ROC, never counted as real.

The threshold is written into the contract the artefact carries (ONNX ``metadata_props``; the engine's
sidecar JSON), with ``threshold_source`` saying how it was chosen; ``mmdet-run`` uses it unless
``--threshold`` overrides it. A PyTorch checkpoint carries no contract, so nothing is stored for it.
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mmdet_deploy.calibration.thresholds import auc, metrics_at, plot_roc, roc_curve, threshold_for_fpr
from mmdet_deploy.contract import ModelContract
from mmdet_deploy.deps import require
from mmdet_deploy.errors import UsageError

_LABEL_WORDS = {"0": 0, "1": 1, "real": 0, "fake": 1}


@dataclass
class LabelledScores:
    """Scores of the labelled files that could be scored, and what could not be."""

    names: list[str] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    errors: list[dict[str, str]] = field(default_factory=list)  # {"file", "reason"}
    missing: list[str] = field(default_factory=list)  # in labels.csv, not in the folder


def read_labels(path: str | Path) -> dict[str, int]:
    """``filename -> label`` from a ``filename,label`` CSV; :class:`UsageError` names the bad line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise UsageError(f"{path}: cannot read the labels ({exc})") from exc
    reader = csv.DictReader(text.splitlines())
    if not reader.fieldnames or not {"filename", "label"} <= {f.strip() for f in reader.fieldnames}:
        raise UsageError(f"{path}: expected a header 'filename,label', got {reader.fieldnames}")
    labels: dict[str, int] = {}
    for line, row in enumerate(reader, start=2):
        row = {k.strip(): (v or "").strip() for k, v in row.items() if k}
        name, value = row["filename"], row["label"].lower()
        if not name:
            continue
        if value not in _LABEL_WORDS:
            raise UsageError(f"{path}:{line}: label {row['label']!r} is not 0/1/real/fake")
        if name in labels and labels[name] != _LABEL_WORDS[value]:
            raise UsageError(f"{path}:{line}: {name} is labelled both {labels[name]} and {_LABEL_WORDS[value]}")
        labels[name] = _LABEL_WORDS[value]
    if not labels:
        raise UsageError(f"{path}: no labelled file")
    return labels


def match_labels(items: Sequence[Any], labels: dict[str, int]) -> tuple[list[tuple[Any, int]], list[str]]:
    """Pair media items with labels (relative path first, then unique bare name); also the unmatched labels."""
    by_name = {i.name: i for i in items}
    by_base: dict[str, list[Any]] = {}
    for i in items:
        by_base.setdefault(Path(i.name).name, []).append(i)
    pairs, missing = [], []
    for name, label in labels.items():
        item = by_name.get(name)
        if item is None and len(by_base.get(Path(name).name, [])) == 1:
            item = by_base[Path(name).name][0]
        if item is None:
            missing.append(name)
        else:
            pairs.append((item, label))
    pairs.sort(key=lambda p: p[0].name)
    return pairs, missing


def score_labelled(data: str | Path, labels: dict[str, int], backend: Any, preprocessor: Any,
                   batch_size: int = 8, workers: int = 2) -> LabelledScores:
    """Score the labelled media of ``data`` with an opened backend through the runtime pipeline."""
    from mmdet_deploy.runtime.discovery import discover
    from mmdet_deploy.runtime.pipeline import run_inference
    from mmdet_deploy.runtime.results import SCORED

    pairs, missing = match_labels(list(discover(data)), labels)
    label_of = {item.name: label for item, label in pairs}
    out = LabelledScores(missing=missing)

    def on_row(row: Any) -> None:
        if row.status in SCORED and row.prob_fake is not None:
            out.names.append(row.filename)
            out.labels.append(label_of[row.filename])
            out.scores.append(float(row.prob_fake))
        else:
            out.errors.append({"file": row.filename, "reason": row.reason or row.status})

    run_inference([item for item, _ in pairs], preprocessor, backend, batch_size=batch_size, workers=workers,
                  on_row=on_row)
    return out


def evaluate(scored: LabelledScores, target_fpr: float, current_threshold: float) -> dict[str, Any]:
    """AUC, the threshold for ``target_fpr`` and the metrics there and at the current threshold."""
    y, s = np.asarray(scored.labels), np.asarray(scored.scores)
    curve = roc_curve(y, s)
    area = auc(curve)
    threshold = threshold_for_fpr(curve, target_fpr)
    return {
        "auc": area,
        "target_fpr": target_fpr,
        "threshold": threshold,
        "at_threshold": metrics_at(y, s, threshold).to_dict(),
        "at_current_threshold": metrics_at(y, s, current_threshold).to_dict(),
        "counts": {"scored": int(y.size), "real": int((y == 0).sum()), "fake": int((y == 1).sum()),
                   "errors": len(scored.errors), "missing": len(scored.missing)},
        "roc": {"fpr": curve.fpr.tolist(), "tpr": curve.tpr.tolist(),
                "thresholds": [None if np.isinf(t) else float(t) for t in curve.thresholds]},
        "_curve": curve,
    }


def write_outputs(
    out_dir: Path, scored: LabelledScores, result: dict[str, Any], meta: dict[str, Any]
) -> dict[str, Path]:
    """``threshold.json``, ``scores.csv`` and ``roc.png`` in ``out_dir``; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"report": out_dir / "threshold.json", "scores": out_dir / "scores.csv", "roc": out_dir / "roc.png"}
    with open(paths["scores"], "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["filename", "label", "prob_fake"])
        for row in zip(scored.names, scored.labels, scored.scores, strict=True):
            writer.writerow([row[0], row[1], f"{row[2]:.6f}"])
    chosen = metrics_at(np.asarray(scored.labels), np.asarray(scored.scores), result["threshold"])
    plot_roc(result["_curve"], result["auc"], chosen, paths["roc"], title=str(meta.get("model", "ROC")))
    report = {k: v for k, v in result.items() if not k.startswith("_")}
    report.update(meta, errors=scored.errors, missing=scored.missing)
    paths["report"].write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    return paths


def store_threshold(artefact: str | Path, threshold: float, source: str) -> Path:
    """Write ``threshold`` into the contract carried by ``artefact``; returns the file rewritten.

    ONNX: its ``metadata_props`` (written to a temporary file, then renamed over the original). Engine: its
    sidecar JSON. Anything else has no contract: :class:`UsageError`.
    """
    artefact = Path(artefact)
    if artefact.suffix.lower() == ".onnx":
        onnx = require("onnx", "storing the threshold in an ONNX model")
        model = onnx.load(str(artefact), load_external_data=False)
        contract = ModelContract.from_onnx(model, str(artefact))
        contract.replace(threshold=float(threshold), threshold_source=source).to_onnx(model)
        fd, tmp = tempfile.mkstemp(prefix=artefact.name + ".", suffix=".tmp", dir=artefact.parent)
        os.close(fd)
        try:
            onnx.save(model, tmp)
            os.replace(tmp, artefact)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return artefact
    from mmdet_deploy.tensorrt.sidecar import read_sidecar, sidecar_path, write_sidecar

    if sidecar_path(artefact).is_file():
        sidecar = read_sidecar(artefact)
        contract = sidecar.model_contract(str(artefact)).replace(threshold=float(threshold), threshold_source=source)
        write_sidecar(artefact, contract.to_sidecar(sidecar))
        return sidecar_path(artefact)
    raise UsageError(
        f"{artefact}: not an ONNX model or an engine with a sidecar, so there is no contract to store the "
        "threshold in; pass it to mmdet-run with --threshold, or export the model first"
    )


def stored_contract(artefact: str | Path) -> ModelContract:
    """The contract currently stored in an ONNX model or an engine sidecar (to check what was written)."""
    artefact = Path(artefact)
    if artefact.suffix.lower() == ".onnx":
        return ModelContract.from_onnx(artefact)
    from mmdet_deploy.tensorrt.sidecar import read_sidecar

    return read_sidecar(artefact).model_contract(str(artefact))
