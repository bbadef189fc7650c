"""Helpers for the runtime tests: a contract-honouring synthetic ONNX model and generated media.

The synthetic model is tiny and *meaningful*: ``logit_fake = GAIN * (mean_R - mean_B)`` of
``original - 0.5 * recons`` (means over frames and pixels of the normalised input), ``logit_real = 0``. Red
content reads as fake, blue as real, so tests can predict labels from the pixels they generate, and
:func:`reference_prob` recomputes the exact probability in numpy to check the whole pipeline end to end.

Video frames carry their own index as a row of black / white blocks (:func:`index_frame`), which survive
lossy compression, so tests can check that the decoder returned exactly the frames it claims.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path

import numpy as np

from mmdet_deploy.contract import METADATA_KEY, ModelContract

GAIN = 2.0
INDEX_BITS = 10


def build_synthetic_model(
    path: Path, contract: ModelContract | None = None, *, with_contract: bool = True, static_batch: int | None = None,
    nan_weight: bool = False, contract_json: str | None = None,
) -> Path:
    """Write the synthetic ONNX model to ``path`` (contract embedded unless ``with_contract`` is False).

    ``nan_weight``: one head weight is NaN (a tampered or diverged checkpoint), so every ``prob_fake`` is NaN.
    ``contract_json``: embed this text as the contract instead (to test invalid contracts).
    """
    import onnx
    from onnx import TensorProto, helper

    contract = contract or ModelContract(config="tiny")
    t, s = contract.frames, contract.image_size
    batch: int | str = static_batch if static_batch is not None else "batch"
    clip = [batch, t, 3, s, s]
    weight = np.array([[0.0, GAIN], [0.0, 0.0], [0.0, -GAIN]], dtype=np.float32)  # (3 channels, 2 classes)
    if nan_weight:
        weight[0, 1] = np.nan
    nodes = [
        helper.make_node("Mul", ["recons", "half"], ["scaled"]),
        helper.make_node("Sub", ["original", "scaled"], ["diff"]),
        # Three small reductions rather than one over 500k values: float32 accumulation stays accurate.
        helper.make_node("ReduceMean", ["diff"], ["rows"], axes=[4], keepdims=0),
        helper.make_node("ReduceMean", ["rows"], ["planes"], axes=[3], keepdims=0),
        helper.make_node("ReduceMean", ["planes"], ["pooled"], axes=[1], keepdims=0),  # (B, 3)
        helper.make_node("Gemm", ["pooled", "weight", "bias"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=1),
        helper.make_node("Gather", ["probs", "fake_index"], ["prob_fake"], axis=1),
    ]
    initializers = [
        helper.make_tensor("half", TensorProto.FLOAT, [], [0.5]),
        helper.make_tensor("weight", TensorProto.FLOAT, [3, 2], weight.flatten().tolist()),
        helper.make_tensor("bias", TensorProto.FLOAT, [2], [0.0, 0.0]),
        helper.make_tensor("fake_index", TensorProto.INT64, [], [1]),
    ]
    graph = helper.make_graph(
        nodes,
        "synthetic_mmdet",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, clip) for n in ("original", "recons")],
        [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 2]),
            helper.make_tensor_value_info("prob_fake", TensorProto.FLOAT, [batch]),
        ],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="tests")
    model.ir_version = 8
    if with_contract:
        helper.set_model_props(model, {METADATA_KEY: contract_json or contract.to_json()})
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def reference_prob(clips: np.ndarray, recons: np.ndarray | None = None) -> np.ndarray:
    """The synthetic model's ``prob_fake`` for (W, T, 3, S, S) inputs, computed in float64 numpy."""
    recons = clips if recons is None else recons
    diff = clips.astype(np.float64) - 0.5 * recons.astype(np.float64)
    pooled = diff.mean(axis=(1, 3, 4))
    logit = GAIN * (pooled[:, 0] - pooled[:, 2])
    return 1.0 / (1.0 + np.exp(-logit))


# ---------------------------------------------------------------------------------------------------------------
# Media
# ---------------------------------------------------------------------------------------------------------------
def index_frame(
    index: int, width: int = 160, height: int = 120, colour: tuple[int, int, int] = (128, 128, 128)
) -> np.ndarray:
    """An RGB frame of ``colour`` whose top band encodes ``index`` in binary (white = 1)."""
    frame = np.empty((height, width, 3), np.uint8)
    frame[:] = colour
    block = width // INDEX_BITS
    band = height // 3
    for bit in range(INDEX_BITS):
        value = 255 if (index >> bit) & 1 else 0
        frame[:band, bit * block : (bit + 1) * block] = value
    return frame


def read_index(frame: np.ndarray) -> int:
    """Decode the index painted by :func:`index_frame` (robust to compression: block means)."""
    height, width = frame.shape[:2]
    block = width // INDEX_BITS
    band = height // 3
    index = 0
    for bit in range(INDEX_BITS):
        cell = frame[band // 4 : band * 3 // 4, bit * block + block // 4 : (bit + 1) * block - block // 4]
        if cell.mean() > 127:
            index |= 1 << bit
    return index


CODECS = {".mp4": "libx264", ".mkv": "libx264", ".mov": "libx264", ".avi": "mpeg4", ".webm": "libvpx-vp9"}


def write_video(
    path: Path, frames: Iterable[np.ndarray], fps: int = 10, codec: str | None = None, rotation: int | None = None,
    options: dict[str, str] | None = None, pts: Sequence[int] | None = None,
) -> Path:
    """Encode RGB frames with PyAV (codec from the extension by default); returns ``path``.

    ``rotation``: a display matrix rotating the stored frames by that many degrees counter-clockwise when
    shown (what a phone writes for a portrait video: the pixels stay landscape). ``options``: the encoder's
    (default for libx264: near-lossless, ``ultrafast``, so no B-frames). ``pts``: each frame's presentation
    time in milliseconds (a variable frame rate), instead of one frame per ``1/fps``.
    """
    import av

    frames = iter(frames)  # streamed: a long video must not be held in memory
    first = next(frames)
    height, width = first.shape[:2]
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec or CODECS[path.suffix.lower()], rate=Fraction(fps))
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p"
        if rotation is not None:
            stream.set_display_rotation(rotation)
        if options is not None:
            stream.options = dict(options)
        elif stream.codec_context.name in ("libx264",):
            stream.options = {"crf": "12", "preset": "ultrafast"}  # near-lossless: painted indices stay crisp
        if pts is not None:
            stream.codec_context.time_base = Fraction(1, 1000)
        for number, rgb in enumerate(itertools.chain([first], frames)):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            if pts is not None:
                frame.pts, frame.time_base = int(pts[number]), Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_index_video(path: Path, count: int, fps: int = 10, size: tuple[int, int] = (160, 120),
                      colour: tuple[int, int, int] = (128, 128, 128)) -> Path:
    """A video of ``count`` frames, frame ``i`` painted with ``i``."""
    return write_video(path, (index_frame(i, size[0], size[1], colour) for i in range(count)), fps)


def write_audio_only(path: Path, seconds: float = 0.5) -> Path:
    """An AAC audio-only file (the extension decides the container: e.g. a '.mp4' with no video)."""
    import av

    rate = 22050
    samples = int(rate * seconds)
    tone = (0.2 * np.sin(2 * np.pi * 440 * np.arange(samples) / rate)).astype(np.float32)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("aac", rate=rate)
        stream.layout = "mono"
        for start in range(0, samples, 1024):
            chunk = tone[start : start + 1024]
            frame = av.AudioFrame.from_ndarray(chunk[None, :], format="flt", layout="mono")
            frame.sample_rate = rate
            frame.pts = start
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def astronaut() -> np.ndarray:
    """scikit-image's astronaut photo: a real face (512x512 RGB), Eileen Collins, public domain."""
    from skimage import data

    return np.ascontiguousarray(data.astronaut())


def face_frames(count: int, size: tuple[int, int] = (320, 240)) -> list[np.ndarray]:
    """``count`` frames showing the astronaut (scaled to the frame height) drifting horizontally."""
    import cv2

    width, height = size
    face = cv2.resize(astronaut(), (height, height), interpolation=cv2.INTER_AREA)
    frames = []
    for i in range(count):
        canvas = np.full((height, width, 3), 30, np.uint8)
        x = min(width - height, i * 2)
        canvas[:, x : x + height] = face
        frames.append(canvas)
    return frames


def solid_image(path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (64, 48), mode: str = "RGB") -> Path:
    """A flat image of ``colour`` saved with Pillow (format from the extension)."""
    from PIL import Image

    img = Image.new("RGB", size, colour)
    if mode != "RGB":
        img = img.convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


def write_bad_folder(root: Path) -> Path:
    """One good image, one good face video, and every kind of bad input the runtime must survive (``root``
    is created; the local engine's and the Ray engine's tests share this folder)."""
    import os

    from PIL import Image

    root.mkdir(parents=True)
    Image.fromarray(astronaut()).save(root / "astronaut photo é.png")
    write_video(root / "faces 人.mp4", face_frames(15), fps=10)
    (root / "zero.mp4").write_bytes(b"")
    (root / "noise.mp4").write_bytes(np.random.default_rng(2).integers(0, 256, 3000, dtype=np.uint8).tobytes())
    full = write_index_video(root / "tmp.mp4", 30, fps=10)
    (root / "truncated.mp4").write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    full.unlink()
    write_audio_only(root / "audio only.mp4")
    write_index_video(root / "short.mp4", 4, fps=10)
    (root / "text.jpg").write_text("I am a text file\n", encoding="utf-8")
    os.symlink(root / "missing target.mp4", root / "broken link.mp4")
    (root / "readme.md").write_text("not media", encoding="utf-8")
    return root


@contextmanager
def time_limit(seconds: int) -> Iterator[None]:
    """Fail the test (``TimeoutError``) if its body runs longer than ``seconds``: SIGALRM, POSIX main thread.

    For in-process tests of code that could hang (a stuck worker, a FIFO); a subprocess test uses
    ``subprocess.run(..., timeout=)`` instead.
    """
    import signal

    def expire(signum: int, frame: object) -> None:
        raise TimeoutError(f"the test ran past its time limit of {seconds} s (a hang?)")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
