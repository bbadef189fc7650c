"""Calibration sets: sampled from real media through the runtime's preprocessing, reproducible, auditable."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from mmdet_deploy.calibration.dataset import CalibrationSet, CalibrationSetError, assign_holdout
from mmdet_deploy.calibration.sampling import sample_calibration_set
from mmdet_deploy.contract import ModelContract
from mmdet_deploy.errors import ContractError, UsageError
from test_calibration_support import synthetic_set, toy_contract

#: Small clips keep the tests fast; the runtime's preprocessing is the same at any size.
CONTRACT = ModelContract(config="tiny", frames=4, image_size=32, preset="frames")


def _media(folder: Path, images: int = 6, videos: int = 2) -> Path:
    """Blocky random images, index videos of 10 frames (2 windows of 4), a broken image, a text file."""
    from PIL import Image

    from runtime_fixtures import write_index_video

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(images):
        cells = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
        Image.fromarray(np.kron(cells, np.ones((8, 8, 1), np.uint8))).save(folder / f"img{i}.png")
    for i in range(videos):
        write_index_video(folder / "clips" / f"vid{i}.mp4", 10, size=(48, 40), colour=(40 * i, 90, 200))
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot an image")
    (folder / "notes.txt").write_text("not media")
    return folder


def test_writer_hashes_dedup_and_tamper_detection(tmp_path: Path) -> None:
    calib = synthetic_set(tmp_path / "set", toy_contract(), sources=16, holdout=0.25)
    assert len(calib) == 16 and calib.manifest["counts"] == {"calibration": 12, "holdout": 4}
    assert calib.verify() == 16
    entry = calib.entries[0]
    # recons equals original here: one file holds both, both hashes name it
    assert entry.arrays["original"] == entry.arrays["recons"]
    assert len(list((tmp_path / "set" / "arrays").iterdir())) == 16
    data = (calib.root / entry.arrays["original"]["file"]).read_bytes()
    assert hashlib.sha256(data).hexdigest() == entry.arrays["original"]["sha256"]
    loaded = calib.load(entry)
    assert loaded["original"].dtype == np.float32 and loaded["original"].shape == (2, 3, 16, 16)
    batch = next(calib.batches("holdout", batch_size=3))
    assert batch["original"].shape == (3, 2, 3, 16, 16)
    tampered = bytearray(data)
    tampered[-1] ^= 0xFF
    (calib.root / entry.arrays["original"]["file"]).write_bytes(bytes(tampered))
    with pytest.raises(CalibrationSetError, match="sha256 differs"):
        calib.load(entry)
    with pytest.raises(ContractError, match="image_size"):
        calib.check_compatible(toy_contract(image_size=32))
    calib.check_compatible(toy_contract(preset="frames"))  # another preset only warns


def test_holdout_split() -> None:
    names = [f"f{i}" for i in range(10)]
    splits, unit = assign_holdout(names, 0.2, seed=0)
    assert unit == "file" and splits.count("holdout") == 2
    assert assign_holdout(names, 0.2, seed=0) == (splits, unit)
    assert assign_holdout(names, 0.2, seed=1)[0] != splits
    grouped = ["a"] * 3 + ["b"] * 3 + ["c"] * 3 + ["d"] * 3
    splits, unit = assign_holdout(grouped, 0.25, seed=0)
    held = {n for n, s in zip(grouped, splits, strict=True) if s == "holdout"}
    assert unit == "file" and len(held) == 1 and splits.count("holdout") == 3  # whole files only
    splits, unit = assign_holdout(["one"] * 5, 0.4, seed=0)
    assert unit == "clip" and splits.count("holdout") == 2
    assert assign_holdout(names, 0.0, seed=0)[0] == ["calibration"] * 10
    assert assign_holdout(["a", "b"], 0.9, seed=0)[0].count("calibration") == 1  # one stays for calibration
    with pytest.raises(UsageError):
        assign_holdout(names, 1.0, seed=0)


def test_sampling_is_deterministic_auditable_and_uses_the_runtime(tmp_path: Path) -> None:
    from mmdet_deploy.runtime.preprocess import Preprocessor

    data = _media(tmp_path / "media")
    kwargs = {"contract": CONTRACT, "clips": 9, "seed": 0, "min_clips": 8, "holdout": 0.25}
    first = sample_calibration_set(data, tmp_path / "a", **kwargs)
    second = sample_calibration_set(data, tmp_path / "b", **kwargs)
    assert (first.root / "manifest.json").read_bytes() == (second.root / "manifest.json").read_bytes()
    other = sample_calibration_set(data, tmp_path / "c", **{**kwargs, "seed": 1})
    assert [e.source for e in other.entries] != [e.source for e in first.entries]

    m = first.manifest
    assert len(first) == 9 and m["seed"] == 0 and m["preprocessing"]["preset"] == "frames"
    assert m["preprocessing"]["image_size"] == 32 and m["clip_shape"] == [4, 3, 32, 32]
    prov = m["provenance"]
    assert prov["media_files"] == 9 and prov["clips_per_file"] == 1  # 6 images, 2 videos, the broken file
    assert [s["file"] for s in prov["skipped"]] == ["broken.png"]
    taken = {s["file"]: s["taken"] for s in prov["sources"]}
    assert sorted(len(w) for w in taken.values()) == [1] * 7 + [2]  # a second pass took a 2nd video window
    for source in prov["sources"]:
        assert source["sha256"] == hashlib.sha256((data / source["file"]).read_bytes()).hexdigest()
    pre = Preprocessor(CONTRACT)
    for entry in first.entries:  # every stored clip is exactly what the runtime feeds the model
        prepared = pre(data / entry.source)
        original, recons = prepared.window_inputs(entry.window, entry.window + 1)
        arrays = first.load(entry)
        np.testing.assert_array_equal(arrays["original"], original[0])
        np.testing.assert_array_equal(arrays["recons"], recons[0])
        assert list(entry.frame_indices) == prepared.frame_indices[entry.window]
        if entry.source.endswith(".mp4"):
            assert list(entry.frame_indices) in ([0, 1, 2, 3], [4, 5, 6, 7])
    held = {e.source for e in first.split("holdout")}
    assert held and not held & {e.source for e in first.split("calibration")}


def test_too_small_a_set_is_refused(tmp_path: Path) -> None:
    data = _media(tmp_path / "media", images=3, videos=0)
    with pytest.raises(CalibrationSetError, match=r"at least 16 clips .*only 3 could be made"):
        sample_calibration_set(data, tmp_path / "out", contract=CONTRACT)
    assert not (tmp_path / "out").exists()
    with pytest.raises(UsageError, match="below --min-clips"):
        sample_calibration_set(data, tmp_path / "out", contract=CONTRACT, clips=8)


def test_cli_reads_the_model_contract_and_refuses_politely(tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    from typer.testing import CliRunner

    from mmdet_deploy.cli.export import app
    from runtime_fixtures import build_synthetic_model

    data = _media(tmp_path / "media", images=5, videos=0)
    model = build_synthetic_model(tmp_path / "m.onnx", CONTRACT)
    args = ["calibrate-set", "--data", str(data), "--model", str(model), "--out", str(tmp_path / "set")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1
    assert "needs at least 16 clips" in result.output and "only 5" in result.output
    result = CliRunner().invoke(app, [*args, "--min-clips", "4", "--clips", "5", "--holdout", "0.4"])
    assert result.exit_code == 0, result.output
    calib = CalibrationSet.open(tmp_path / "set")
    assert calib.preprocessing["image_size"] == 32 and calib.manifest["counts"]["holdout"] == 2
    assert "wrote 5 clips" in result.output
    again = CliRunner().invoke(app, [*args, "--min-clips", "4", "--clips", "5"])
    assert again.exit_code == 2 and "--overwrite" in again.output
    assert json.loads((tmp_path / "set" / "manifest.json").read_text())["counts"]["holdout"] == 2
