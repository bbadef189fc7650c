"""``mmdet-bench faces``: labels, the accuracy figures on a small real-media folder built here, the end-to-end
part on generated 720p media, the targets and the report files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from mmdet_deploy.benchmarks import face_bench
from mmdet_deploy.benchmarks.face_bench import LABELS, Photo, evaluate, find_real_media, voc_boxes
from mmdet_deploy.benchmarks.face_report import FaceBenchSettings, run_faces_benchmark
from mmdet_deploy.cli.bench import app
from mmdet_deploy.contract import ModelContract
from mmdet_deploy.errors import UsageError
from mmdet_deploy.runtime.faces import FaceFinder
from runtime_fixtures import astronaut, build_synthetic_model, face_frames, write_video

XML = """<?xml version='1.0' encoding='ISO-8859-1'?>
<dataset><images>
  <image file='astro.png' width='512' height='512'>
    <box top='70' left='172' width='103' height='112'/>
  </image>
  <image file='pair.png' width='512' height='512'>
    <box top='1' left='2' width='3' height='4'/>
    <box top='10' left='20' width='30' height='40'/>
  </image>
</images></dataset>
"""


def _real_media(root: Path) -> Path:
    """A real-media folder in miniature: one labelled photo in the dlib XML and a 20-frame face video."""
    (root / "faces").mkdir(parents=True)
    (root / "videos").mkdir()
    astro_only = XML.split("  <image file='pair.png'")[0] + "</images></dataset>\n"
    (root / "faces" / "dlib_training.xml").write_text(astro_only, encoding="latin-1")
    Image.fromarray(astronaut()).save(root / "faces" / "astro.png")
    write_video(root / "videos" / "short_hamilton_clip.mp4", face_frames(20), fps=10)
    return root


def test_voc_boxes_are_read_as_corners(tmp_path: Path) -> None:
    (tmp_path / "d.xml").write_text(XML, encoding="latin-1")
    boxes = voc_boxes(tmp_path / "d.xml")
    assert boxes == {"astro.png": [(172.0, 70.0, 275.0, 182.0)], "pair.png": [(2.0, 1.0, 5.0, 5.0),
                                                                              (20.0, 10.0, 50.0, 50.0)]}  # fmt: skip


def test_the_committed_labels_say_they_were_hand_labelled() -> None:
    spec = json.loads(LABELS.read_text(encoding="utf-8"))
    assert "HAND-LABELLED" in spec["about"] and len(spec["photos"]) >= 5 and len(spec["no_people"]) >= 1
    for boxes in spec["photos"].values():
        assert all(len(b) == 4 and b[0] < b[2] and b[1] < b[3] for b in boxes)


def test_find_real_media_names_where_it_looked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MMDET_REAL_MEDIA", str(tmp_path / "nowhere"))
    with pytest.raises(UsageError, match="no real-media folder.*nowhere"):
        find_real_media(tmp_path / "nowhere")
    assert find_real_media(_real_media(tmp_path / "rm")) == tmp_path / "rm"


def test_evaluate_counts_right_false_and_clip_faces() -> None:
    photo = astronaut()
    faces = [Photo("astro", photo, ((172.0, 70.0, 275.0, 182.0),)),
             Photo("elsewhere", photo, ((400.0, 400.0, 500.0, 500.0),))]  # fmt: skip
    empty = [Photo("flat", np.full((240, 320, 3), 90, np.uint8))]
    clip = [(i, f) for i, f in enumerate(face_frames(3))] + [(9, np.full((240, 320, 3), 90, np.uint8))]
    row = evaluate(FaceFinder(chain="default"), faces, empty, clip, [photo] * 2, repeats=1)
    assert (row["right_faces"], row["photos"], row["wrong"]) == (1, 2, ["elsewhere"])
    assert (row["false_faces"], row["clip_frames_with_face"], row["clip_frames"]) == (0, 3, 4)
    assert row["clip_detectors"] == ["blazeface-full"] and row["ms_per_720p_frame"] > 0


def test_faces_benchmark_writes_its_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(face_bench, "DETECTORS", ("blazeface-short", "haar", "mediapipe"))  # dlib: see the chains
    real_media = _real_media(tmp_path / "rm")
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps({"about": "test", "photos": {"samples:astronaut.jpg": [[172, 70, 275, 182]]},
                                  "no_people": ["samples:coffee (no face).jpg"]}))  # fmt: skip
    model = build_synthetic_model(tmp_path / "m.onnx", ModelContract(config="tiny"))
    out = tmp_path / "report"
    settings = FaceBenchSettings(out=out, real_media=real_media, model=model, repeats=1, e2e_repeats=1, videos=1,
                                 images=1, labels=labels)  # fmt: skip
    report = run_faces_benchmark(settings)
    rows = report["accuracy"]["rows"]
    assert set(rows) == {"blazeface-short", "haar", "mediapipe", "chain default", "chain seed"}
    assert "unavailable" in rows["mediapipe"] or rows["mediapipe"]["photos"] == 2
    assert rows["chain default"]["photos"] == 2 and rows["chain default"]["right_faces"] == 2
    assert rows["chain default"]["clip_frames"] == 10 and rows["chain default"]["false_faces"] == 0
    variants = report["e2e"]["variants"]
    assert set(variants) == {"before: haar", "chain default", "chain seed", "chain default (runtime as before)",
                             "haar (runtime as now)"}
    for row in variants.values():
        assert row["runs"][0]["counts"]["ok"] == 2 and row["files_per_s"] > 0  # 1 video + 1 image, faces found
        assert row["preprocess_only"]["cpu_s"] > 0 and row["preprocess_only"]["stage_s"]["face_detection"] > 0
    assert variants["before: haar"]["speedup_vs_before"] == 1.0
    assert [t["status"] in ("met", "not met") for t in report["targets"]] == [True] * 5
    text = (out / "report.md").read_text()
    assert "| chain default (blazeface-full" in text and "x before" in text
    assert json.loads((out / "report.json").read_text())["targets"] == report["targets"]
    assert (out / "media" / ".gitignore").is_file()  # generated files are not committed


def test_mmdet_bench_faces_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_media = _real_media(tmp_path / "rm")
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps({"about": "t", "photos": {}, "no_people": ["samples:coffee (no face).jpg"]}))
    monkeypatch.setattr(face_bench, "DETECTORS", ("haar",))  # keep the CLI test short
    result = CliRunner().invoke(app, ["faces", "--out", str(tmp_path / "r"), "--real-media", str(real_media),
                                      "--labels", str(labels), "--no-e2e", "--repeats", "1"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "default chain picks a real face" in result.output and (tmp_path / "r" / "report.md").is_file()
    missing = CliRunner().invoke(app, ["faces", "--out", str(tmp_path / "r2"), "--real-media", str(tmp_path)])
    assert missing.exit_code == 2 and "no real-media folder" in missing.output
