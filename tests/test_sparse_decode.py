"""Skipping the frames nobody needs (runtime.sparse_decode) keeps the exact frames of decoding every frame.

Every test compares against the full decode (``skip_unneeded=False``) on the same file: the indices, the
span's count and the pixels of every kept frame must be identical, whatever the codec, frame rate or
container; a stream the skipping cannot vouch for must take the full decode.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mmdet_deploy.runtime import decode, sparse_decode
from mmdet_deploy.runtime.sparse_decode import PacketIndex, index_packets
from mmdet_deploy.runtime.video_sampling import SampledFrames, read_sampled_frames
from runtime_fixtures import index_frame, read_index, write_video

av = pytest.importorskip("av")

#: x264 with B-frames that are not references (b-pyramid: the middle one is), as phones and x264 presets write.
X264_B = {"crf": "12", "preset": "medium", "bframes": "3", "b-pyramid": "normal", "g": "40"}
X265_B = {"crf": "12", "preset": "fast", "x265-params": "bframes=4:b-pyramid=1:keyint=30:log-level=error"}
REAL_CLIP = Path(__file__).resolve().parents[2] / "shared/data/real-media/videos/short_hamilton_clip.mp4"


def _indexed(path: Path, count: int = 120, **kwargs: Any) -> Path:
    return write_video(path, (index_frame(i, 160, 120, (128, 128, 128)) for i in range(count)), fps=10, **kwargs)


def _both(path: Path) -> tuple[SampledFrames, SampledFrames]:
    full = read_sampled_frames(path, 10, 10.0, "pyav", skip_unneeded=False)
    sparse = read_sampled_frames(path, 10, 10.0, "pyav")
    assert sparse.indices == full.indices and sparse.decoded == full.decoded and sparse.error == full.error
    assert sparse.rotation == full.rotation
    for index in full.indices:
        np.testing.assert_array_equal(sparse.frames[index], full.frames[index], err_msg=f"frame {index}")
    assert full.skipped == 0
    return full, sparse


@pytest.mark.parametrize(("name", "kwargs", "skips"), [
    ("b-frames.mp4", {"codec": "libx264", "options": X264_B}, True),
    ("hevc.mp4", {"codec": "libx265", "options": X265_B}, True),
    ("b-frames.ts", {"codec": "libx264", "options": X264_B}, True),  # MPEG-TS: timestamps from the PES headers
    ("rotated.mp4", {"codec": "libx264", "options": X264_B, "rotation": 90}, True),
    # A variable frame rate: every third frame 37 ms late; indices are ranks of pts, not pts * fps.
    ("vfr.mkv", {"codec": "libx264", "options": X264_B, "pts": [100 * i + 37 * (i % 3 == 1) for i in range(120)]},
     True),
    ("no-b-frames.mp4", {}, False),  # ultrafast: every frame a reference, nothing to skip
    ("mpeg4.avi", {"codec": "mpeg4", "options": {"bf": "2", "qscale": "2"}}, False),  # not H.264/HEVC: full decode
])  # fmt: skip
def test_skipping_keeps_the_frames_of_a_full_decode(tmp_path: Path, name: str, kwargs: dict[str, Any],
                                                    skips: bool) -> None:
    full, sparse = _both(_indexed(tmp_path / name, **kwargs))
    assert full.decoded == 100  # 12 s at 10 fps: the span is the first 10 s
    assert full.indices == list(np.linspace(0, 99, 10, dtype=int))
    stored = [np.rot90(full.frames[i], -full.rotation // 90) for i in full.indices]  # as painted, before display
    assert [read_index(frame) for frame in stored] == full.indices  # the painted index: the right frames
    assert (sparse.skipped > 0) == skips


def test_the_real_clip_and_the_benchmark_media(tmp_path: Path) -> None:
    from mmdet_deploy.benchmarks.synthetic_media import write_video as write_benchmark_video

    if REAL_CLIP.is_file():  # a real H.264 camera file: no B-frames, so nothing skipped, but counted from packets
        full, sparse = _both(REAL_CLIP)
        assert full.decoded == 275 and sparse.skipped == 0
    generated = write_benchmark_video(tmp_path / "bench.mp4", seed=3, seconds=4.0, fps=25, codec="h264")
    full, sparse = _both(generated)  # the faces benchmark's 720p media: x264 veryfast, with B-frames
    assert full.decoded == 100 and sparse.skipped >= 30


def test_the_real_clip_re_encoded_with_b_frames(tmp_path: Path) -> None:
    """Real camera content, encoded as x264 and phones do (B-frames): the skipping path on real pixels."""
    if not REAL_CLIP.is_file():
        pytest.skip(f"real-media clip not found: {REAL_CLIP}")
    with av.open(str(REAL_CLIP)) as clip:
        frames = [f.to_ndarray(format="rgb24") for f in itertools.islice(clip.decode(video=0), 150)]
    video = write_video(tmp_path / "hamilton-b-frames.mp4", frames, fps=30, codec="libx264",
                        options={**X264_B, "crf": "23"})  # fmt: skip
    full, sparse = _both(video)
    assert full.decoded == 150 and sparse.skipped > 0


def test_a_stream_that_does_not_start_on_a_key_frame_is_decoded_whole(tmp_path: Path) -> None:
    source = _indexed(tmp_path / "source.ts", codec="libx264", options=X264_B)
    cut = tmp_path / "cut.ts"  # the first packet (the key frame) dropped, as in a badly cut stream
    with av.open(str(source)) as src, av.open(str(cut), mode="w") as dst:
        stream = dst.add_stream_from_template(src.streams.video[0])
        for number, packet in enumerate(src.demux(src.streams.video[0])):
            if number and packet.size:
                packet.stream = stream
                dst.mux(packet)
    assert index_packets(av, cut, 100) is None
    full, sparse = _both(cut)
    assert sparse.skipped == 0


def test_a_truncated_stream_matches_the_full_decode(tmp_path: Path) -> None:
    source = _indexed(tmp_path / "whole.ts", count=60, codec="libx264", options=X264_B)
    data = source.read_bytes()
    cut = tmp_path / "truncated.ts"
    cut.write_bytes(data[: len(data) * 2 // 3])
    full, sparse = _both(cut)
    assert 0 < full.decoded < 60


def test_a_wrong_packet_index_is_caught_and_the_video_decoded_whole(tmp_path: Path) -> None:
    video = _indexed(tmp_path / "v.mp4", codec="libx264", options=X264_B)
    with decode.PyAVReader(video) as reader:
        assert reader.count_frames(100) == 100
        assert reader._packets is not None
        ranks = dict(reader._packets.ranks)
        ranks.pop(sorted(ranks)[5])  # a frame whose pts the index does not know: the decode must notice
        reader._packets = PacketIndex(ranks, 100)
        kept: dict[int, np.ndarray] = {}
        result = reader.scan({0, 50, 99}.__contains__, kept.__setitem__, 100, skip_unwanted=True)
    assert result.decoded == 100 and result.skipped == 0  # the full decode, on a reopened container
    assert {i: read_index(f) for i, f in kept.items()} == {0: 0, 50: 50, 99: 99}


def test_scan_skipping_refuses_what_it_cannot_vouch_for(tmp_path: Path) -> None:
    video = _indexed(tmp_path / "v.mp4", codec="libx264", options=X264_B)
    index = index_packets(av, video, 100)
    assert index is not None and index.count == 100

    def run(idx: PacketIndex) -> Any:
        with av.open(str(video)) as container:
            return sparse_decode.scan_skipping(av, container, container.streams.video[0], idx, lambda i: i % 11 == 0,
                                               lambda f: f.to_ndarray(format="rgb24"))  # fmt: skip

    frames, skipped = run(index)
    assert sorted(frames) == list(range(0, 100, 11)) and skipped > 0
    assert [read_index(frames[i]) for i in sorted(frames)] == sorted(frames)
    shifted = PacketIndex({pts: rank + 1 for pts, rank in index.ranks.items()}, 100)
    assert run(shifted) is None  # a wanted rank no frame carries
    assert run(PacketIndex(dict.fromkeys(index.ranks, 0) | {min(index.ranks): 0}, 100)) is None  # a rank twice


def test_decode_all_frames_option_reaches_the_preprocessor(tmp_path: Path) -> None:
    from mmdet_deploy.contract import ModelContract
    from mmdet_deploy.runtime.preprocess import Preprocessor

    video = _indexed(tmp_path / "v.mp4", codec="libx264", options=X264_B)
    sparse = Preprocessor(ModelContract(config="tiny"), "faces", ["haar"])(video)
    full = Preprocessor(ModelContract(config="tiny"), "faces", ["haar"], decode_all_frames=True)(video)
    assert sparse.frames_skipped > 0 and full.frames_skipped == 0
    assert sparse.frame_indices == full.frame_indices and sparse.frames_decoded == full.frames_decoded == 100
    np.testing.assert_array_equal(sparse.originals, full.originals)
