"""Exact frame sampling without decoding the frames that neither the sampling nor any other frame needs.

The faces preset keeps 10 evenly spaced frames of the first 10 s, so a 30 fps video decodes 300 frames to
keep 10. In H.264 and HEVC a frame that no other frame references (``nal_ref_idc == 0``: most B-frames of
an x264 or phone encode) can be left undecoded without changing any other frame: FFmpeg's
``skip_frame = NONREF``. What this module does, with PyAV:

1. :func:`index_packets` demuxes the span (no decoding; under a millisecond for 100 packets) and ranks the
   packets by presentation time: a frame's index is the rank of its ``pts``, which is exact for any frame
   rate, constant or variable. The span's frame count is known before decoding, so the seed's
   ``np.linspace`` indices are known too, and the container's frame count (an estimate in some containers)
   is not needed.
2. :func:`scan_skipping` decodes in order, asking FFmpeg to skip a packet when it is non-reference and not
   wanted; a wanted packet is always decoded. The output frames are matched to their rank by ``pts``.

It is used only where a packet is one frame and every frame of the span is output by a full decode; any
doubt means the ordinary full decode (:meth:`~mmdet_deploy.runtime.decode.PyAVReader.scan`), so the frames
and indices are always those of decoding every frame:

- the codec is H.264 or HEVC; every packet has a ``pts``, no two share one, none is flagged corrupt or
  discarded (an edit list's trimmed frames);
- the first packet is a key frame and the earliest in presentation order (a stream that starts on an open
  GOP has leading frames a full decode may not output);
- while decoding: no interlaced frame (two field packets may make one frame), every output ``pts`` is a known
  packet's, no rank is output twice, every wanted rank is output, and the decoder raises nothing.

Frames skipped this way are not decoded, so a corrupt non-reference frame the full decode would have
stopped on goes unnoticed: the frames kept are still exactly those of a full decode of an intact file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

#: Codecs whose packets are one frame each and whose decoder skips exactly the non-reference frames.
SKIPPABLE_CODECS = frozenset({"h264", "hevc"})
#: Packets demuxed past the span: the deepest frame reordering of H.264 and HEVC is 16 frames, so the
#: span's earliest ``limit`` presentation times are among its first ``limit + 32`` packets.
REORDER_MARGIN = 32


@dataclass(frozen=True)
class PacketIndex:
    """The presentation rank of each demuxed packet's ``pts``; ``count``: frames in the span (ranks below)."""

    ranks: dict[int, int]
    count: int


def index_packets(av: Any, path: Path, limit: int) -> PacketIndex | None:
    """Rank the packets of the first ``limit`` frames of ``path``'s first video stream by ``pts``; None when
    the stream does not meet this module's conditions (then decode every frame instead)."""
    pts: list[int] = []
    try:
        with av.open(str(path), mode="r") as container:
            stream = container.streams.video[0]
            if stream.codec_context.name not in SKIPPABLE_CODECS:
                return None
            for packet in container.demux(stream):
                if packet.size == 0:
                    continue  # the flush packet at the end of the stream
                if packet.pts is None or packet.is_corrupt or packet.is_discard or (not pts and not packet.is_keyframe):
                    return None
                pts.append(int(packet.pts))
                if len(pts) >= limit + REORDER_MARGIN:
                    break
    except (av.FFmpegError, OSError, ValueError, IndexError):
        return None  # the full decode reports what is wrong, in its own words
    if not pts or len(set(pts)) != len(pts) or min(pts) != pts[0]:
        return None
    return PacketIndex({p: rank for rank, p in enumerate(sorted(pts))}, min(limit, len(pts)))


def scan_skipping(
    av: Any, container: Any, stream: Any, index: PacketIndex, want: Callable[[int], bool],
    to_rgb: Callable[[Any], np.ndarray],
) -> tuple[dict[int, np.ndarray], int] | None:
    """Decode the span from the start of a fresh ``container``, skipping non-reference frames not wanted.

    Returns the wanted frames by index (converted by ``to_rgb``) and the number of frames not decoded, or
    None on any sign that the result could differ from a full decode (the caller then decodes every frame).
    """
    wanted = {rank for rank in range(index.count) if want(rank)}
    got: dict[int, np.ndarray] = {}
    seen: set[int] = set()
    context = stream.codec_context
    try:
        for packet in container.demux(stream):
            rank = index.ranks.get(int(packet.pts)) if packet.pts is not None else None
            context.skip_frame = "DEFAULT" if rank in wanted else "NONREF"
            for frame in packet.decode():
                if frame.interlaced_frame or frame.pts is None:
                    return None
                out = index.ranks.get(int(frame.pts))
                if out is None or out in seen:
                    return None
                seen.add(out)
                if out in wanted:
                    got[out] = to_rgb(frame)
            if len(got) == len(wanted):
                break
    except (av.FFmpegError, OSError, ValueError):
        return None
    finally:
        context.skip_frame = "DEFAULT"
    if got.keys() != wanted:
        return None
    last = max(wanted, default=-1)  # decoding stopped there: every decoded frame before it has been output
    return got, last + 1 - sum(1 for rank in seen if rank <= last)
