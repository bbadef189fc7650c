"""The per-file stages every engine shares: one input file -> model-ready clips or its status row, and
window scores -> the file's result row.

::

    outcome = prepare_file(preprocessor, item)     # never raises for a bad file
    if isinstance(outcome, ResultRow):              # skipped (not media) or error: the row is final
        sink.write(outcome)
    else:                                           # a PreparedFile: outcome.windows clips to score
        probs = [...]                               # one prob_fake per window, from any backend
        sink.write(scored_row(item, outcome, probs, threshold, seconds))

:func:`mmdet_deploy.runtime.pipeline.run_inference` (threads) runs these; another engine (a Ray Data
pipeline, say) can map :func:`prepare_file` over its workers and get the same rows.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import numpy as np

from mmdet_deploy.errors import MMDetError, one_line
from mmdet_deploy.runtime.discovery import MediaItem
from mmdet_deploy.runtime.preprocess import PreparedFile, Preprocessor, WindowSink
from mmdet_deploy.runtime.results import ERROR, NO_FACE, OK, SKIPPED, ResultRow

logger = logging.getLogger(__name__)

#: Reason column of a file whose frames had no face at all (the file is still scored).
NO_FACE_NOTE = "no face found in any frame: whole frames used"


def skipped_row(item: MediaItem) -> ResultRow:
    """The row of a file that is not an image or video: listed, never scored."""
    reason = item.note or f"not an image or video ({item.path.suffix or 'no extension'})"
    return ResultRow(item.name, status=SKIPPED, reason=reason, kind="other")


def prepare_file(
    preprocessor: Preprocessor, item: MediaItem, emit: WindowSink | None = None
) -> PreparedFile | ResultRow:
    """Decode, find faces and crop one file; a bad or non-media file becomes its final row instead.

    Never raises for a bad file (a library choking on a malformed file must not abort thousands of
    others): the error row carries a one-line reason and the seconds spent. Safe to call from several
    threads with one ``preprocessor``. With ``emit``, the windows are streamed to it as they are cut
    (:meth:`Preprocessor.stream`: memory stays bounded) and the returned file holds no pixels; windows
    emitted before an error are to be discarded (the file's row is the error).
    """
    if not item.is_media:
        return skipped_row(item)
    t0 = time.perf_counter()
    try:
        if emit is not None:
            return preprocessor.stream(item.path, item.kind, emit)
        return preprocessor(item.path, item.kind)
    except MMDetError as exc:
        reason = getattr(exc, "reason", None) or str(exc)
    except Exception as exc:
        logger.warning("unexpected failure on %s", item.name, exc_info=True)
        reason = f"unexpected {type(exc).__name__}: {one_line(exc, 200)}"
    return ResultRow(item.name, status=ERROR, reason=reason or "unknown error", kind=item.kind,
                     seconds=time.perf_counter() - t0)


def score_source(backend_name: str, precision: str) -> str:
    """How an error row names the model that gave a bad score, e.g. ``backend onnxruntime, precision fp32``."""
    return f"backend {backend_name or 'unknown'}, precision {precision or 'unknown'}"


def scored_row(
    item: MediaItem, prepared: PreparedFile, probs: Sequence[float], threshold: float, seconds: float,
    *, source: str = "",
) -> ResultRow:
    """The row of a scored file: ``prob_fake`` is the mean over its windows (the official pipeline's video
    score), ``label`` is ``prob_fake >= threshold``; ``seconds`` is the time spent on this file.

    Every window score is checked before it becomes a label: a NaN, an infinity or a value outside [0, 1]
    (a broken model, a NaN in the contract's normalisation, an overflow in reduced precision) makes the file
    an ``error`` row naming ``source`` (:func:`score_source`), never a confident "real" (``nan >= t`` is
    False).
    """
    if len(probs) != prepared.windows:
        raise MMDetError(f"{item.name}: {len(probs)} scores for {prepared.windows} windows")
    values = np.asarray(probs, dtype=np.float64).reshape(-1)
    finite = np.isfinite(values)
    bad = ~finite | (values < 0.0) | (values > 1.0)  # NaN compares False: caught by ~finite
    if bad.any():
        first = float(values[bad][0])
        what = "non-finite scores" if not finite.all() else "scores outside [0, 1]"
        reason = (f"the model returned {what} ({first!r} in {int(bad.sum())} of {values.size} windows; "
                  f"{source or score_source('', '')}): not scored")
        return ResultRow(item.name, status=ERROR, reason=reason, kind=prepared.kind, frames=prepared.frames_used,
                         windows=prepared.windows, detector=prepared.detector or "",
                         frames_without_face=prepared.frames_without_face, seconds=seconds)
    prob = float(np.mean(values))
    notes = list(prepared.notes)
    if prepared.no_face:
        notes.insert(0, NO_FACE_NOTE)
    return ResultRow(
        filename=item.name,
        label=int(prob >= threshold),
        prob_fake=prob,
        status=NO_FACE if prepared.no_face else OK,
        reason="; ".join(notes),
        kind=prepared.kind,
        frames=prepared.frames_used,
        windows=prepared.windows,
        detector=prepared.detector or "",
        frames_without_face=prepared.frames_without_face,
        seconds=seconds,
    )
