"""``mmdet-export calibrate-set``, ``quantize`` and ``threshold``: INT8 that keeps its answers.

Thin layers over :mod:`mmdet_deploy.calibration`. Exit codes: 0 ok, 1 error, 2 wrong command line,
3 (``quantize``) the INT8 model was written but failed its accuracy gate (the files are kept).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from mmdet_deploy.calibration.gate import DEFAULT_MIN_AGREEMENT
from mmdet_deploy.cli.common import setup_logging, user_errors
from mmdet_deploy.errors import UsageError

#: Artefact suffix -> backend used by ``threshold`` when --backend is not given.
_BACKEND_BY_SUFFIX = {".onnx": "onnxruntime", ".engine": "tensorrt", ".plan": "tensorrt", ".trt": "tensorrt",
                      ".pt": "torch", ".pth": "torch", ".safetensors": "torch", ".bin": "torch"}


def register(app: typer.Typer) -> None:
    app.command("calibrate-set")(calibrate_set)
    app.command("quantize")(quantize)
    app.command("threshold")(threshold)


def _csv(value: str | None) -> list[str] | None:
    items = [v.strip() for v in (value or "").split(",") if v.strip()]
    return items or None


def _contract_of(model: Path | None) -> Any:
    if model is None:
        return None
    from mmdet_deploy.calibration.scoring import stored_contract

    if not model.is_file():
        raise UsageError(f"{model}: --model file not found")
    return stored_contract(model)


@user_errors
def calibrate_set(
    data: Path = typer.Option(..., "--data", help="Folder of real images/videos to sample (searched recursively)."),
    out: Path = typer.Option(..., "--out", help="Folder of the new set, e.g. calibration/NAME."),
    model: Path | None = typer.Option(None, "--model", help="ONNX model (or engine) whose contract sets the "
                                      "preprocessing. Default: the standard contract (T=10, 224, ImageNet)."),
    preset: str | None = typer.Option(None, help="faces or frames. Default: the model's contract (else faces)."),
    clips: int = typer.Option(64, "--clips", min=1, help="Clips to sample (each T frames)."),
    seed: int = typer.Option(0, help="Seed of the sampling and of the held-out split."),
    min_clips: int = typer.Option(16, "--min-clips", min=1, help="Refuse a set with fewer clips than this."),
    holdout: float = typer.Option(0.2, "--holdout", min=0.0, max=0.99, help="Share of clips (by source file) "
                                  "kept out of calibration for the accuracy gate."),
    face_detectors: str | None = typer.Option(None, "--face-detectors", help="faces preset: detectors in order."),
    max_windows: int | None = typer.Option(None, "--max-windows", min=1, help="frames preset: windows per video."),
    decoder: str = typer.Option("auto", help="Video decoder: auto, pyav or opencv."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing calibration set in --out."),
) -> None:
    """Sample calibration clips from real media with the runtime's preprocessing; write arrays + manifest."""
    setup_logging()
    from mmdet_deploy.calibration.sampling import sample_calibration_set

    calib = sample_calibration_set(
        data, out, contract=_contract_of(model), preset=preset, clips=clips, seed=seed, min_clips=min_clips,
        holdout=holdout, face_detectors=_csv(face_detectors), max_windows=max_windows, decoder=decoder,
        overwrite=overwrite,
    )
    counts = calib.manifest["counts"]
    prov = calib.manifest["provenance"]
    typer.echo(
        f"wrote {len(calib)} clips ({counts['calibration']} calibration, {counts['holdout']} held out by "
        f"{calib.manifest['split_unit']}) from {prov['files_used']} of {prov['media_files']} media files "
        f"({len(prov['skipped'])} unreadable) to {calib.root}; manifest sha256 {calib.fingerprint[:16]}"
    )


@user_errors
def quantize(
    onnx: Path = typer.Option(..., "--onnx", help="fp32 ONNX exported by `mmdet-export onnx`."),
    calib: Path = typer.Option(..., "--calib", help="Calibration set made by `mmdet-export calibrate-set`."),
    out: Path = typer.Option(..., "--out", help="Where to write the INT8 Q/DQ model (e.g. model.int8.onnx)."),
    method: str = typer.Option("minmax", help="Calibration: minmax, entropy or percentile."),
    ops: str = typer.Option("matmul,conv", help="What gets Q/DQ: matmul, conv, attention, or all "
                            "(all collapses ViTs; for tests of the gate)."),
    engine: str = typer.Option("auto", help="auto (ModelOpt when installed, else ONNX Runtime), ort, modelopt, or "
                               "nncf (NNCF post-training quantisation, for OpenVINO)."),
    conv_requant: bool = typer.Option(True, "--conv-requant/--no-conv-requant", help="Also quantise Conv outputs "
                                      "that feed a norm/ReLU (ONNX Runtime CPU then runs QLinearConv)."),
    gate: bool = typer.Option(True, "--gate/--no-gate", help="Run the accuracy gate on the held-out clips."),
    min_agreement: float = typer.Option(DEFAULT_MIN_AGREEMENT, "--min-agreement", min=0.0, max=1.0,
                                        help="Gate: least fp32/INT8 decision agreement (exit 3 below it)."),
    threads: int = typer.Option(0, "--threads", min=0, help="Gate: intra-op threads (0: the backend's default)."),
    gate_backend: str = typer.Option("auto", "--gate-backend", help="Backend both models run on in the gate: "
                                     "onnxruntime, openvino, or auto (openvino for --engine nncf when installed)."),
) -> None:
    """Quantise an fp32 ONNX to INT8 Q/DQ (ViT-safe) and check it against fp32 on held-out clips."""
    setup_logging()
    from mmdet_deploy.calibration.gate import enforce, report_path, run_gate, write_report
    from mmdet_deploy.calibration.quantize import quantize_onnx

    gate_on = _gate_backend(gate_backend, engine)
    result = quantize_onnx(onnx, calib, out, method=method, ops=ops, engine=engine, conv_requant=conv_requant)
    g = result.graph
    typer.echo(
        f"wrote {result.path} ({result.size_bytes / 1e6:.1f} MB, {result.engine}, {result.method}): "
        f"quantised {json.dumps(g['quantised'])}, float {json.dumps(g['float'])}, "
        f"{result.calibration_clips} calibration clips"
    )
    if not gate:
        typer.echo("accuracy gate skipped (--no-gate): nothing says this model still gives fp32's answers")
        return
    report = run_gate(onnx, result.path, calib, min_agreement=min_agreement, threads=threads or None,
                      backend=gate_on)
    path = write_report(report_path(result.path), report, {"quantize": result.to_dict()})
    typer.echo(
        f"gate on {report.clips} held-out clips ({report.backend}): agreement {report.agreement:.4f} "
        f"(min {min_agreement}), "
        f"max |dp| {report.max_abs_dprob:.4g}, mean |dp| {report.mean_abs_dprob:.4g}, cosine "
        f"{report.cosine_mean:.5f} (min {report.cosine_min:.5f}) on {report.cosine_on}; report {path}"
    )
    if report.note:
        typer.echo(f"note: {report.note}")
    enforce(report, path)


def _gate_backend(choice: str, engine: str) -> str:
    """``--gate-backend``: ``auto`` is OpenVINO for NNCF files (made for it) when installed, else ONNX Runtime."""
    from mmdet_deploy.calibration.gate import GATE_BACKENDS
    from mmdet_deploy.deps import available

    if choice == "auto":
        return "openvino" if engine == "nncf" and available("openvino") else "onnxruntime"
    if choice not in GATE_BACKENDS:
        raise UsageError(f"--gate-backend {choice!r}: choose auto, {', '.join(GATE_BACKENDS)}")
    return choice


@user_errors
def threshold(
    data: Path = typer.Option(..., "--data", help="Folder of labelled images/videos."),
    labels: Path = typer.Option(..., "--labels", help="CSV with a header filename,label (0 real, 1 fake)."),
    model: Path = typer.Option(..., "--model", help="Artefact to score with and to store the threshold in: "
                               ".onnx, a TensorRT engine, or a checkpoint (torch backend; nothing stored)."),
    backend: str | None = typer.Option(None, help="onnxruntime, openvino, tensorrt or torch. Default: from the "
                                       "suffix (.onnx: onnxruntime)."),
    device: str | None = typer.Option(None, help="cpu, cuda or cuda:N. Default: cuda for tensorrt, else cpu."),
    target_fpr: float = typer.Option(0.05, "--target-fpr", min=0.0, max=1.0,
                                     help="Largest share of real files called fake at the chosen threshold."),
    out: Path | None = typer.Option(None, "--out", help="Folder for threshold.json, scores.csv and roc.png."),
    write: bool = typer.Option(True, "--write/--no-write", help="Store the threshold in the artefact's contract."),
    preset: str | None = typer.Option(None, help="faces or frames. Default: the model's contract."),
    batch_size: int = typer.Option(4, "--batch-size", min=1, help="Clips per inference call."),
    workers: int = typer.Option(2, "--workers", min=1, help="Preprocessing threads."),
    face_detectors: str | None = typer.Option(None, "--face-detectors", help="faces preset: detectors in order."),
    max_windows: int | None = typer.Option(None, "--max-windows", min=1, help="frames preset: windows per video."),
    head: str = typer.Option("simplified", help="torch backend: head of the checkpoint."),
    config: str = typer.Option("base", help="torch backend: model configuration (base or tiny)."),
) -> None:
    """Score a labelled folder, report AUC/accuracy/precision/recall and ROC, choose a threshold for a target FPR."""
    setup_logging()
    from mmdet_deploy.calibration.scoring import evaluate, read_labels, score_labelled, store_threshold, write_outputs
    from mmdet_deploy.runtime.backends import create_backend
    from mmdet_deploy.runtime.preprocess import Preprocessor

    if not model.exists():
        raise UsageError(f"{model}: --model not found")
    name = backend or _BACKEND_BY_SUFFIX.get(model.suffix.lower())
    if name is None:
        raise UsageError(f"{model}: cannot tell the backend from the suffix; pass --backend")
    options: dict[str, Any] = {"head": head, "config": config} if name == "torch" else {}
    labelled = read_labels(labels)
    runner = create_backend(name, model, device=device or ("cuda" if name == "tensorrt" else "cpu"), **options)
    with runner:
        contract = runner.contract
        assert contract is not None  # set by open()
        pre = Preprocessor(contract, preset, _csv(face_detectors), max_windows)
        scored = score_labelled(data, labelled, runner, pre, batch_size=batch_size, workers=workers)
    if scored.missing:
        typer.echo(f"warning: {len(scored.missing)} labelled files not found in {data}, e.g. {scored.missing[:3]}",
                   err=True)
    if scored.errors:
        typer.echo(f"warning: {len(scored.errors)} files could not be scored and are left out: "
                   f"{[e['file'] for e in scored.errors[:3]]}", err=True)
    result = evaluate(scored, target_fpr, contract.threshold)
    chosen = result["at_threshold"]
    source = (f"mmdet-export threshold: target FPR {target_fpr} on {result['counts']['scored']} labelled files "
              f"of {data} ({backend or name}; AUC {result['auc']:.4f})")
    typer.echo(
        f"{result['counts']['scored']} files ({result['counts']['real']} real, {result['counts']['fake']} fake): "
        f"AUC {result['auc']:.4f}; threshold {result['threshold']:.6g} for FPR <= {target_fpr}: accuracy "
        f"{chosen['accuracy']:.4f}, precision {chosen['precision']:.4f}, recall {chosen['recall']:.4f}, "
        f"FPR {chosen['fpr']:.4f} (at the current threshold {contract.threshold:g}: accuracy "
        f"{result['at_current_threshold']['accuracy']:.4f})"
    )
    if out is not None:
        meta = {"model": str(model), "backend": name, "data": str(data), "labels": str(labels),
                "previous_threshold": contract.threshold, "threshold_source": source,
                "demo_weights": contract.demo_weights}
        paths = write_outputs(out, scored, result, meta)
        typer.echo(f"wrote {paths['report']}, {paths['scores']}, {paths['roc']}")
    if write:
        if name == "torch":
            typer.echo("not stored: a checkpoint carries no contract; use mmdet-run --threshold or export first")
        else:
            written = store_threshold(model, result["threshold"], source)
            typer.echo(f"stored threshold {result['threshold']:.6g} in the contract of {written}")
