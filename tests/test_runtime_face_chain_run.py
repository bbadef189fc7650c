"""``--face-chain`` through RunConfig / run_folder / mmdet-run: validation, what run.json and summary.json
record, resume refusing another chain, and that the face modules import nothing heavy."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from mmdet_deploy.cli.run import app
from mmdet_deploy.contract import ModelContract
from mmdet_deploy.errors import UsageError
from mmdet_deploy.runtime import RunConfig, run_folder
from mmdet_deploy.runtime.results import load_results
from runtime_fixtures import astronaut, build_synthetic_model


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_synthetic_model(tmp_path_factory.mktemp("model") / "faces.onnx", ModelContract(config="tiny"))


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "in"
    root.mkdir()
    Image.fromarray(astronaut()).save(root / "face.png")
    Image.new("RGB", (320, 240), (90, 90, 90)).save(root / "flat.png")
    return root


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"face_chain": "fast"}, "unknown --face-chain 'fast'; choose one of default, seed"),
        ({"face_chain": "seed", "face_detectors": "haar"}, "--face-chain and --face-detectors contradict"),
        ({"face_chain": "seed", "preset": "frames"}, "--face-chain only apply to --preset faces"),
    ],
)
def test_face_chain_options_are_checked(tmp_path: Path, options: dict[str, object], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        RunConfig(tmp_path, tmp_path / "m.onnx", tmp_path / "o", **options)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("options", "chain", "first"),
    [({}, "default", "blazeface-full"), ({"face_chain": "seed"}, "seed", "blazeface-short"),
     ({"face_detectors": "haar"}, "custom", "haar")],
)
def test_run_json_and_summary_say_which_chain_ran(
    model: Path, folder: Path, tmp_path: Path, options: dict[str, object], chain: str, first: str
) -> None:
    out = tmp_path / "out"
    summary = run_folder(RunConfig(folder, model, out, workers=2, **options))  # type: ignore[arg-type]
    assert summary.exit_code == 0
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["face_chain"] == chain and manifest["face_detectors"][0] == first
    report = json.loads((out / "summary.json").read_text())
    assert report["face_chain"] == chain and report["face_detectors"] == manifest["face_detectors"]
    rows = {row.filename: row for row in load_results(out / "results.csv")}
    assert rows["face.png"].detector == first and rows["face.png"].status == "ok"
    assert rows["flat.png"].status == "no_face" and rows["flat.png"].detector == ""


def test_resume_with_another_chain_is_refused(model: Path, folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert run_folder(RunConfig(folder, model, out, workers=1)).exit_code == 0
    with pytest.raises(UsageError, match="face_chain: 'default' -> 'seed'"):
        run_folder(RunConfig(folder, model, out, workers=1, resume=True, face_chain="seed"))


def test_mmdet_run_takes_face_chain(model: Path, folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = CliRunner().invoke(app, [str(folder), "--model", str(model), "--out", str(out), "-q",
                                      "--face-chain", "seed"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads((out / "run.json").read_text())["face_chain"] == "seed"
    bad = CliRunner().invoke(app, [str(folder), "--model", str(model), "--out", str(tmp_path / "o2"),
                                   "--face-chain", "nope"])  # fmt: skip
    assert bad.exit_code == 2 and "unknown --face-chain 'nope'" in bad.output


def test_face_modules_import_no_detector_library() -> None:
    code = ("import sys, mmdet_deploy.runtime.faces, mmdet_deploy.runtime.blazeface; "
            "print(sorted(m for m in ('onnxruntime', 'dlib', 'mediapipe', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]"
