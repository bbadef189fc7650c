"""ROC / AUC / threshold choice with known answers, the labels file, storing the threshold, the CLI end to end."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from mmdet_deploy.calibration.scoring import read_labels, store_threshold, stored_contract
from mmdet_deploy.calibration.thresholds import auc, metrics_at, roc_curve, threshold_for_fpr
from mmdet_deploy.contract import ModelContract
from mmdet_deploy.errors import UsageError


def _known_set() -> tuple[np.ndarray, np.ndarray]:
    """100 real files scoring 0.00..0.99 and 50 fake ones scoring 0.50..0.99 (steps of 0.01)."""
    real = np.arange(100) / 100.0
    fake = (50 + np.arange(50)) / 100.0
    return np.r_[np.zeros(100, int), np.ones(50, int)], np.r_[real, fake]


def test_known_answer() -> None:
    labels, scores = _known_set()
    curve = roc_curve(labels, scores)
    # fake k/100 beats k real scores and ties one: AUC = sum_k (k + 0.5) / (100 * 50) for k = 50..99
    assert auc(curve) == pytest.approx(0.75, abs=1e-12)
    # FPR <= 5 %: 5 real files may score >= t, so t = 0.95 (0.94 would let 6 through)
    t = threshold_for_fpr(curve, 0.05)
    assert t == pytest.approx(0.95, abs=1e-12)
    m = metrics_at(labels, scores, t)
    assert (m.tp, m.fp, m.tn, m.fn) == (5, 5, 95, 45)
    assert m.accuracy == pytest.approx(100 / 150) and m.precision == 0.5 and m.recall == 0.1 and m.fpr == 0.05
    assert threshold_for_fpr(curve, 0.055) == pytest.approx(0.95)  # 5.5 %: still 5 false positives at most
    assert threshold_for_fpr(curve, 1.0) == 0.5  # full recall is reached at 0.5; lower only adds false alarms
    assert curve.fpr[0] == 0.0 and curve.tpr[0] == 0.0 and curve.fpr[-1] == 1.0 and curve.tpr[-1] == 1.0


def test_auc_equals_the_mann_whitney_probability() -> None:
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 300)
    scores = np.round(rng.random(300) * 0.6 + labels * 0.3, 2)  # overlapping classes, many ties
    pos, neg = scores[labels == 1], scores[labels == 0]
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    assert auc(roc_curve(labels, scores)) == pytest.approx(wins / (pos.size * neg.size), abs=1e-12)


def test_threshold_edges() -> None:
    separable = roc_curve(np.array([0, 0, 0, 1, 1]), np.array([0.1, 0.2, 0.3, 0.7, 0.9]))
    assert auc(separable) == 1.0
    assert threshold_for_fpr(separable, 0.0) == 0.7  # every fake caught with no false alarm
    overlap = roc_curve(np.array([0, 1, 1]), np.array([0.9, 0.8, 0.7]))
    t = threshold_for_fpr(overlap, 0.0)  # only "nothing positive" has FPR 0: just above the top score
    assert 0.9 < t < 0.9 + 1e-12
    assert threshold_for_fpr(roc_curve(np.array([1, 0]), np.array([1.0, 1.0])), 0.0) == 1.0
    with pytest.raises(UsageError, match="both real"):
        roc_curve(np.array([1, 1]), np.array([0.2, 0.3]))
    with pytest.raises(UsageError, match="0 \\(real\\) or 1"):
        roc_curve(np.array([0, 2]), np.array([0.2, 0.3]))
    with pytest.raises(UsageError, match="target-fpr"):
        threshold_for_fpr(separable, 1.5)


def test_read_labels(tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    path.write_text("filename,label\na.mp4,1\nsub/b.jpg,0\nc.png,fake\nd.png,REAL\n\n")
    assert read_labels(path) == {"a.mp4": 1, "sub/b.jpg": 0, "c.png": 1, "d.png": 0}
    path.write_text("filename,label\na.mp4,1\na.mp4,0\n")
    with pytest.raises(UsageError, match="labelled both"):
        read_labels(path)
    path.write_text("filename,label\na.mp4,maybe\n")
    with pytest.raises(UsageError, match=":2: label 'maybe'"):
        read_labels(path)
    path.write_text("name,y\na,1\n")
    with pytest.raises(UsageError, match="header"):
        read_labels(path)


def test_store_threshold_in_onnx_and_engine_sidecar(tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    from mmdet_deploy.runtime.backends import create_backend
    from mmdet_deploy.tensorrt.sidecar import EngineSidecar, read_sidecar, write_sidecar
    from runtime_fixtures import build_synthetic_model

    model = build_synthetic_model(tmp_path / "m.onnx", ModelContract(config="tiny", frames=2, image_size=16))
    assert store_threshold(model, 0.8125, "test: target FPR 0.05") == model
    contract = stored_contract(model)
    assert contract.threshold == 0.8125 and contract.threshold_source == "test: target FPR 0.05"
    with create_backend("onnxruntime", model) as backend:  # what mmdet-run reads as its default threshold
        assert backend.contract is not None and backend.contract.threshold == 0.8125

    engine = tmp_path / "m.engine"
    engine.write_bytes(b"not really an engine")
    base = ModelContract(config="tiny", precision="fp16")
    side = EngineSidecar("10.3.0", "Orin", "8.7", "fp16", {"min": 1, "opt": 1, "max": 2}, "a" * 64, "b" * 64,
                         base.to_dict())
    write_sidecar(engine, side)
    store_threshold(engine, 0.25, "test")
    after = read_sidecar(engine)
    assert after.model_contract().threshold == 0.25
    assert dataclasses.replace(after, contract=side.contract) == side  # nothing else changed
    with pytest.raises(UsageError, match="no contract"):
        store_threshold(tmp_path / "weights.pth", 0.5, "test")


def test_threshold_command_end_to_end(tmp_path: Path) -> None:
    """Labelled solid-colour images scored by the runtime's synthetic model (red reads as fake)."""
    pytest.importorskip("onnx")
    pytest.importorskip("matplotlib")
    from typer.testing import CliRunner

    from mmdet_deploy.cli.export import app
    from runtime_fixtures import build_synthetic_model, reference_prob, solid_image

    contract = ModelContract(config="tiny", frames=2, image_size=16, preset="frames")
    model = build_synthetic_model(tmp_path / "m.onnx", contract)
    data = tmp_path / "data"
    rows, expected = ["filename,label"], {}
    # (red, blue) -> label; one real file is redder than two fakes, so the ROC is not trivial
    colours = {"r0": (60, 200, 0), "r1": (90, 160, 0), "r2": (120, 130, 0), "r3": (200, 60, 0),
               "f0": (150, 100, 1), "f1": (170, 90, 1), "f2": (230, 40, 1), "f3": (250, 20, 1)}
    mean, std = np.array(contract.mean), np.array(contract.std)
    for name, (red, blue, label) in colours.items():
        solid_image(data / f"{name}.png", (red, 80, blue), size=(32, 32))
        rows.append(f"{name}.png,{label}")
        pixel = ((np.array([red, 80, blue]) / 255.0 - mean) / std).astype(np.float32)
        clip = np.broadcast_to(pixel[None, None, :, None, None], (1, 2, 3, 16, 16))
        expected[f"{name}.png"] = (float(reference_prob(clip)[0]), label)
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "report"
    result = CliRunner().invoke(app, ["threshold", "--data", str(data), "--labels", str(tmp_path / "labels.csv"),
                                      "--model", str(model), "--target-fpr", "0.25", "--out", str(out),
                                      "--workers", "1"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "threshold.json").read_text())
    scores = {line.split(",")[0]: float(line.split(",")[2]) for line in (out / "scores.csv").read_text().split()[1:]}
    assert set(scores) == set(expected)
    for name, (prob, _) in expected.items():
        assert scores[name] == pytest.approx(prob, abs=1e-5)
    # known answer (score order f3 > f2 > r3 > f1 > f0 > r2 > r1 > r0): FPR <= 25 % allows one real file
    # called fake (r3), so every fake is caught down to f0, whose score is the threshold; r3 beats 2 fakes,
    # so 14 of the 16 (fake, real) pairs are ordered right
    assert [n for n, _ in sorted(expected.items(), key=lambda kv: -kv[1][0])][:5] == [
        "f3.png", "f2.png", "r3.png", "f1.png", "f0.png"]
    assert report["threshold"] == pytest.approx(expected["f0.png"][0], abs=1e-5)
    assert report["auc"] == pytest.approx(14 / 16)
    assert report["at_threshold"]["fp"] == 1 and report["at_threshold"]["tp"] == 4
    assert report["counts"] == {"scored": 8, "real": 4, "fake": 4, "errors": 0, "missing": 0}
    assert (out / "roc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    stored = stored_contract(model)
    assert stored.threshold == pytest.approx(report["threshold"]) and "target FPR 0.25" in stored.threshold_source
