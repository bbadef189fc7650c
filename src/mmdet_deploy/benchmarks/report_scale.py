"""How large and how slow ``report.html`` gets for a big run folder (issue target: 10,000 rows, < 20 MB, < 30 s).

::

    python -m mmdet_deploy.benchmarks.report_scale --files 10000 --work /tmp/r10k --json figures.json

The run folder is written by the run's own writers (:class:`ResultsWriter`, :class:`RunRecorder`: results.csv,
faces.csv with 10 rows per video, ``thumbs/`` JPEGs encoded from 224x224 crops and 160 px frames), from
prepared files whose pixels are crops of a real photo (scikit-image's astronaut, public domain) with sensor-like
noise, so the JPEG sizes are those of real faces rather than of flat test colours. Statuses are mixed like a
real folder (ok, no_face, error, skipped). Then :func:`build_report` is timed and the page size measured.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from mmdet_deploy.contract import ModelContract
from mmdet_deploy.errors import MissingDependencyError
from mmdet_deploy.runtime.faces import CUSTOM_CHAIN, FaceBox
from mmdet_deploy.runtime.preprocess import FrameFace, PreparedFile
from mmdet_deploy.runtime.recons import IdentityReconstruction
from mmdet_deploy.runtime.recons_vqvae import recons_settings
from mmdet_deploy.runtime.records import PREVIEW_SIDE, THUMB_META, THUMBS_DIR, RunRecorder, review_path
from mmdet_deploy.runtime.results import ERROR, NO_FACE, OK, SKIPPED, ResultRow, ResultsWriter, check_manifest
from mmdet_deploy.runtime.thumbnails import shrink

#: Share of each status in the generated folder.
MIX = ((OK, 0.85), (NO_FACE, 0.07), (ERROR, 0.06), (SKIPPED, 0.02))
VARIANTS = 16


def _photo() -> np.ndarray:
    try:
        from skimage import data
    except ImportError as exc:
        raise MissingDependencyError("the report benchmark needs scikit-image for its photo: "
                                     "pip install 'mmdet-deploy[dev]' (or: pip install scikit-image)") from exc
    return np.ascontiguousarray(data.astronaut())


def _variants(rng: np.random.Generator, size: int, frames: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(preview frame, (1, T, S, S, 3) crops) pairs: shifted, scaled crops of the photo plus noise."""
    import cv2

    photo = _photo()
    out = []
    for _ in range(VARIANTS):
        crops = []
        for _ in range(frames):
            side = int(rng.integers(160, 400))
            y, x = (int(rng.integers(0, 512 - side)) for _ in range(2))
            crop = cv2.resize(photo[y : y + side, x : x + side], (size, size), interpolation=cv2.INTER_AREA)
            noise = rng.integers(-5, 6, size=crop.shape, dtype=np.int16)
            crops.append(np.clip(crop.astype(np.int16) + noise, 0, 255).astype(np.uint8))
        frame = cv2.resize(photo, (1280, 720), interpolation=cv2.INTER_LINEAR)
        out.append((shrink(frame, PREVIEW_SIDE), np.stack(crops)[None]))
    return out


def write_run(out: Path, files: int = 10_000, seed: int = 0, reuse_thumbnails: bool = False) -> dict[str, int]:
    """Write a run folder of ``files`` rows as the faces preset of ``mmdet-run --report`` leaves it.

    ``reuse_thumbnails`` encodes the thumbnails of each of the :data:`VARIANTS` pictures once and copies the
    bytes for the other files (the same files on disk, minutes faster; for tests).
    """
    rng = np.random.default_rng(seed)
    contract = ModelContract(config="tiny", demo_weights=True)
    variants = _variants(rng, contract.image_size, contract.frames)
    statuses = rng.choice([s for s, _ in MIX], size=files, p=[p for _, p in MIX])
    settings = {"checkpoint_sha256": "0" * 64, "head": contract.head, "config": contract.config,
                "precision": contract.precision, "preset": "faces", "threshold": 0.5, "frames": contract.frames,
                "image_size": contract.image_size, "max_windows": None, "face_detectors": ["haar"],
                "face_chain": CUSTOM_CHAIN, "recons": recons_settings(IdentityReconstruction()),
                "model": "synthetic.onnx", "input": str(out / "input"), "demo_weights": True,
                "contract": contract.to_dict(), "save_crops": False}
    encoded_by_variant: dict[int, str] = {}  # variant -> the file whose thumbnails were encoded from it
    with ResultsWriter(out, overwrite=True, fsync=False) as writer:
        check_manifest(out, settings, resume=False)
        with RunRecorder(out, "faces", thumbnails=True, fsync=False) as recorder:
            for i, status in enumerate(statuses):
                video = i % 10 < 7
                name = f"batch {i // 1000:02d}/{'clip' if video else 'photo'} {i:05d}.{'mp4' if video else 'jpg'}"
                if status in (ERROR, SKIPPED):
                    row = ResultRow(name, status=status, reason="not a readable video" if status == ERROR else
                                    "not an image or video (.txt)", kind="video" if video else "other")
                    recorder.record(row, None, [])
                    writer.write(row)
                    continue
                preview, crops = variants[i % VARIANTS]
                indices = [round(v) for v in np.linspace(0, 299, contract.frames)] if video else [0] * contract.frames
                prepared = PreparedFile(Path(name), "video" if video else "image", "faces", crops, crops, [indices],
                                        contract.mean, contract.std, detector="haar", preview=preview,
                                        preview_frame=indices[0], frame_size=(1280, 720), fps=30.0)
                face = None if status == NO_FACE else FaceBox(500.0, 200.0, 780.0, 480.0)
                prepared.faces = [FrameFace(f, "haar" if face else None, face) for f in sorted(set(indices))]
                prob = float(rng.beta(2.0, 2.0))
                row = ResultRow(name, label=int(prob >= 0.5), prob_fake=prob, status=status, kind=prepared.kind,
                                frames=len(prepared.faces), windows=1, detector="" if face is None else "haar",
                                frames_without_face=0 if face else len(prepared.faces), seconds=1.0)
                encoded = encoded_by_variant.get(i % VARIANTS) if reuse_thumbnails else None
                recorder.thumbnails = encoded is None
                if encoded is not None:
                    _copy_thumbs(out / THUMBS_DIR / review_path(encoded), out / THUMBS_DIR / review_path(name), name)
                else:
                    encoded_by_variant[i % VARIANTS] = name
                recorder.record(row, prepared, [prob])
                writer.write(row)
    (out / "summary.json").write_text(json.dumps({"files": files, "files_per_s": 1.0, "wall_s": float(files)}))
    return {status: int(np.sum(statuses == status)) for status, _ in MIX}


def _copy_thumbs(source: Path, target: Path, name: str) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for item in source.iterdir():
        data = item.read_bytes()
        if item.name == THUMB_META:
            meta = json.loads(data)
            data = json.dumps(meta | {"filename": name}).encode("utf-8")
        (target / item.name).write_bytes(data)


def measure(work: Path, files: int = 10_000, max_files: int = 500, reuse_thumbnails: bool = False) -> dict[str, Any]:
    """Write the folder, build the page, and return the figures (seconds, bytes, rows)."""
    from mmdet_deploy.runtime.report import build_report

    t0 = time.perf_counter()
    counts = write_run(work, files, reuse_thumbnails=reuse_thumbnails)
    t1 = time.perf_counter()
    path = build_report(work, max_files=max_files)
    t2 = time.perf_counter()
    size = path.stat().st_size
    return {"files": files, "counts": counts, "max_files": max_files, "write_folder_s": round(t1 - t0, 2),
            "build_report_s": round(t2 - t1, 2), "report_bytes": size, "report_mb": round(size / 1e6, 2),
            "bytes_per_shown_row": math.floor(size / min(files, max_files)), "report": str(path)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--max-files", type=int, default=500)
    parser.add_argument("--work", type=Path, required=True, help="Scratch folder for the generated run.")
    parser.add_argument("--json", type=Path, help="Also write the figures here.")
    args = parser.parse_args(argv)
    figures = measure(args.work, args.files, args.max_files)
    text = json.dumps(figures, indent=2) + "\n"
    print(text, end="")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
