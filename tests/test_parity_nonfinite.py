"""A NaN never passes a gate (issue 12, class 1): parity metrics, the exporter's parity check, the INT8 gate."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mmdet_deploy.calibration.gate import compare, enforce
from mmdet_deploy.contract import LOGITS, PROB_FAKE, ModelContract
from mmdet_deploy.errors import ParityError
from mmdet_deploy.parity import compare_logits
from runtime_fixtures import build_synthetic_model

NAN = float("nan")


def test_parity_stats_never_pass_a_nan() -> None:
    ref = np.array([[0.0, -2.0], [0.0, 1.0]])
    assert compare_logits(ref, ref.copy()).within(1e-4, 1e-5)
    for bad, count in ((np.array([[NAN, NAN], [0.0, 1.0]]), 1), (np.array([[0.0, np.inf], [0.0, 1.0]]), 1)):
        stats = compare_logits(ref, bad)
        assert stats.nonfinite == count and not stats.within(float("inf"), float("inf"))
        assert stats.agreement == 0.5  # the NaN clip agrees with nothing, although ref says "real" there
    assert not compare_logits(np.array([[NAN, 0.0]]), np.array([[0.0, 0.0]])).within(float("inf"))


def test_int8_gate_fails_on_nan(tmp_path: Path) -> None:
    ref = {PROB_FAKE: np.array([0.1, 0.2, 0.9, 0.3]), LOGITS: np.zeros((4, 2))}
    cand = {PROB_FAKE: np.array([0.1, NAN, 0.9, 0.3]), LOGITS: np.zeros((4, 2))}
    same = compare(ref, {k: v.copy() for k, v in ref.items()}, 0.5, 0.5, LOGITS)
    assert same.passed and same.nonfinite == 0
    report = compare(ref, cand, 0.5, 0.5, LOGITS)  # 3 of 4 agree, above min_agreement 0.5: NaN alone fails it
    assert report.agreement == 0.75 and report.flips == 1 and report.nonfinite == 1 and not report.passed
    with pytest.raises(ParityError, match="NaN or infinite"):
        enforce(report, tmp_path / "gate.json")


def test_export_parity_check_fails_on_nan(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from mmdet_deploy.export.parity_check import check_parity

    contract = ModelContract(config="tiny")
    nan_onnx = build_synthetic_model(tmp_path / "nan.onnx", contract, nan_weight=True)

    def reference(original: object, recons: object) -> object:  # a finite PyTorch "model": logits 0
        return torch.zeros((original.shape[0], 2))  # type: ignore[attr-defined]

    report_path = tmp_path / "parity.json"
    with pytest.raises(ParityError, match="non-finite clips"):
        check_parity(reference, nan_onnx, contract, report_path, clips=2)
    report = json.loads(report_path.read_text())
    assert report["passed"] is False and report["overall"]["nonfinite"] == 2  # both clips (a NaN fake logit in each)
