"""Hostile inputs, round 2 (issue 12): one test per failure class, in process, each under a time limit.

NaN scores, non-UTF-8 and look-alike names, FIFOs / sockets / devices, a stuck decoder, symlinked folders and
loops, oversized video frames, streamed windows (bounded memory), --resume with another INPUT, the output
folder lock, BOM lists, bad --out and bad contracts. Subprocess cases (Ctrl-C, a second process, OpenCV on
a non-UTF-8 name, --quiet) are in test_runtime_badinput_proc.py.
"""

from __future__ import annotations

import csv
import json
import os
import socket
import threading
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mmdet_deploy.contract import ModelContract
from mmdet_deploy.errors import ContractError, MediaError, UsageError
from mmdet_deploy.runtime.discovery import discover
from mmdet_deploy.runtime.names import escape_name, name_bytes, unescape_name
from mmdet_deploy.runtime.pipeline import run_inference
from mmdet_deploy.runtime.prepare import scored_row
from mmdet_deploy.runtime.preprocess import PreparedFile, Preprocessor, WindowSink
from mmdet_deploy.runtime.results import MANIFEST_KEYS, ResultRow, load_results
from mmdet_deploy.runtime.run import RunConfig, run_folder
from mmdet_deploy.runtime.sink import ResultsSink
from runtime_fixtures import astronaut, build_synthetic_model, time_limit, write_index_video, write_video

FRAMES = ModelContract(config="tiny", preset="frames")


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_synthetic_model(tmp_path_factory.mktemp("model") / "m.onnx", FRAMES)


def _image(path: Path, colour: tuple[int, int, int] = (200, 30, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (64, 48), colour).save(path, format="PNG")  # the name need not end in .png
    return path


def _run(root: Path, model: Path, out: Path, **options: object):
    config = RunConfig(root, model=model, out=out, workers=2, batch_size=2, **options)  # type: ignore[arg-type]
    with time_limit(120):
        return run_folder(config)


def _rows(out: Path) -> dict[str, ResultRow]:
    return {row.filename: row for row in load_results(out / "results.csv")}


def _predictions(out: Path) -> list[list[str]]:
    with open(out / "predictions.csv", encoding="utf-8", newline="") as handle:
        return list(csv.reader(handle))


# -- 1. a NaN is never a verdict ---------------------------------------------------------------------------------
def test_nan_scores_are_error_rows_naming_backend_and_precision(tmp_path: Path) -> None:
    nan_model = build_synthetic_model(tmp_path / "nan.onnx", FRAMES, nan_weight=True)
    root = tmp_path / "in"
    _image(root / "a.png")
    write_index_video(root / "v.mp4", 22)
    summary = _run(root, nan_model, tmp_path / "out")
    rows = _rows(tmp_path / "out")
    assert summary.exit_code == 1 and summary.counts["error"] == 2 and summary.counts["ok"] == 0
    for row in rows.values():
        assert row.status == "error" and row.label is None and row.prob_fake is None
        assert "non-finite" in row.reason and "backend onnxruntime, precision fp32" in row.reason
    assert rows["v.mp4"].windows == 2
    assert _predictions(tmp_path / "out") == [["filename", "label"]]  # never a "real"


@pytest.mark.parametrize(("probs", "words"), [([0.2, float("nan")], "non-finite"), ([float("inf")], "non-finite"),
                                              ([1.5], "outside [0, 1]"), ([-0.1], "outside [0, 1]")])
def test_every_window_score_is_checked(tmp_path: Path, probs: list[float], words: str) -> None:
    item = discover(_image(tmp_path / "a.png"))[0]
    prepared = PreparedFile(item.path, "image", "frames", np.empty(0), np.empty(0), [[0]] * len(probs),
                            FRAMES.mean, FRAMES.std)
    row = scored_row(item, prepared, probs, 0.5, 0.1, source="backend x, precision int8")
    assert row.status == "error" and row.label is None and words in row.reason and "precision int8" in row.reason


# -- 2 and 11. names: faithful, reversible, injective ------------------------------------------------------------
def test_escaping_is_injective_and_reversible() -> None:
    raw = [b"caf\xe9.png", "café.png".encode(), b"a\nb.png", b"a\\nb.png", b"t\tx", b"\x01.jpg", b"\\x01.jpg",
           b"\\xe9.png", "\u2028.png".encode(), b"\xc2\x85.png", b"plain name.mp4"]
    names = [os.fsdecode(r) for r in raw]
    escaped = [escape_name(n) for n in names]
    assert len(set(escaped)) == len(raw)
    for original, text in zip(raw, escaped, strict=True):
        assert name_bytes(text) == original and text.encode("utf-8")  # valid UTF-8, one line
        assert "\n" not in text and "\r" not in text
    assert escaped[0] == "caf\\xe9.png" and escaped[1] == "café.png" and escaped[-1] == "plain name.mp4"
    assert escaped[2] == "a\\nb.png" and escaped[3] == "a\\\\nb.png"
    for bad in ("a\\", "a\\q", "\\x41", "line\nbreak"):
        with pytest.raises(ValueError):
            unescape_name(bad)


def _non_utf8(folder: Path, raw: bytes) -> Path:
    path = os.path.join(os.fsencode(folder), raw)
    try:
        Image.new("RGB", (64, 48), (30, 30, 200)).save(os.fsdecode(path), format="PNG")
    except (OSError, UnicodeError):
        pytest.skip("this file system refuses names that are not UTF-8")
    return Path(os.fsdecode(path))


def test_non_utf8_and_look_alike_names_get_their_own_rows_and_resume(tmp_path: Path, model: Path) -> None:
    root = tmp_path / "in"
    _image(root / "plain.png")
    _non_utf8(root, b"caf\xe9.png")
    _image(root / "two\nlines.png")
    _image(root / "two\\nlines.png")  # a literal backslash-n: another file, another row
    out = tmp_path / "out"
    summary = _run(root, model, out)
    assert summary.exit_code == 0 and summary.counts["ok"] == 4
    rows = _rows(out)
    assert set(rows) == {"plain.png", "caf\\xe9.png", "two\\nlines.png", "two\\\\nlines.png"}
    assert {name_bytes(n) for n in rows} == {b"plain.png", b"caf\xe9.png", b"two\nlines.png", b"two\\nlines.png"}
    assert sorted(r[0] for r in _predictions(out)[1:]) == sorted(rows)
    json.loads((out / "run.json").read_text(encoding="utf-8"))
    resumed = _run(root, model, out, resume=True)
    assert resumed.stats.files == 0 and resumed.previous_rows == 4 and len(load_results(out / "results.csv")) == 4


# -- 3. nothing that is not a regular file is opened; nothing hangs ----------------------------------------------
@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs (POSIX)")
def test_fifo_socket_and_device_get_error_rows_without_blocking(tmp_path: Path, model: Path) -> None:
    root = tmp_path / "in"
    _image(root / "good.png")
    os.mkfifo(root / "pipe.mp4")
    os.mkfifo(root / "pipe.jpg")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(root / "sock.png"))
    os.symlink("/dev/zero", root / "zero.mp4")
    try:
        summary = _run(root, model, tmp_path / "out")
        again = _run(root, model, tmp_path / "out", resume=True)  # the resume of the issue hung as well
    finally:
        sock.close()
    rows = _rows(tmp_path / "out")
    assert summary.counts == {"ok": 1, "no_face": 0, "error": 4, "skipped": 0} and again.stats.files == 0
    assert "named pipe (FIFO)" in rows["pipe.mp4"].reason and "named pipe (FIFO)" in rows["pipe.jpg"].reason
    assert "a socket" in rows["sock.png"].reason and "character device" in rows["zero.mp4"].reason
    os.mkfifo(tmp_path / "list.txt")  # a FIFO as the INPUT list: refused, not read
    with time_limit(10), pytest.raises(UsageError, match="not a regular file"):
        discover(tmp_path / "list.txt")


class _Stuck(Preprocessor):
    """Files named ``stuck*`` never finish (a decoder wedged on a pathological file)."""

    def __init__(self) -> None:
        super().__init__(FRAMES)
        self.release = threading.Event()

    def stream(self, path: str | Path, kind: str | None, emit: WindowSink) -> PreparedFile:
        if Path(path).name.startswith("stuck"):
            self.release.wait(60)  # the test releases it at the end: no thread outlives the test by long
        return super().stream(path, kind, emit)


def test_a_stuck_file_times_out_and_the_run_goes_on(tmp_path: Path, model: Path) -> None:
    from mmdet_deploy.runtime.backends.onnxruntime import OnnxRuntimeBackend

    for name in ("a.png", "stuck.png", "c.png", "d.png"):
        _image(tmp_path / name)
    pre = _Stuck()
    rows: list[ResultRow] = []
    start = time.monotonic()
    try:
        with time_limit(60):
            # One worker: the files after the stuck one prove that its thread was replaced.
            run_inference(discover(tmp_path), pre, OnnxRuntimeBackend(model), workers=1, batch_size=1,
                          file_timeout=0.5, on_row=rows.append)
    finally:
        pre.release.set()
    assert time.monotonic() - start < 30
    by_name = {r.filename: r for r in rows}
    assert [r.filename for r in rows] == ["a.png", "c.png", "d.png", "stuck.png"]
    assert by_name["stuck.png"].status == "error" and "timed out" in by_name["stuck.png"].reason
    assert all(by_name[n].status == "ok" for n in ("a.png", "c.png", "d.png"))


def test_file_timeout_is_validated(tmp_path: Path, model: Path) -> None:
    with pytest.raises(UsageError, match="--file-timeout"):
        RunConfig(tmp_path, model=model, out=tmp_path / "out", file_timeout=-1)


# -- 5. symlinked folders are followed, loops are named ----------------------------------------------------------
def test_symlinked_folders_are_followed_and_loops_listed(tmp_path: Path, model: Path) -> None:
    root = tmp_path / "in"
    _image(root / "own.png")
    _image(tmp_path / "elsewhere" / "linked.png")
    os.symlink(tmp_path / "elsewhere", root / "link")
    (root / "sub").mkdir()
    os.symlink(root, root / "sub" / "back")  # a loop: INPUT itself
    os.symlink(root / "l1.mp4", root / "l2.mp4")
    os.symlink(root / "l2.mp4", root / "l1.mp4")  # a file link loop
    summary = _run(root, model, tmp_path / "out")
    rows = _rows(tmp_path / "out")
    assert set(rows) == {"own.png", "link/linked.png", "sub/back", "l1.mp4", "l2.mp4"}
    assert rows["link/linked.png"].status == "ok"
    assert rows["sub/back"].status == "skipped" and "symlink loop" in rows["sub/back"].reason
    assert rows["l1.mp4"].status == "error" and "symlink loop" in rows["l1.mp4"].reason
    assert summary.counts["skipped"] == 1


# -- 4 and 6. rotation and the pixel limit in every decoder ------------------------------------------------------
@pytest.mark.parametrize("decoder", ["pyav", "opencv"])
def test_display_rotation_is_applied_and_recorded(tmp_path: Path, decoder: str) -> None:
    frames = []
    for _ in range(12):
        frame = np.zeros((120, 160, 3), np.uint8)
        frame[:40, :40] = 255  # a white top-left corner in the stored pixels
        frames.append(frame)
    video = write_video(tmp_path / "phone.mp4", frames, rotation=90)
    item = Preprocessor(FRAMES.replace(image_size=112), decoder=decoder, max_windows=1)(video)
    crop = item.originals[0, 0]  # a centre crop of the upright (portrait 120 x 160) frame
    assert item.rotation == 90 and any("display rotation 90" in note for note in item.notes)
    # 90 degrees counter-clockwise: the stored top-left corner is shown bottom-left.
    assert crop[-10:, :10].mean() > 200 and crop[:10, :10].mean() < 50


def test_a_rotated_phone_video_finds_its_face_with_pyav(tmp_path: Path) -> None:
    import cv2

    portrait = np.full((320, 240, 3), 30, np.uint8)  # as the phone's user saw it
    portrait[60:260, 20:220] = cv2.resize(astronaut(), (200, 200), interpolation=cv2.INTER_AREA)
    stored = [np.ascontiguousarray(np.rot90(portrait, -1))] * 10  # landscape pixels, as phones store them
    faces = Preprocessor(ModelContract(config="tiny"), "faces", ["haar"], decoder="pyav")
    sideways = faces(write_video(tmp_path / "no_matrix.mp4", stored))
    assert sideways.no_face  # the face lies on its side: what the seed saw without the rotation
    item = faces(write_video(tmp_path / "portrait.mp4", stored, rotation=90))
    assert not item.no_face and item.detector == "haar" and item.rotation == 90


@pytest.mark.parametrize("decoder", ["pyav", "opencv"])
def test_video_frames_have_the_image_pixel_limit(tmp_path: Path, decoder: str) -> None:
    video = write_index_video(tmp_path / "big.mp4", 12, size=(320, 240))
    with pytest.raises(MediaError, match=r"320x240 pixels exceed the limit of 50000 pixels"):
        Preprocessor(FRAMES, decoder=decoder, max_pixels=50_000)(video)
    assert Preprocessor(FRAMES, decoder=decoder, max_pixels=320 * 240)(video).windows == 1


# -- 7. the frames preset streams its windows --------------------------------------------------------------------
def test_frames_preset_memory_does_not_grow_with_the_video(tmp_path: Path, model: Path) -> None:
    from mmdet_deploy.runtime.backends.onnxruntime import OnnxRuntimeBackend

    # 1200 frames: 120 windows of 10 padded 224 x 224 crops = 181 MB if they were collected before scoring.
    video = write_video(tmp_path / "long.mp4", (np.full((32, 32, 3), i % 255, np.uint8) for i in range(1200)))
    backend = OnnxRuntimeBackend(model)
    backend.open()
    rows: list[ResultRow] = []
    tracemalloc.start()
    try:
        with time_limit(120):
            run_inference(discover(video), Preprocessor(FRAMES), backend, workers=1, batch_size=4,
                          on_row=rows.append)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert rows[0].status == "ok" and rows[0].windows == 120
    # A few windows in flight (4 per file plus one being cut, 1.5 MB each) and one normalised batch (24 MB).
    assert peak < 100e6, f"peak traced memory {peak / 1e6:.0f} MB"


# -- 8, 9, 13, 12. the output folder -----------------------------------------------------------------------------
def test_resume_with_another_input_is_refused(tmp_path: Path, model: Path) -> None:
    _image(tmp_path / "one" / "a.png")
    _image(tmp_path / "two" / "a.png", (30, 30, 200))
    _run(tmp_path / "one", model, tmp_path / "out")
    with pytest.raises(UsageError, match="input:"):
        _run(tmp_path / "two", model, tmp_path / "out", resume=True)


def test_one_run_per_output_folder(tmp_path: Path) -> None:
    settings = dict.fromkeys(MANIFEST_KEYS) | {"checkpoint_sha256": "x", "input": "/in"}
    first = ResultsSink(tmp_path / "out").start(settings)
    try:
        for mode in ({"resume": True}, {"overwrite": True}):
            with pytest.raises(UsageError, match=r"another run \(pid \d+\) is writing"):
                ResultsSink(tmp_path / "out", **mode).start(settings)
    finally:
        first.close()
    ResultsSink(tmp_path / "out", resume=True).start(settings).close()  # free again once the first closed


def test_out_equal_to_input_is_refused(tmp_path: Path, model: Path) -> None:
    _image(tmp_path / "a.png")
    with pytest.raises(UsageError, match="INPUT folder itself"):
        _run(tmp_path, model, tmp_path)
    with pytest.raises(UsageError, match="INPUT folder itself"):
        discover(tmp_path, exclude=[tmp_path / "."])


@pytest.mark.parametrize("case", ["under_file", "under_proc", "dangling"])
def test_bad_out_is_one_usage_error(tmp_path: Path, model: Path, case: str) -> None:
    _image(tmp_path / "in" / "a.png")
    (tmp_path / "file").write_text("x")
    os.symlink(tmp_path / "nowhere", tmp_path / "dangling")
    out = {"under_file": tmp_path / "file" / "out", "under_proc": Path("/proc/mmdet-out-test"),
           "dangling": tmp_path / "dangling"}[case]
    if case == "under_proc" and not Path("/proc").is_dir():
        pytest.skip("no /proc")
    with pytest.raises(UsageError) as caught:
        _run(tmp_path / "in", model, out)
    assert "\n" not in str(caught.value) and "--out" in str(caught.value)


@pytest.mark.parametrize(("change", "words"), [({"std": [0.229, 0.0, 0.225]}, "std must be positive"),
                                               ({"mean": [0.5]}, "mean must be 3 finite numbers"),
                                               ({"mean": [float("nan"), 0.4, 0.4]}, "mean must be 3 finite"),
                                               ({"mean": "abc"}, "mean must be a list")])
def test_a_bad_contract_is_refused_when_the_model_is_opened(tmp_path: Path, change: dict, words: str) -> None:
    bad = json.dumps(FRAMES.to_dict() | change)
    model = build_synthetic_model(tmp_path / "bad.onnx", FRAMES, contract_json=bad)
    _image(tmp_path / "in" / "a.png")
    with pytest.raises(ContractError, match=words):
        _run(tmp_path / "in", model, tmp_path / "out")
    assert not (tmp_path / "out" / "results.csv").exists()  # refused before any work


# -- 10. list files: BOM, exact names ----------------------------------------------------------------------------
def test_list_with_bom_crlf_and_spaces_keeps_names_exactly(tmp_path: Path, model: Path) -> None:
    for name in ("first.png", " leading.png", "trailing.png ", "plain.png"):
        _image(tmp_path / name)
    listing = tmp_path / "list.txt"
    listing.write_bytes(b"\xef\xbb\xbffirst.png\r\n leading.png\r\ntrailing.png \r\n  # a comment\r\n\r\nplain.png")
    assert [i.name for i in discover(listing)] == ["first.png", " leading.png", "trailing.png ", "plain.png"]
    summary = _run(listing, model, tmp_path / "out")
    rows = _rows(tmp_path / "out")
    assert summary.exit_code == 0 and summary.counts["ok"] == 3 and set(rows) == {
        "first.png", " leading.png", "trailing.png ", "plain.png"}
    # Found, not "not found": its extension is ".png " (with the space), so it is listed as not media.
    assert rows["trailing.png "].status == "skipped" and "(.png )" in rows["trailing.png "].reason


def test_streamed_windows_still_feed_save_crops_and_the_report(tmp_path: Path, model: Path) -> None:
    from mmdet_deploy.runtime.records import review_path

    # Three windows, the middle one reddest: the most suspicious window the report shows.
    colours = [(60, 60, 60)] * 10 + [(230, 20, 20)] * 10 + [(120, 60, 60)] * 10
    video = write_video(tmp_path / "in" / "clip.mp4", (np.full((240, 320, 3), c, np.uint8) for c in colours))
    expected = Preprocessor(FRAMES)(video)  # collected: the reference crops
    crops = tmp_path / "crops_out"
    _run(tmp_path / "in", model, crops, save_crops=True)
    for window in range(3):
        for t, frame in enumerate(expected.frame_indices[window]):
            saved = np.asarray(Image.open(crops / "crops" / review_path("clip.mp4") / f"{frame}.png").convert("RGB"))
            assert np.array_equal(saved, expected.originals[window, t])
    report = tmp_path / "report_out"
    _run(tmp_path / "in", model, report, report=True)  # keeps only the best window while streaming
    meta = json.loads((report / "thumbs" / review_path("clip.mp4") / "meta.json").read_text())
    assert meta["window"] == 1 and meta["crop_frames"] == list(range(10, 20))
