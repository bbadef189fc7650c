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
from dataclasses import dataclass, field
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
    sampling = _Sampling(pre, clips, per_file=max(1, math.ceil(clips / len(items))))
    sampling.first_pass(items, np.random.default_rng(seed))
    sampling.fill_shortfall()
    if len(sampling.collected) < min_clips:
        raise CalibrationSetError(
            f"a calibration set needs at least {min_clips} clips (--min-clips); only {len(sampling.collected)} "
            f"could be made from {len(items)} media files in {data} ({len(sampling.skipped)} unreadable); add "
            "media or lower --min-clips"
        )
    provenance = {
        "data": str(data),
        "requested_clips": clips,
        "clips_per_file": sampling.per_file,
        "media_files": len(items),
        "files_used": len(sampling.sources),
        "sources": list(sampling.sources.values()),
        "skipped": sampling.skipped,
        "preprocessor": {"preset": pre.preset, "face_detectors": list(face_detectors or []) or "default",
                         "max_windows": max_windows, "decoder": pre.decoder,
                         "options": {k: str(v) for k, v in sorted(preprocessor_options.items())}},
    }
    return write_calibration_set(out, sampling.collected, contract=contract, seed=seed, holdout=holdout,
                                 min_clips=min_clips, provenance=provenance, overwrite=overwrite)


@dataclass
class _Sampling:
    """One sampling run: the clips taken so far, what each source file gave, the windows left per file."""

    pre: Any  # a runtime Preprocessor (imported lazily: calibration must not load the runtime on import)
    clips: int
    per_file: int
    collected: list[CalibrationClip] = field(default_factory=list)
    sources: dict[str, dict[str, Any]] = field(default_factory=dict)
    rest: dict[str, list[int]] = field(default_factory=dict)  # windows not yet taken, seeded order, per file
    skipped: list[dict[str, str]] = field(default_factory=list)
    visited: list[Any] = field(default_factory=list)

    @property
    def missing(self) -> int:
        return self.clips - len(self.collected)

    def take(self, item: Any, prepared: Any, windows: list[int]) -> None:
        for w in sorted(windows):
            original, recons = prepared.window_inputs(w, w + 1)
            self.collected.append(CalibrationClip(source=item.name, window=w,
                                                  frame_indices=tuple(int(f) for f in prepared.frame_indices[w]),
                                                  original=original[0], recons=recons[0], detector=prepared.detector))
        self.sources[item.name]["taken"] = sorted(self.sources[item.name]["taken"] + windows)

    def first_pass(self, items: Sequence[Any], rng: np.random.Generator) -> None:
        """Visit files in a seeded order, up to ``per_file`` windows each, until ``clips`` are collected."""
        for idx in rng.permutation(len(items)):
            if self.missing <= 0:
                break
            item = items[int(idx)]
            try:
                prepared = self.pre(item.path, item.kind)
            except MediaError as exc:
                self.skipped.append({"file": item.name, "reason": exc.reason})
                logger.warning("calibration: skipping %s (%s)", item.name, exc.reason)
                continue
            order = [int(w) for w in rng.permutation(prepared.windows)]
            n = min(self.per_file, self.missing)
            self.sources[item.name] = {"file": item.name, "sha256": sha256_file(item.path), "kind": item.kind,
                                       "windows": prepared.windows, "taken": [], "notes": list(prepared.notes)}
            self.take(item, prepared, order[:n])
            self.rest[item.name] = order[n:]
            self.visited.append(item)

    def fill_shortfall(self) -> None:
        """Later passes: spread what is still missing over the files that have windows left."""
        while self.missing > 0:
            spare = [i for i in self.visited if self.rest[i.name]]
            if not spare:
                return
            share = math.ceil(self.missing / len(spare))
            for item in spare:
                n = min(share, len(self.rest[item.name]), self.missing)
                if n > 0:
                    self.take(item, self.pre(item.path, item.kind), self.rest[item.name][:n])
                    self.rest[item.name] = self.rest[item.name][n:]
