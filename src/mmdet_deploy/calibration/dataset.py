"""Calibration sets on disk: arrays, manifest, hashes, the held-out split (numpy and the standard library only).

A calibration set is a folder::

    calibration/NAME/
        manifest.json                  what was sampled, from where, how, and the sha256 of every array
        arrays/clip_00000.original.npy float32 (T, 3, H, W), normalised exactly as the runtime feeds the model
        arrays/clip_00000.recons.npy   only when it differs from ``original`` (else the manifest points to
                                       the ``original`` file for both inputs)

The manifest is written without timestamps, so the same media, options and seed give a byte-identical
manifest: a calibration is reproducible and auditable. Every array is checked against its sha256 when read.
Each clip belongs to the ``calibration`` split (ranges are computed on it) or the ``holdout`` split (the
accuracy gate runs on it); the split is made by source file where possible, so no file feeds both sides.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import shutil
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mmdet_deploy.contract import CLIP_INPUTS, ModelContract
from mmdet_deploy.errors import ContractError, MMDetError, UsageError
from mmdet_deploy.fileio import sha256_file

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
FORMAT = "mmdet-deploy calibration set"
FORMAT_VERSION = 1
CALIBRATION = "calibration"
HOLDOUT = "holdout"
SPLITS = (CALIBRATION, HOLDOUT)
#: Contract fields recorded with a calibration set.
PREPROCESSING_FIELDS = ("preset", "frames", "image_size", "mean", "std", "channel_order", "layout")
#: Fields that must match the model (input shape and normalisation); a different preset only warns, since
#: ``mmdet-run --preset`` may override the contract's at run time.
REQUIRED_MATCH = ("frames", "image_size", "mean", "std", "channel_order", "layout")


class CalibrationSetError(MMDetError):
    """A calibration set is missing, too small, corrupted, or does not fit the model."""


@dataclass(frozen=True)
class CalibrationClip:
    """One sampled clip before it is written: the two model inputs and where they came from.

    ``original`` and ``recons`` are float32 (T, 3, H, W), already normalised. ``source`` is the media name
    (relative to the sampled folder), ``window`` the index of the clip among that file's windows.
    """

    source: str
    window: int
    frame_indices: tuple[int, ...]
    original: np.ndarray
    recons: np.ndarray
    detector: str | None = None


@dataclass(frozen=True)
class ClipEntry:
    """One clip as recorded in a manifest: its id, origin, split and array files with their sha256."""

    id: str
    source: str
    window: int
    frame_indices: tuple[int, ...]
    split: str
    arrays: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    detector: str | None = None


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def _npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array, dtype=np.float32), allow_pickle=False)
    return buf.getvalue()


def preprocessing_of(contract: ModelContract) -> dict[str, Any]:
    """The preprocessing fields of a contract, as written into a manifest."""
    d = contract.to_dict()
    return {k: d[k] for k in PREPROCESSING_FIELDS}


def assign_holdout(sources: Sequence[str], fraction: float, seed: int) -> tuple[list[str], str]:
    """Split clips (given by their source names, in order) into ``calibration`` / ``holdout``.

    Whole source files go to the held-out side, in a seeded random order, until at least
    ``round(fraction * n)`` clips are held out; with a single source file the split is made by clip.
    At least one clip stays on each side when ``0 < fraction < 1`` and there are two clips or more.
    Returns the split of each clip and the unit used (``file`` or ``clip``).
    """
    if not 0.0 <= fraction < 1.0:
        raise UsageError(f"--holdout {fraction} must be in [0, 1)")
    n = len(sources)
    want = 0 if fraction == 0.0 or n < 2 else min(n - 1, max(1, round(fraction * n)))
    splits = [CALIBRATION] * n
    if want == 0:
        return splits, "file"
    rng = np.random.default_rng([seed, 1])
    unique = sorted(set(sources))
    if len(unique) >= 2:
        held: set[str] = set()
        count = 0
        for idx in rng.permutation(len(unique)):
            if count >= want:
                break
            name = unique[int(idx)]
            size = sources.count(name)
            if count + size > n - 1:  # never hold out everything
                continue
            held.add(name)
            count += size
        if held:
            return [HOLDOUT if s in held else CALIBRATION for s in sources], "file"
    for idx in rng.permutation(n)[:want]:
        splits[int(idx)] = HOLDOUT
    return splits, "clip"


def write_calibration_set(
    out: Path,
    clips: Sequence[CalibrationClip],
    *,
    contract: ModelContract,
    seed: int,
    holdout: float,
    min_clips: int,
    provenance: Mapping[str, Any],
    overwrite: bool = False,
) -> CalibrationSet:
    """Write ``clips`` and their manifest into the folder ``out`` and return the set, re-read from disk.

    ``provenance`` is recorded as given (source folder, requested clip count, files seen and skipped).
    Refuses fewer than ``min_clips`` clips, and an existing non-empty ``out`` unless ``overwrite``.
    """
    if len(clips) < min_clips:
        raise CalibrationSetError(
            f"a calibration set needs at least {min_clips} clips (--min-clips); only {len(clips)} were found"
        )
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise UsageError(f"{out} already exists and is not empty; choose another --out or pass --overwrite")
        if not (out / MANIFEST).is_file():
            raise UsageError(f"{out} is not a calibration set (no {MANIFEST}); refusing to delete it")
        shutil.rmtree(out)
    (out / "arrays").mkdir(parents=True, exist_ok=True)
    splits, unit = assign_holdout([c.source for c in clips], holdout, seed)
    shape: tuple[int, ...] | None = None
    entries: list[dict[str, Any]] = []
    for i, (clip, split) in enumerate(zip(clips, splits, strict=True)):
        cid = f"clip_{i:05d}"
        arrays: dict[str, dict[str, str]] = {}
        written: dict[str, tuple[str, str]] = {}  # sha -> (file, sha): identical inputs share one file
        for name, array in ((CLIP_INPUTS[0], clip.original), (CLIP_INPUTS[1], clip.recons)):
            if shape is None:
                shape = tuple(array.shape)
            if tuple(array.shape) != shape:
                raise CalibrationSetError(f"{clip.source}: clip shape {array.shape} differs from {shape}")
            data = _npy_bytes(array)
            digest = sha256_bytes(data)
            if digest not in written:
                rel = f"arrays/{cid}.{name}.npy"
                (out / rel).write_bytes(data)
                written[digest] = (rel, digest)
            rel, digest = written[digest]
            arrays[name] = {"file": rel, "sha256": digest}
        entries.append(
            {
                "id": cid,
                "source": clip.source,
                "window": int(clip.window),
                "frame_indices": [int(x) for x in clip.frame_indices],
                "detector": clip.detector,
                "split": split,
                "arrays": arrays,
            }
        )
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "seed": int(seed),
        "preprocessing": preprocessing_of(contract),
        "input_names": list(CLIP_INPUTS),
        "clip_shape": list(shape or ()),
        "dtype": "float32",
        "min_clips": int(min_clips),
        "holdout_fraction": float(holdout),
        "split_unit": unit,
        "counts": {s: splits.count(s) for s in SPLITS},
        "provenance": dict(provenance),
        "clips": entries,
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return CalibrationSet.open(out)


class CalibrationSet:
    """A calibration set read from disk. Arrays are loaded on demand and checked against their sha256."""

    def __init__(self, root: Path, manifest: Mapping[str, Any]) -> None:
        self.root = Path(root)
        self.manifest = dict(manifest)
        self.entries = [
            ClipEntry(
                id=c["id"],
                source=c["source"],
                window=int(c["window"]),
                frame_indices=tuple(c["frame_indices"]),
                split=c["split"],
                arrays=c["arrays"],
                detector=c.get("detector"),
            )
            for c in self.manifest["clips"]
        ]

    @classmethod
    def open(cls, root: str | Path) -> CalibrationSet:
        """Read ``root/manifest.json``; raises :class:`CalibrationSetError` if it is not a calibration set."""
        root = Path(root)
        path = root / MANIFEST
        if not path.is_file():
            raise CalibrationSetError(f"{root}: not a calibration set (no {MANIFEST}); create one with calibrate-set")
        try:
            manifest = json.loads(path.read_text())
        except ValueError as exc:
            raise CalibrationSetError(f"{path}: unreadable manifest ({exc})") from exc
        if manifest.get("format") != FORMAT or int(manifest.get("format_version", 0)) > FORMAT_VERSION:
            raise CalibrationSetError(f"{path}: not a supported calibration manifest (format {manifest.get('format')})")
        return cls(root, manifest)

    # -- facts -----------------------------------------------------------------------------------
    @property
    def fingerprint(self) -> str:
        """sha256 of the manifest file: it names every array by hash, so it identifies the whole set."""
        return sha256_file(self.root / MANIFEST)

    @property
    def preprocessing(self) -> dict[str, Any]:
        return dict(self.manifest["preprocessing"])

    def split(self, name: str) -> list[ClipEntry]:
        """The clips of one split (``calibration``, ``holdout`` or ``all``), in manifest order."""
        if name == "all":
            return list(self.entries)
        if name not in SPLITS:
            raise UsageError(f"unknown split {name!r}; expected one of {', '.join(SPLITS)}, all")
        return [e for e in self.entries if e.split == name]

    def check_compatible(self, contract: ModelContract, source: str = "model") -> None:
        """Refuse a model whose input shape or normalisation differs from the set's; warn on another preset."""
        ours = self.preprocessing
        theirs = preprocessing_of(contract)
        diff = [k for k in REQUIRED_MATCH if json.dumps(ours.get(k)) != json.dumps(theirs[k])]
        if ours.get("preset") != theirs["preset"]:
            logger.warning(
                "%s: calibration set sampled with the %r preset, the %s's contract says %r",
                self.root, ours.get("preset"), source, theirs["preset"],
            )
        if diff:
            details = ", ".join(f"{k}: set {ours.get(k)!r} vs {source} {theirs[k]!r}" for k in diff)
            raise ContractError(
                f"{self.root}: calibration set preprocessing differs from the {source} ({details}); "
                "sample a new set for this model"
            )

    # -- arrays ----------------------------------------------------------------------------------
    def load(self, entry: ClipEntry) -> dict[str, np.ndarray]:
        """The inputs of one clip, float32 (T, 3, H, W) each, verified against the manifest hashes."""
        out: dict[str, np.ndarray] = {}
        for name, meta in entry.arrays.items():
            path = self.root / meta["file"]
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise CalibrationSetError(f"{path}: cannot read calibration array ({exc})") from exc
            if sha256_bytes(data) != meta["sha256"]:
                raise CalibrationSetError(f"{path}: sha256 differs from the manifest; the set was modified")
            out[name] = np.load(io.BytesIO(data), allow_pickle=False)
        return out

    def verify(self) -> int:
        """Check every array against its sha256; returns the number of clips checked."""
        for entry in self.entries:
            self.load(entry)
        return len(self.entries)

    def batches(
        self, split: str, batch_size: int = 1, names: Sequence[str] = CLIP_INPUTS, drop_last: bool = False
    ) -> Iterator[dict[str, np.ndarray]]:
        """Stacked batches ``{name: (B, T, 3, H, W)}`` of one split, in manifest order."""
        if batch_size < 1:
            raise UsageError(f"batch size {batch_size} must be >= 1")
        entries = self.split(split)
        for start in range(0, len(entries), batch_size):
            chunk = entries[start : start + batch_size]
            if drop_last and len(chunk) < batch_size:
                return
            loaded = [self.load(e) for e in chunk]
            yield {n: np.stack([c[n] for c in loaded]).astype(np.float32, copy=False) for n in names}

    def __len__(self) -> int:
        return len(self.entries)
