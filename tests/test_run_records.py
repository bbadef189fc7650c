"""faces.csv, windows.csv, --save-crops and thumbs/: exact contents, durability, and --resume consistency."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from mmdet_deploy.contract import ModelContract
from mmdet_deploy.runtime.faces import FaceFinder
from mmdet_deploy.runtime.preprocess import Preprocessor
from mmdet_deploy.runtime.records import (
    FACES_COLUMNS,
    WINDOWS_COLUMNS,
    AppendedTable,
    face_records,
    load_table,
    review_path,
)
from mmdet_deploy.runtime.results import load_results
from runtime_fixtures import astronaut, build_synthetic_model, face_frames, solid_image, write_index_video, write_video

SRC = Path(__file__).resolve().parents[1] / "src"
LAUNCH = "import sys; from mmdet_deploy.cli.run import main; sys.argv[0] = 'mmdet-run'; main()"


def invoke(*args: str | Path) -> tuple[int, str]:
    from mmdet_deploy.cli.run import app

    result = CliRunner().invoke(app, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


def _table(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_synthetic_model(tmp_path_factory.mktemp("model") / "synthetic.onnx")


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("media") / "in"
    (root / "sub").mkdir(parents=True)
    Image.fromarray(astronaut()).save(root / "face.png")
    write_video(root / "sub" / "face clip.mp4", face_frames(25), fps=10)
    solid_image(root / "blank.png", (40, 90, 200), size=(320, 240))  # no face anywhere
    write_index_video(root / "index.mp4", 35, fps=10)
    (root / "zero.mp4").write_bytes(b"")
    (root / "notes.md").write_text("not media", encoding="utf-8")
    return root


def test_faces_csv_has_the_chosen_face_of_each_sampled_frame_and_crops_are_the_model_inputs(
    model: Path, media: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    code, output = invoke(media, "--model", model, "--out", out, "--preset", "faces", "--save-crops", "-q")
    assert code == 1, output  # zero.mp4
    rows = {r.filename: r for r in load_results(out / "results.csv")}
    with open(out / "faces.csv", encoding="utf-8", newline="") as handle:
        assert next(csv.reader(handle)) == list(FACES_COLUMNS)
    faces = _table(out / "faces.csv")
    scored = [name for name, row in rows.items() if row.status in ("ok", "no_face")]
    assert sorted({f["filename"] for f in faces}) == sorted(scored)  # no rows for errors and skipped files
    assert not (out / "windows.csv").exists()

    contract = ModelContract(config="tiny")
    pre = Preprocessor(contract, "faces")
    for name in scored:
        prepared = pre(media / name)
        mine = [f for f in faces if f["filename"] == name]
        # One row per distinct sampled frame, in frame order, exactly what the run recorded.
        assert [int(f["frame"]) for f in mine] == sorted(set(prepared.frame_indices[0]))
        assert [list(f.values()) for f in mine] == face_records(name, prepared)
        for t, frame in enumerate(prepared.frame_indices[0]):
            saved = cv2.cvtColor(cv2.imread(str(out / "crops" / review_path(name) / f"{frame}.png")), cv2.COLOR_BGR2RGB)
            np.testing.assert_array_equal(saved, prepared.originals[0, t])  # lossless: the exact model input
        assert len(list((out / "crops" / review_path(name)).iterdir())) == len(mine)
    clip = [f for f in faces if f["filename"] == "sub/face clip.mp4"]
    assert rows["sub/face clip.mp4"].frames == 10 and len(clip) == 10

    # The box is the face before the margin, in original pixels: the detector chain's own answer.
    (image_row,) = [f for f in faces if f["filename"] == "face.png"]
    box, detector = FaceFinder().find(astronaut())
    assert box is not None and image_row["frame"] == "0" and image_row["detector"] == detector
    found = [float(image_row[k]) for k in ("x", "y", "w", "h")]
    assert found == pytest.approx([box.x0, box.y0, box.x1 - box.x0, box.y1 - box.y0], abs=0.01)
    assert image_row["score"] == ("" if box.score is None else f"{box.score:.4f}")
    (blank,) = [f for f in faces if f["filename"] == "blank.png"]
    assert rows["blank.png"].status == "no_face"
    assert [blank[k] for k in ("detector", "x", "y", "w", "h", "score")] == [""] * 6


def test_windows_csv_gives_each_window_in_frames_and_seconds(model: Path, media: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    invoke(media, "--model", model, "--out", out, "--preset", "frames", "-q")
    rows = {r.filename: r for r in load_results(out / "results.csv")}
    windows = _table(out / "windows.csv")
    assert list(windows[0]) == list(WINDOWS_COLUMNS)
    index = [w for w in windows if w["filename"] == "index.mp4"]
    assert [(w["window"], w["start_frame"], w["end_frame"], w["start_s"], w["end_s"]) for w in index] == [
        ("0", "0", "9", "0.000", "1.000"), ("1", "10", "19", "1.000", "2.000"), ("2", "20", "29", "2.000", "3.000")]
    mean = np.mean([float(w["prob_fake"]) for w in index])
    assert rows["index.mp4"].windows == 3 and rows["index.mp4"].prob_fake == pytest.approx(mean, abs=2e-6)
    assert {w["filename"] for w in windows} == {"index.mp4", "sub/face clip.mp4"}  # videos only
    assert not (out / "faces.csv").exists()


def test_a_new_run_replaces_the_tables_of_the_run_it_overwrites(model: Path, media: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    invoke(media, "--model", model, "--out", out, "--preset", "faces", "-q")
    assert (out / "faces.csv").exists()
    invoke(media, "--model", model, "--out", out, "--preset", "frames", "--overwrite", "-q")
    assert not (out / "faces.csv").exists() and (out / "windows.csv").exists()


def test_appended_table_resume_keeps_finished_files_only(tmp_path: Path) -> None:
    path = tmp_path / "faces.csv"
    table = AppendedTable(path, FACES_COLUMNS)
    table.append([["a.png", "0", "haar", "1", "2", "3", "4", ""]])
    table.append([["b.mp4", "0", "", "", "", "", "", ""], ["b.mp4", "5", "dlib", "1", "1", "9", "9", ""]])
    table.close()
    with open(path, "a", encoding="utf-8") as handle:
        handle.write("c.mp4,0,haar,1")  # a kill in the middle of the last write
    assert load_table(path, FACES_COLUMNS)[1] == 1
    # b.mp4 finished its faces rows but its results.csv row was never written: it is redone.
    table = AppendedTable(path, FACES_COLUMNS, keep={"a.png"})
    table.append([["b.mp4", "0", "", "", "", "", "", ""]])
    table.close()
    assert path.read_text(encoding="utf-8") == ",".join(FACES_COLUMNS) + "\na.png,0,haar,1,2,3,4,\nb.mp4,0,,,,,,\n"


def test_review_path_stays_inside_and_is_one_to_one() -> None:
    names = ["a.png", "sub/b.mp4", "../up.png", "/abs/c.png", "abs/c.png", "x/./y.png", "%2E%2E/up.png", "..", "."]
    paths = [review_path(n) for n in names]
    assert paths[0].as_posix() == "a.png" and paths[1].as_posix() == "sub/b.mp4"
    assert len({p.as_posix() for p in paths}) == len(names)
    assert all(not p.is_absolute() and ".." not in p.parts and "." not in p.parts for p in paths)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


@pytest.mark.skipif(os.name != "posix", reason="SIGKILL is POSIX")
def test_killed_run_resumes_with_faces_csv_neither_duplicated_nor_lost(model: Path, tmp_path: Path) -> None:
    root = tmp_path / "in"
    root.mkdir()
    image = Image.fromarray(astronaut())
    for i in range(30):
        image.save(root / f"img {i:02d}.png")
    out = tmp_path / "out"
    args = [str(root), "--model", str(model), "--out", str(out), "--workers", "1", "--batch-size", "1", "-q",
            "--preset", "faces", "--report"]
    proc = subprocess.Popen([sys.executable, "-c", LAUNCH, *args], env=_env(), stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            if (out / "results.csv").exists() and (out / "results.csv").read_bytes().count(b"\n") >= 6:
                break
            assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read()!r}"
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    with open(out / "faces.csv", "a", encoding="utf-8") as handle:
        handle.write("img 29.png,0,dl")  # what a kill in the middle of a write leaves
    resumed = subprocess.run([sys.executable, "-c", LAUNCH, *args, "--resume"], env=_env(), capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    names = sorted(r.filename for r in load_results(out / "results.csv"))
    faces = _table(out / "faces.csv")
    assert sorted(f["filename"] for f in faces) == names  # one row per image: none lost, none twice
    assert all(f["frame"] == "0" and f["x"] for f in faces)
    assert all((out / "thumbs" / name / "meta.json").is_file() for name in names)
    assert (out / "report.html").is_file()


def test_records_and_report_need_no_torch(model: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    for name in ("torch", "tensorrt", "onnx"):
        (blocker / name).mkdir(parents=True)
        (blocker / name / "__init__.py").write_text(f"raise ImportError('{name} is blocked')\n", encoding="utf-8")
    root = tmp_path / "in"
    root.mkdir()
    Image.fromarray(astronaut()).save(root / "face.png")
    out = tmp_path / "out"
    script = f"""
import json, sys
from mmdet_deploy.cli.run import main
sys.argv = ["mmdet-run", {str(root)!r}, "--model", {str(model)!r}, "--out", {str(out)!r}, "-q", "--report",
            "--save-crops"]
try:
    main()
except SystemExit as exc:
    code = exc.code
from mmdet_deploy.cli.report import main as report
sys.argv = ["mmdet-report", {str(out)!r}, "-q"]
try:
    report()
except SystemExit as exc:
    code = code or exc.code
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "tensorrt", "onnx"))
print(json.dumps({{"code": code, "heavy": heavy}}))
"""
    env = _env()
    env["PYTHONPATH"] = os.pathsep.join([str(blocker), env["PYTHONPATH"]])
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == '{"code": 0, "heavy": []}'
    assert (out / "report.html").is_file() and (out / "crops" / "face.png" / "0.png").is_file()
