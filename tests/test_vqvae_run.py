"""``mmdet-run --recons vqvae``: the official pipeline end to end, its records, its warnings and its refusals."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from mmdet_deploy.contract import ModelContract
from mmdet_deploy.runtime import frame_sampling
from mmdet_deploy.runtime.decode import open_video, resolve_decoder
from mmdet_deploy.runtime.recons import VQVAEReconstructor
from mmdet_deploy.runtime.recons_vqvae import VQVAEReconstruction
from mmdet_deploy.runtime.results import load_results
from runtime_fixtures import astronaut, build_synthetic_model, reference_prob, write_video
from vqvae_fixtures import crop224, odd_frame

pytestmark = pytest.mark.filterwarnings("ignore:.*DEMO VQ-VAE")
runner = CliRunner()
SRC = Path(__file__).resolve().parents[1] / "src"


def invoke(*args: str | Path) -> tuple[int, str]:
    from mmdet_deploy.cli.run import app

    result = runner.invoke(app, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


def synthetic(path: Path, recons: str) -> Path:
    return build_synthetic_model(path, ModelContract(config="tiny", preset="frames", recons=recons))


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 333x251 image and a 24-frame 320x184 video (two windows of 10, four frames left over)."""
    root = tmp_path_factory.mktemp("media")
    Image.fromarray(odd_frame()[0]).save(root / "odd.png")
    rng = np.random.default_rng(0)
    base = np.asarray(Image.fromarray(astronaut()).resize((320, 184)))
    frames = [np.clip(base.astype(int) + rng.integers(-20, 20, base.shape), 0, 255).astype(np.uint8)
              for _ in range(24)]  # fmt: skip
    write_video(root / "clip.mp4", frames, fps=10)
    return root


def expected_probs(media: Path, vqvae: Path, jpeg: bool) -> dict[str, float]:
    """The synthetic model's score of each file from the *full-frame* reconstructions, then the 224 crops."""
    source = VQVAEReconstruction(VQVAEReconstructor(vqvae), jpeg=jpeg)
    contract = ModelContract(config="tiny")
    frames: dict[int, np.ndarray] = {}
    with open_video(media / "clip.mp4", resolve_decoder("auto")) as reader:
        reader.scan(lambda i: True, frames.__setitem__, 100)
    clips = {"clip.mp4": [frames[i] for i in range(20)], "odd.png": [np.asarray(Image.open(media / "odd.png"))] * 10}
    out = {}
    for name, clip in clips.items():
        pairs = [source.full_pair(frame) for frame in clip]
        originals = np.stack([crop224(o[None])[0] for o, _ in pairs]).reshape(-1, 10, 224, 224, 3)
        recons = np.stack([crop224(r[None])[0] for _, r in pairs]).reshape(-1, 10, 224, 224, 3)
        norm = [frame_sampling.normalise(a, contract.mean, contract.std) for a in (originals, recons)]
        out[name] = float(np.mean(reference_prob(*norm)))
    return out


@pytest.mark.parametrize("jpeg", [True, False])
def test_frames_preset_scores_the_official_inputs(tmp_path: Path, media: Path, tiny_vqvae_onnx, jpeg: bool) -> None:
    model = synthetic(tmp_path / "m.onnx", "vqvae")
    vqvae = tiny_vqvae_onnx.path
    flag = "--recons-jpeg" if jpeg else "--no-recons-jpeg"
    code, output = invoke(media, "--model", model, "--out", tmp_path / "out", "--recons", "vqvae",
                          "--vqvae-model", vqvae, flag, "-q")  # fmt: skip
    assert code == 0, output
    rows = {r.filename: r for r in load_results(tmp_path / "out" / "results.csv")}
    assert rows["clip.mp4"].windows == 2 and rows["odd.png"].status == "ok"
    for name, prob in expected_probs(media, vqvae, jpeg).items():
        assert rows[name].prob_fake == pytest.approx(prob, abs=2e-6), name
    settings = json.loads((tmp_path / "out" / "run.json").read_text())
    assert settings["recons"] == {"mode": "vqvae", "jpeg": jpeg, "vqvae_sha256": settings["recons"]["vqvae_sha256"]}
    assert settings["recons_source"]["vqvae"]["width"] == 16
    assert "trained" not in output and "expects the original" not in output  # the contract says vqvae


def test_recons_original_changes_the_score_and_warns_once(tmp_path: Path, media: Path, tiny_vqvae_onnx) -> None:
    model = synthetic(tmp_path / "m.onnx", "vqvae")
    code, output = invoke(media, "--model", model, "--out", tmp_path / "a", "-q")
    assert code == 0 and output.count("trained with VQ-VAE reconstructions") == 1
    assert json.loads((tmp_path / "a" / "run.json").read_text())["recons"] == {"mode": "original"}
    code, _ = invoke(media, "--model", model, "--out", tmp_path / "b", "-q", "--recons", "vqvae",
                     "--vqvae-model", tiny_vqvae_onnx.path)  # fmt: skip
    a = {r.filename: r.prob_fake for r in load_results(tmp_path / "a" / "results.csv")}
    b = {r.filename: r.prob_fake for r in load_results(tmp_path / "b" / "results.csv")}
    assert code == 0 and all(abs(a[k] - b[k]) > 1e-4 for k in a)
    code, output = invoke(media, "--model", model, "--out", tmp_path / "b", "--resume", "-q")
    assert code == 2 and "recons" in output  # a resumed run may not switch the recons input


def test_vqvae_with_a_model_that_expects_originals_warns(tmp_path: Path, media: Path, tiny_vqvae_onnx) -> None:
    model = synthetic(tmp_path / "m.onnx", "original")
    code, output = invoke(media, "--model", model, "--out", tmp_path / "o", "-q", "--recons", "vqvae",
                          "--vqvae-model", tiny_vqvae_onnx.path)  # fmt: skip
    assert code == 0 and output.count("expects the original frames") == 1


def test_faces_preset_with_vqvae(tmp_path: Path, tiny_vqvae_onnx) -> None:
    root = tmp_path / "in"
    root.mkdir()
    Image.fromarray(astronaut()).save(root / "face.png")
    model = synthetic(tmp_path / "m.onnx", "vqvae")
    code, output = invoke(root, "--model", model, "--out", tmp_path / "out", "--preset", "faces",
                          "--face-detectors", "haar", "--recons", "vqvae", "--vqvae-model", tiny_vqvae_onnx.path,
                          "-q")  # fmt: skip
    assert code == 0, output
    (row,) = load_results(tmp_path / "out" / "results.csv")
    assert row.status == "ok" and row.detector == "haar"


def test_bad_vqvae_options_fail_before_any_work(tmp_path: Path, media: Path, tiny_vqvae_onnx) -> None:
    model = synthetic(tmp_path / "m.onnx", "vqvae")
    out = tmp_path / "out"
    code, output = invoke(media, "--model", model, "--out", out, "--recons", "vqvae",
                          "--vqvae-model", tmp_path / "nope.onnx")  # fmt: skip
    assert code == 2 and "nope.onnx: --vqvae-model file not found" in output and not out.exists()
    (tmp_path / "corrupt.onnx").write_bytes(b"\x00garbage" * 50)
    code, output = invoke(media, "--model", model, "--out", out, "--recons", "vqvae",
                          "--vqvae-model", tmp_path / "corrupt.onnx")  # fmt: skip
    assert code == 1 and "corrupt.onnx: not a loadable ONNX model" in output
    assert not (out / "results.csv").exists()
    code, output = invoke(media, "--model", model, "--out", out, "--recons", "vqvae", "--vqvae-model", model)
    assert code == 1 and "not a VQ-VAE" in output
    code, output = invoke(media, "--model", model, "--out", out, "--vqvae-model", tiny_vqvae_onnx.path)
    assert code == 2 and "only apply to --recons vqvae" in output
    code, output = invoke(media, "--model", model, "--out", out, "--recons", "vqvae")
    assert code == 2 and "needs --vqvae-model" in output
    code, output = invoke(media, "--model", model, "--out", out, "--recons", "magic")
    assert code == 2 and "unknown --recons" in output


def test_vqvae_run_works_with_torch_unimportable(tmp_path: Path, media: Path, tiny_vqvae_onnx) -> None:
    blocker = tmp_path / "blocker"
    for name in ("torch", "onnx"):
        (blocker / name).mkdir(parents=True)
        (blocker / name / "__init__.py").write_text(f"raise ImportError('{name} is blocked')\n", encoding="utf-8")
    model = synthetic(tmp_path / "m.onnx", "vqvae")
    script = f"""
import json, sys
from mmdet_deploy.cli.run import main
sys.argv = ["mmdet-run", {str(media)!r}, "--model", {str(model)!r}, "--out", {str(tmp_path / "out")!r}, "-q",
            "--recons", "vqvae", "--vqvae-model", {str(tiny_vqvae_onnx.path)!r}]
try:
    main()
except SystemExit as exc:
    code = exc.code
print(json.dumps({{"code": code, "heavy": sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "onnx"))}}))
"""
    env = {"PYTHONPATH": f"{blocker}:{SRC}", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {"code": 0, "heavy": []}


def test_worker_processes_rebuild_the_vqvae(tmp_path: Path, media: Path, tiny_vqvae_onnx) -> None:
    """--decode-processes pickles the Preprocessor: the VQ-VAE source reopens its session in each process."""
    import pickle

    rec = VQVAEReconstructor(tiny_vqvae_onnx.path)
    copy = pickle.loads(pickle.dumps(VQVAEReconstruction(rec)))
    frame = odd_frame()[0]
    assert all(np.array_equal(a, b) for a, b in zip(copy.center_pair(frame, 224), VQVAEReconstruction(rec)
                                                    .center_pair(frame, 224), strict=True))  # fmt: skip
    model = synthetic(tmp_path / "m.onnx", "vqvae")
    args = ["--model", model, "--recons", "vqvae", "--vqvae-model", tiny_vqvae_onnx.path, "-q"]
    assert invoke(media, "--out", tmp_path / "threads", *args)[0] == 0
    code, output = invoke(media, "--out", tmp_path / "procs", "--decode-processes", *args)
    assert code == 0, output
    threads = {r.filename: r.prob_fake for r in load_results(tmp_path / "threads" / "results.csv")}
    procs = {r.filename: r.prob_fake for r in load_results(tmp_path / "procs" / "results.csv")}
    assert procs.keys() == threads.keys()
    assert all(procs[k] == pytest.approx(threads[k], abs=2e-6) for k in threads)  # results.csv rounds to 1e-6
