"""Hostile inputs, round 2 (issue 12), in real processes: Ctrl-C, two runs into one --out, OpenCV on a name
that is not UTF-8, --quiet against library warnings, and one-line errors from ``mmdet-run``.

Every process runs under ``timeout=`` (a hang fails the test) and is stopped through its own handle.
"""

from __future__ import annotations

import io
import json
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from mmdet_deploy.contract import ModelContract
from mmdet_deploy.runtime.results import load_results
from runtime_fixtures import build_synthetic_model, write_index_video

SRC = Path(__file__).resolve().parents[1] / "src"
FRAMES = ModelContract(config="tiny", preset="frames")
#: Runs mmdet-run after making files whose name contains ``hold`` wait: for ever (``hold_forever``) or
#: HOLD_S seconds; each file that starts leaves a ``started-NAME`` marker in MARKERS.
LAUNCH = """
import os, sys, threading, time
from pathlib import Path
from mmdet_deploy.runtime.preprocess import Preprocessor
real = Preprocessor.stream
def stream(self, path, kind, emit):
    name = Path(path).name
    (Path(os.environ["MARKERS"]) / ("started-" + name)).touch()
    if "hold_forever" in name:
        threading.Event().wait()
    elif "hold" in name:
        time.sleep(float(os.environ["HOLD_S"]))
    return real(self, path, kind, emit)
Preprocessor.stream = stream
from mmdet_deploy.cli.run import main
sys.argv[0] = "mmdet-run"
main()
"""


def _env(markers: Path, hold_s: float = 0.0) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.update(MARKERS=str(markers), HOLD_S=str(hold_s))
    return env


def _image(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (64, 48), (200, 30, 30)).save(path, format="PNG")
    return path


def _wait_for(condition, seconds: float, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert proc.poll() is None, f"the run ended early: {proc.communicate()}"
        assert time.monotonic() < deadline, "timed out waiting for the run"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_synthetic_model(tmp_path_factory.mktemp("model") / "m.onnx", FRAMES)


@pytest.mark.skipif(os.name != "posix", reason="SIGINT to a child process is POSIX")
def test_ctrl_c_stops_at_once_keeps_finished_rows_and_resumes(tmp_path: Path, model: Path) -> None:
    root, out, markers = tmp_path / "in", tmp_path / "out", tmp_path / "markers"
    markers.mkdir()
    _image(root / "0_hold_forever.png")  # first in order: every finished row is queued behind it
    for i in range(6):
        _image(root / f"b_{i}.png")
    args = [str(root), "--model", str(model), "--out", str(out), "--workers", "2", "--batch-size", "1", "-q"]
    proc = subprocess.Popen([sys.executable, "-c", LAUNCH, *args], env=_env(markers), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        # prefetch is 4 files: the stuck one and three more, which finish and wait for it
        _wait_for(lambda: len(list(markers.glob("started-b_*"))) >= 3, 60, proc)
        time.sleep(1.0)
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=20)
        elapsed = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, stderr
    assert elapsed < 10 and "interrupted" in stderr and "--resume" in stderr and "Traceback" not in stderr
    rows = load_results(out / "results.csv")
    assert [r.filename for r in rows] == ["b_0.png", "b_1.png", "b_2.png"]  # flushed past the stuck file
    predictions = (out / "predictions.csv").read_text().splitlines()
    assert predictions == ["filename,label", *(f"{r.filename},{r.label}" for r in rows)]  # in step with results
    # The stuck file is still stuck on resume: the time limit gives it an error row and the process exits
    # although its worker thread never returns.
    resumed = subprocess.run([sys.executable, "-c", LAUNCH, *args, "--resume", "--file-timeout", "1"],
                             env=_env(markers), capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 1, resumed.stderr
    after = load_results(out / "results.csv")
    assert after[:3] == rows and len({r.filename for r in after}) == len(after) == 7
    stuck = next(r for r in after if r.filename == "0_hold_forever.png")
    assert stuck.status == "error" and "timed out" in stuck.reason


@pytest.mark.skipif(os.name != "posix", reason="flock is POSIX")
def test_a_second_run_into_the_same_out_gets_exit_2(tmp_path: Path, model: Path) -> None:
    root, out, markers = tmp_path / "in", tmp_path / "out", tmp_path / "markers"
    markers.mkdir()
    for i in range(4):
        _image(root / f"a_{i}.png")
    _image(root / "hold.png")  # keeps the first run busy for HOLD_S seconds
    args = [str(root), "--model", str(model), "--out", str(out), "--workers", "1", "--batch-size", "1", "-q"]
    first = subprocess.Popen([sys.executable, "-c", LAUNCH, *args], env=_env(markers, 6.0), text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _wait_for(lambda: (markers / "started-hold.png").exists(), 60, first)
        second = subprocess.run([sys.executable, "-c", LAUNCH, *args, "--resume"], env=_env(markers),
                                capture_output=True, text=True, timeout=60)
        _, first_err = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert second.returncode == 2 and "another run (pid" in second.stderr
    assert len(second.stderr.strip().splitlines()) == 1
    assert first.returncode == 0, first_err
    names = [r.filename for r in load_results(out / "results.csv")]
    assert names == ["a_0.png", "a_1.png", "a_2.png", "a_3.png", "hold.png"]  # no phantom, no duplicate


def test_opencv_decoder_on_a_name_that_is_not_utf8(tmp_path: Path, model: Path) -> None:
    root = tmp_path / "in"
    video = write_index_video(tmp_path / "v.mp4", 12)
    target = os.path.join(os.fsencode(root), b"clip \xe9.mp4")
    root.mkdir()
    try:
        os.replace(video, target)
    except OSError:
        pytest.skip("this file system refuses names that are not UTF-8")
    out = tmp_path / "out"
    args = [str(root), "--model", str(model), "--out", str(out), "--decoder", "opencv", "-q"]
    proc = subprocess.run([sys.executable, "-c", LAUNCH, *args], env=_env(tmp_path), capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, (proc.returncode, proc.stderr)  # OpenCV crashed (SIGSEGV) on such names
    (row,) = load_results(out / "results.csv")
    assert row.filename == "clip \\xe9.mp4" and row.status == "ok" and row.windows == 1


def _bad_exif_jpeg(path: Path) -> Path:
    """A JPEG whose EXIF orientation entry claims more data than the file holds (Pillow warns about it)."""
    buffer = io.BytesIO()
    exif = Image.Exif()
    exif[0x010E], exif[0x0112] = "desc", 6
    Image.new("RGB", (64, 48), (200, 30, 30)).save(buffer, "JPEG", exif=exif.tobytes())
    data = bytearray(buffer.getvalue())
    tiff = data.index(b"Exif\x00\x00") + 6
    order = ">" if data[tiff : tiff + 2] == b"MM" else "<"
    (ifd,) = struct.unpack(order + "I", data[tiff + 4 : tiff + 8])
    entry = tiff + ifd + 2 + 12  # the second entry: orientation
    data[entry + 4 : entry + 8] = struct.pack(order + "I", 5000)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(data))
    return path


def test_quiet_silences_library_warnings(tmp_path: Path, model: Path) -> None:
    _bad_exif_jpeg(tmp_path / "in" / "phone.jpg")
    for quiet, out in ((False, "loud"), (True, "quiet")):
        args = [str(tmp_path / "in"), "--model", str(model), "--out", str(tmp_path / out)] + (["-q"] if quiet else [])
        proc = subprocess.run([sys.executable, "-c", LAUNCH, *args], env=_env(tmp_path), capture_output=True,
                              text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        if quiet:
            assert proc.stderr == ""
        else:
            assert "Tag data larger than file" in proc.stderr  # the warning exists, as a log line


runner = CliRunner()


def _cli(*args: str | Path) -> tuple[int, str]:
    from mmdet_deploy.cli.run import app

    result = runner.invoke(app, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


def test_one_line_errors_from_the_command_line(tmp_path: Path, model: Path) -> None:
    root = tmp_path / "in"
    _image(root / "a.png")
    (tmp_path / "file").write_text("x")
    os.symlink(tmp_path / "nowhere", tmp_path / "dangling")
    bad_contract = build_synthetic_model(tmp_path / "std0.onnx", FRAMES,
                                         contract_json=json.dumps(FRAMES.to_dict() | {"std": [0.2, 0, 0.2]}))
    cases = [
        ((root, "--model", model, "--out", tmp_path / "file" / "out"), 2, "is a file, not a folder"),
        ((root, "--model", model, "--out", tmp_path / "dangling"), 2, "dangling symbolic link"),
        ((root, "--model", model, "--out", root), 2, "INPUT folder itself"),
        ((root, "--model", bad_contract, "--out", tmp_path / "o1"), 1, "std must be positive"),
        ((root, "--model", model, "--out", tmp_path / "o2", "--file-timeout", "-3"), 2, "file-timeout"),
    ]
    if Path("/proc").is_dir():
        cases.append(((root, "--model", model, "--out", "/proc/mmdet-test-out"), 2, "cannot create --out"))
    for args, code, words in cases:
        exit_code, output = _cli(*args)
        assert exit_code == code and words in output, (args, output)
        assert "Traceback" not in output
