"""Sample a calibration set from real media with the runtime's own preprocessing (``mmdet-export calibrate-set``).

Files are discovered with :func:`mmdet_deploy.runtime.discovery.discover` and turned into clips by
:class:`mmdet_deploy.runtime.preprocess.Preprocessor`, the code ``mmdet-run`` uses, so the calibration
sees exactly what the deployed model sees. Sampling is deterministic for a seed:

1. the media files are visited in a seeded random order (sorted names, then a permutation);
2. each file gives at most ``ceil(clips / files)`` of its windows (the first ones of a seeded permutation:
   one for the ``faces`` preset, several for long videos with ``frames``), so the set spreads over files;
3. visiting stops once ``clips`` clips are collected; if the first pass falls short (unreadable files,
   files with a single window), later passes take further windows from the files that have some left.
   A file that cannot be read is recorded and skipped.

The held-out split (for the accuracy gate) is made by source file, see
:func:`mmdet_deploy.calibration.dataset.assign_holdout`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mmdet_deploy.calibration.dataset import (
    CalibrationClip,
    CalibrationSet,
    CalibrationSetError,
    write_calibration_set,
)
from mmdet_deploy.contract import ModelContract
from mmdet_deploy.errors import MediaError, UsageError
from mmdet_deploy.fileio import sha256_file

logger = logging.getLogger(__name__)

DEFAULT_CLIPS = 64
DEFAULT_MIN_CLIPS = 16
DEFAULT_HOLDOUT = 0.2


def sample_calibration_set(
    data: str | Path,
    out: str | Path,
    *,
    contract: ModelContract | None = None,
    preset: str | None = None,
    clips: int = DEFAULT_CLIPS,
    seed: int = 0,
    min_clips: int = DEFAULT_MIN_CLIPS,
    holdout: float = DEFAULT_HOLDOUT,
    face_detectors: Sequence[str] | None = None,
    max_windows: int | None = None,
    overwrite: bool = False,
    **preprocessor_options: Any,
) -> CalibrationSet:
    """Sample up to ``clips`` clips from the media under ``data`` and write the set to ``out``.

    ``contract``: the model's (preprocessing parameters); default: the standard contract with ``preset``.
    ``preset`` overrides the contract's. ``face_detectors``, ``max_windows`` and ``preprocessor_options`` go
    to the :class:`~mmdet_deploy.runtime.preprocess.Preprocessor`. Raises :class:`CalibrationSetError` when
    fewer than ``min_clips`` clips can be made.
    """
    from mmdet_deploy.runtime.discovery import discover
    from mmdet_deploy.runtime.preprocess import Preprocessor

    if clips < 1 or min_clips < 1:
        raise UsageError(f"--clips ({clips}) and --min-clips ({min_clips}) must be at least 1")
    if clips < min_clips:
        raise UsageError(f"--clips {clips} is below --min-clips {min_clips}; ask for at least {min_clips} clips")
    contract = contract or ModelContract()
    if preset is not None:
        contract = contract.replace(preset=preset)
    pre = Preprocessor(contract, face_detectors=face_detectors, max_windows=max_windows, **preprocessor_options)
    items = sorted((i for i in discover(data) if i.is_media), key=lambda i: i.name)
    if not items:
        raise CalibrationSetError(f"{data}: no image or video files to sample from")
    rng = np.random.default_rng(seed)
    per_file = max(1, math.ceil(clips / len(items)))
    collected: list[CalibrationClip] = []
    sources: dict[str, dict[str, Any]] = {}
    rest: dict[str, list[int]] = {}  # windows not yet taken, in their seeded order, per file
    skipped: list[dict[str, str]] = []

    def take(item: Any, prepared: Any, windows: list[int]) -> None:
        for w in sorted(windows):
            original, recons = prepared.window_inputs(w, w + 1)
            collected.append(CalibrationClip(source=item.name, window=w,
                                             frame_indices=tuple(int(f) for f in prepared.frame_indices[w]),
                                             original=original[0], recons=recons[0], detector=prepared.detector))
        sources[item.name]["taken"] = sorted(sources[item.name]["taken"] + windows)

    visited = []
    for idx in rng.permutation(len(items)):  # first pass: up to per_file windows of each file
        if len(collected) >= clips:
            break
        item = items[int(idx)]
        try:
            prepared = pre(item.path, item.kind)
        except MediaError as exc:
            skipped.append({"file": item.name, "reason": exc.reason})
            logger.warning("calibration: skipping %s (%s)", item.name, exc.reason)
            continue
        order = [int(w) for w in rng.permutation(prepared.windows)]
        n = min(per_file, clips - len(collected))
        sources[item.name] = {"file": item.name, "sha256": sha256_file(item.path), "kind": item.kind,
                              "windows": prepared.windows, "taken": [], "notes": list(prepared.notes)}
        take(item, prepared, order[:n])
        rest[item.name] = order[n:]
        visited.append(item)
    while len(collected) < clips:  # later passes: spread the shortfall over files with windows left
        spare = [i for i in visited if rest[i.name]]
        if not spare:
            break
        share = math.ceil((clips - len(collected)) / len(spare))
        for item in spare:
            n = min(share, len(rest[item.name]), clips - len(collected))
            if n > 0:
                take(item, pre(item.path, item.kind), rest[item.name][:n])
                rest[item.name] = rest[item.name][n:]
    if len(collected) < min_clips:
        raise CalibrationSetError(
            f"a calibration set needs at least {min_clips} clips (--min-clips); only {len(collected)} could be "
            f"made from {len(items)} media files in {data} ({len(skipped)} unreadable); add media or lower --min-clips"
        )
    provenance = {
        "data": str(data),
        "requested_clips": clips,
        "clips_per_file": per_file,
        "media_files": len(items),
        "files_used": len(sources),
        "sources": list(sources.values()),
        "skipped": skipped,
        "preprocessor": {"preset": pre.preset, "face_detectors": list(face_detectors or []) or "default",
                         "max_windows": max_windows, "decoder": pre.decoder,
                         "options": {k: str(v) for k, v in sorted(preprocessor_options.items())}},
    }
    return write_calibration_set(out, collected, contract=contract, seed=seed, holdout=holdout,
                                 min_clips=min_clips, provenance=provenance, overwrite=overwrite)
