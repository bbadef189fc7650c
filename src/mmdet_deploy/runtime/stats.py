"""What a pipeline run measured: counts by status, busy seconds per stage, throughput (:class:`PipelineStats`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mmdet_deploy.runtime.results import SKIPPED, STATUSES

#: Stages whose busy time is reported (seconds summed over threads; worker stages can overlap each other).
STAGES = ("decode", "face_detection", "reconstruction", "preprocess", "inference", "writing", "waiting")


@dataclass
class PipelineStats:
    """What :func:`run_inference` did. ``stage_s`` sums busy seconds per stage over all threads; ``wall_s``
    is elapsed time.

    ``decode``, ``face_detection`` and ``preprocess`` run in workers (in parallel), ``inference`` and
    ``writing`` in the calling thread, ``waiting`` is the calling thread blocked with nothing to infer.
    Overlap efficiency, as a benchmark may define it, is ``sum(stage_s without waiting) / wall_s``.
    """

    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STATUSES, 0))
    wall_s: float = 0.0
    stage_s: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    windows: int = 0
    batches: int = 0
    workers: int = 0
    batch_size: int = 0
    #: ``threads`` or ``processes``: where preprocessing ran.
    worker_kind: str = "threads"
    #: Videos read, and the frames decoded from them (every frame up to the sampling span), of which
    #: ``frames_skipped`` were left undecoded because nothing needed them (see ``runtime.sparse_decode``).
    videos_decoded: int = 0
    frames_decoded: int = 0
    frames_skipped: int = 0

    @property
    def files(self) -> int:
        return sum(self.counts.values())

    @property
    def media_files(self) -> int:
        """Files that were images or videos (everything but ``skipped``)."""
        return self.files - self.counts[SKIPPED]

    @property
    def files_per_s(self) -> float:
        """Media files finished per second of wall time (skipped non-media files are not counted)."""
        return self.media_files / self.wall_s if self.wall_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "counts": dict(self.counts), "files": self.files, "media_files": self.media_files,
            "wall_s": round(self.wall_s, 4), "files_per_s": round(self.files_per_s, 4),
            "stage_s": {k: round(v, 4) for k, v in self.stage_s.items()}, "windows": self.windows,
            "batches": self.batches, "workers": self.workers, "batch_size": self.batch_size,
            "worker_kind": self.worker_kind, "videos_decoded": self.videos_decoded,
            "frames_decoded": self.frames_decoded, "frames_decoded_per_video": round(self.frames_per_video, 2),
            "frames_skipped": self.frames_skipped,
        }

    @property
    def frames_per_video(self) -> float:
        """Frames decoded per video read (0 when no video was read)."""
        return self.frames_decoded / self.videos_decoded if self.videos_decoded else 0.0
