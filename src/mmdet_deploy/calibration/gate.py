"""The accuracy gate: does the INT8 model still give the fp32 model's answers on held-out clips?

Both ONNX models run on the same CPU backend, ONNX Runtime (default) or OpenVINO (``--gate-backend``; fp32
pinned to f32, so the INT8 model is compared with true fp32), on the ``holdout`` split of the calibration set
(clips never used to compute ranges). Figures: decision agreement at the model's threshold
(``prob_fake >= threshold``), the largest and mean ``|d p(fake)|``, and the cosine between fp32 and INT8
pooled features. The pooled feature is the ``features`` output (B, D) when both models have it (export
with ``with_features=True``); otherwise the cosine is taken on the logits, and the report says so in
``cosine_on``. A non-finite output (NaN, inf) of either model fails the gate, whatever the agreement.

With demo (random) weights the figures only exercise the machinery; they say nothing about real accuracy.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from mmdet_deploy.calibration.dataset import HOLDOUT, CalibrationSet, CalibrationSetError
from mmdet_deploy.contract import LOGITS, PROB_FAKE, ModelContract
from mmdet_deploy.deps import require
from mmdet_deploy.errors import ContractError, ParityError
from mmdet_deploy.parity import cosine

FEATURES = "features"
DEFAULT_MIN_AGREEMENT = 0.99
DEMO_NOTE = "demo weights: these figures exercise the machinery only; they say nothing about real accuracy"


@dataclass(frozen=True)
class GateReport:
    """fp32 vs INT8 on the held-out clips. ``passed`` is ``agreement >= min_agreement``."""

    clips: int
    threshold: float
    agreement: float
    flips: int
    max_abs_dprob: float
    mean_abs_dprob: float
    cosine_on: str
    cosine_mean: float
    cosine_min: float
    max_abs_dlogit: float
    positive_rate_fp32: float
    positive_rate_int8: float
    min_agreement: float
    passed: bool
    note: str = ""
    nonfinite: int = 0
    backend: str = "onnxruntime"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


#: Backends the gate runs on (``--gate-backend``).
GATE_BACKENDS = ("onnxruntime", "openvino")


class BackendSession:
    """The slice of ONNX Runtime's ``InferenceSession`` API the gate uses, over an opened registry backend."""

    def __init__(self, backend: Any) -> None:
        self.backend = backend

    def get_inputs(self) -> list[SimpleNamespace]:
        return [SimpleNamespace(name=n) for n in self.backend.contract.input_names]

    def get_outputs(self) -> list[SimpleNamespace]:
        return [SimpleNamespace(name=n) for n in self.backend.output_names]

    def run(self, names: list[str], feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        out = self.backend.infer(feeds)
        return [out[n] for n in names]


def session(path: str | Path, threads: int | None = None, backend: str = "onnxruntime") -> Any:
    """A CPU session over ``path``: ONNX Runtime's own, or :class:`BackendSession` over OpenVINO (fp32 pinned).

    ``threads``: intra-op threads (None = the library's default).
    """
    if backend not in GATE_BACKENDS:
        raise ContractError(f"unknown gate backend {backend!r}; choose one of {', '.join(GATE_BACKENDS)}")
    if backend == "openvino":
        from mmdet_deploy.runtime.backends import create_backend

        return BackendSession(create_backend("openvino", path, precision="fp32", threads=threads or 0).open())
    ort = require("onnxruntime", "the INT8 accuracy gate")
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def output_names(sess: Any) -> list[str]:
    return [o.name for o in sess.get_outputs()]


def run_split(sess: Any, calib: CalibrationSet, split: str, names: list[str], batch_size: int = 1
              ) -> dict[str, np.ndarray]:
    """Run ``sess`` over one split; returns each requested output concatenated over clips (float64)."""
    inputs = [i.name for i in sess.get_inputs()]
    chunks: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for batch in calib.batches(split, batch_size=batch_size, names=inputs):
        size = batch[inputs[0]].shape[0]
        for name, value in zip(names, sess.run(names, batch), strict=True):
            chunks[name].append(np.asarray(value, dtype=np.float64).reshape(size, -1))
    return {n: np.concatenate(v) if v else np.zeros((0, 1)) for n, v in chunks.items()}


def _nonfinite_clips(*outputs: Mapping[str, np.ndarray]) -> int:
    """Clips with a NaN or infinite value in any output of any run (each output is (N, ...))."""
    bad: np.ndarray | None = None
    for out in outputs:
        for value in out.values():
            rows = ~np.isfinite(np.asarray(value, dtype=np.float64).reshape(len(value), -1)).all(axis=1)
            bad = rows if bad is None else bad | rows
    return int(bad.sum()) if bad is not None else 0


def compare(reference: Mapping[str, np.ndarray], candidate: Mapping[str, np.ndarray], threshold: float,
            min_agreement: float, cosine_on: str, note: str = "", backend: str = "onnxruntime") -> GateReport:
    """The gate's figures from two runs over the same clips (outputs as returned by :func:`run_split`)."""
    p_ref, p_cand = reference[PROB_FAKE].ravel(), candidate[PROB_FAKE].ravel()
    nonfinite = _nonfinite_clips(reference, candidate)
    d_ref, d_cand = p_ref >= threshold, p_cand >= threshold
    n = len(p_ref)
    finite = np.isfinite(p_ref) & np.isfinite(p_cand)
    same = (d_ref == d_cand) & finite  # a non-finite score agrees with nothing
    agreement = float(np.mean(same)) if n else 0.0
    dprob = np.abs(p_ref - p_cand)
    cosines = [cosine(a, b) for a, b in zip(reference[cosine_on], candidate[cosine_on], strict=True)]
    return GateReport(
        clips=n,
        threshold=float(threshold),
        agreement=agreement,
        flips=int(np.sum(~same)),
        max_abs_dprob=float(dprob.max(initial=0.0)),
        mean_abs_dprob=float(dprob.mean()) if n else 0.0,
        cosine_on=cosine_on,
        cosine_mean=float(np.mean(cosines)) if cosines else 0.0,
        cosine_min=float(np.min(cosines)) if cosines else 0.0,
        max_abs_dlogit=float(np.abs(reference[LOGITS] - candidate[LOGITS]).max(initial=0.0)),
        positive_rate_fp32=float(d_ref.mean()) if n else 0.0,
        positive_rate_int8=float(d_cand.mean()) if n else 0.0,
        min_agreement=float(min_agreement),
        passed=bool(n and agreement >= min_agreement and nonfinite == 0),
        note=note,
        nonfinite=nonfinite,
        backend=backend,
    )


def run_gate(fp32_path: str | Path, int8_path: str | Path, calib: CalibrationSet | str | Path,
             min_agreement: float = DEFAULT_MIN_AGREEMENT, split: str = HOLDOUT,
             threads: int | None = None, backend: str = "onnxruntime") -> GateReport:
    """Compare the two ONNX models on ``split`` of the calibration set (the threshold is the fp32 contract's).

    ``backend``: ``onnxruntime`` or ``openvino`` (both models run on it).
    """
    require("onnx", "the INT8 accuracy gate")

    if not 0.0 <= min_agreement <= 1.0:
        raise ContractError(f"--min-agreement {min_agreement} is outside [0, 1]")
    calib = calib if isinstance(calib, CalibrationSet) else CalibrationSet.open(calib)
    if not calib.split(split):
        raise CalibrationSetError(
            f"{calib.root}: the {split} split is empty, so the gate has nothing to measure; "
            "sample the set with --holdout > 0"
        )
    contract = ModelContract.from_onnx(fp32_path)
    ref_sess, cand_sess = session(fp32_path, threads, backend), session(int8_path, threads, backend)
    shared = set(output_names(ref_sess)) & set(output_names(cand_sess))
    cosine_on = FEATURES if FEATURES in shared else LOGITS
    names = [LOGITS, PROB_FAKE] + ([FEATURES] if cosine_on == FEATURES else [])
    ref = run_split(ref_sess, calib, split, names)
    cand = run_split(cand_sess, calib, split, names)
    note = DEMO_NOTE if contract.demo_weights else ""
    return compare(ref, cand, contract.threshold, min_agreement, cosine_on, note, backend)


def report_path(model_path: str | Path) -> Path:
    """Where the gate report of an INT8 model goes: ``model.int8.onnx`` -> ``model.int8.gate.json``."""
    return Path(model_path).with_suffix(".gate.json")


def write_report(path: Path, report: GateReport, extra: Mapping[str, Any] | None = None) -> Path:
    """Write the gate figures (and ``extra`` sections, e.g. the quantisation record) as JSON."""
    payload = {"gate": report.to_dict(), **dict(extra or {})}
    path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    return path


def enforce(report: GateReport, path: Path) -> None:
    """Raise :class:`ParityError` (exit code 3) when the gate failed; the files are kept."""
    if report.nonfinite:
        raise ParityError(
            f"INT8 accuracy gate failed: {report.nonfinite} of {report.clips} held-out clips gave NaN or infinite "
            f"outputs on {report.backend}; files kept, see {path}"
        )
    if not report.passed:
        raise ParityError(
            f"INT8 accuracy gate failed: decision agreement {report.agreement:.4f} < {report.min_agreement} "
            f"on {report.clips} held-out clips ({report.flips} flips, cosine {report.cosine_mean:.4f} on "
            f"{report.cosine_on}); files kept, see {path}"
        )
