"""One table row per file: thumbnails, crops, timeline, name linked to the original, status, score, detector.

Every string from the run folder goes through :func:`esc` (file names are hostile: ``<script>`` in a name is
text, and bytes that are not UTF-8 are shown as ``\\xNN``); links are percent-encoded, then escaped.
"""

from __future__ import annotations

import base64
import html
import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from mmdet_deploy.runtime.discovery import LIST_EXTENSIONS
from mmdet_deploy.runtime.names import name_bytes as escaped_name_bytes
from mmdet_deploy.runtime.report import svg
from mmdet_deploy.runtime.report.data import FaceRecord, RunData, Thumbs
from mmdet_deploy.runtime.results import NO_FACE, ResultRow
from mmdet_deploy.runtime.thumbnails import CROP_THUMB_SIDE, FRAME_THUMB_SIDE

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def esc(value: object) -> str:
    """``value`` as HTML text or attribute content: markup escaped, control and unencodable characters
    shown as backslash escapes (the page is UTF-8)."""
    text = str(value)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        try:
            text = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        except UnicodeEncodeError:
            text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    text = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
    return html.escape(text, quote=True)


def name_bytes(name: str) -> bytes:
    """The file-system bytes of a results.csv name or run.json path (undoing :mod:`mmdet_deploy.runtime.names`)."""
    try:
        return escaped_name_bytes(name)
    except ValueError:  # not an escaped name (hand-edited, or written before the escaping was injective)
        return name.encode("utf-8", "surrogateescape")


def original_href(manifest: Mapping[str, Any], name: str, report_dir: Path) -> str | None:
    """A link, relative to the report's folder, to the original file of ``name`` (None if INPUT is unknown)."""
    given = manifest.get("input")
    if not given:
        return None
    root = Path(os.fsdecode(name_bytes(str(given))))
    raw = name_bytes(name)
    if root.suffix.lower() in LIST_EXTENSIONS and not root.is_dir():
        target = raw if raw.startswith(b"/") else os.path.join(os.fsencode(root.parent), raw)
    elif root.is_dir() or root.name != name:
        target = os.path.join(os.fsencode(root), raw)
    else:
        target = os.fsencode(root)  # INPUT was this one file
    relative = os.path.relpath(target, os.fsencode(report_dir.resolve()))
    return quote(relative, safe="/")


def choose_rows(rows: Sequence[ResultRow], limit: int) -> list[ResultRow]:
    """The rows the table shows: all of them up to ``limit``; past it the highest- and lowest-scoring files
    (files without a score fill what room is left). Ordered by p(fake), highest first, unscored last."""
    scored = sorted((r for r in rows if r.prob_fake is not None), key=lambda r: -(r.prob_fake or 0.0))
    unscored = [r for r in rows if r.prob_fake is None]
    if len(rows) <= limit:
        return scored + unscored
    if len(scored) <= limit:
        return scored + unscored[: limit - len(scored)]
    top = math.ceil(limit / 2)
    return scored[:top] + scored[len(scored) - (limit - top) :]


def _data_uri(jpeg: bytes) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")


def frame_svg(thumbs: Thumbs, faces: Sequence[FaceRecord], preset: str, image_size: int) -> str:
    """The sampled frame with the chosen face box (faces preset) or the centre crop (frames preset) drawn,
    in the frame's own pixel coordinates."""
    if thumbs.frame_jpeg is None or thumbs.frame_size is None:
        return ""
    width, height = thumbs.frame_size
    factor = FRAME_THUMB_SIDE / max(width, height)
    shown_w, shown_h = max(1, round(width * factor)), max(1, round(height * factor))
    parts = [f'<svg class="frame" viewBox="0 0 {width} {height}" width="{shown_w}" height="{shown_h}" '
             f'role="img" aria-label="frame {thumbs.frame}">',
             f'<image href="{_data_uri(thumbs.frame_jpeg)}" width="{width}" height="{height}" '
             f'preserveAspectRatio="none"/>']
    title = f"frame {thumbs.frame}"
    if preset == "faces":
        face = next((f for f in faces if f.frame == thumbs.frame and f.box is not None), None)
        if face is not None and face.box is not None:
            x, y, w, h = face.box
            score = "" if face.score is None else f", score {face.score:.2f}"
            title += f": face by {face.detector}{score} (box before the margin)"
            parts.append(f'<rect class="face" x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h:.1f}"/>')
        else:
            title += ": no face"
    elif preset == "frames":
        side_w, side_h = min(width, image_size), min(height, image_size)
        parts.append(f'<rect class="centre" x="{(width - side_w) / 2:.1f}" y="{(height - side_h) / 2:.1f}" '
                     f'width="{side_w}" height="{side_h}"/>')
        title += f": the centre {image_size}x{image_size} crop the model sees"
    parts.append(f"<title>{esc(title)}</title></svg>")
    return "".join(parts)


def crops_html(thumbs: Thumbs | None, row: ResultRow) -> str:
    if thumbs is None or thumbs.crops_jpeg is None:
        if row.prob_fake is None:
            return ""
        return '<span class="none">no thumbnails (run with --report or --save-crops)</span>'
    count = len(thumbs.crop_frames)
    window = "" if thumbs.window is None or row.windows <= 1 else f" of window {thumbs.window} (the highest p(fake))"
    frames = ", ".join(str(f) for f in thumbs.crop_frames)
    side = CROP_THUMB_SIDE
    return (f'<img class="crops" src="{_data_uri(thumbs.crops_jpeg)}" height="{side}" width="{side * max(1, count)}" '
            f'alt="{count} crops scored" title="{esc(f"the {count} crops scored{window}: frames {frames}")}">')


def detector_html(row: ResultRow, faces: Sequence[FaceRecord]) -> str:
    text = esc(row.detector) if row.detector else '<span class="none">-</span>'
    if faces:
        with_face = sum(1 for f in faces if f.box is not None)
        text += f'<div class="small">face on {with_face} of {len(faces)} frames</div>'
    elif row.prob_fake is not None and row.frames and row.status == NO_FACE:
        text += f'<div class="small">face on 0 of {row.frames} frames</div>'
    return text


def row_html(index: int, row: ResultRow, data: RunData, report_dir: Path) -> str:
    """The ``<tr>`` of one file."""
    name = esc(row.filename)
    p = "" if row.prob_fake is None else f"{row.prob_fake:.6f}"
    faces = data.faces.get(row.filename, []) if data.preset == "faces" else []
    thumbs = data.thumbs(row.filename) if row.prob_fake is not None else None
    image_size = int(data.manifest.get("image_size", 224) or 224)
    frame = frame_svg(thumbs, faces, data.preset, image_size) if thumbs is not None else ""
    windows = data.windows.get(row.filename, [])
    chart = svg.timeline(windows, data.threshold) if data.preset == "frames" and len(windows) >= 1 else ""
    href = original_href(data.manifest, row.filename, report_dir)
    link = f'<a class="orig" href="{esc(href)}">{name}</a>' if href is not None else f"<span>{name}</span>"
    facts = [row.kind or "?"]
    if row.frames:
        facts.append(f"{row.frames} frame{'s' if row.frames != 1 else ''}")
    if row.windows:
        facts.append(f"{row.windows} window{'s' if row.windows != 1 else ''}")
    facts.append(f"{row.seconds:.2f} s")
    reason = f'<div class="reason">{esc(row.reason)}</div>' if row.reason else ""
    score = (f'{row.prob_fake:.3f}<div class="label">label {row.label}</div>' if row.prob_fake is not None
             else '<span class="none">-</span>')
    return (
        f'<tr data-p="{p}" data-status="{esc(row.status)}" data-name="{name}" data-i="{index}">'
        f'<td class="c-frame">{frame}</td>'
        f'<td class="c-crops">{crops_html(thumbs, row)}{chart}</td>'
        f'<td class="c-name">{link}<div class="meta">{esc(", ".join(facts))}</div>{reason}</td>'
        f'<td class="c-status"><span class="st st-{esc(row.status)}">{esc(row.status)}</span></td>'
        f'<td class="c-p">{score}</td>'
        f'<td class="c-det">{detector_html(row, faces)}</td>'
        "</tr>"
    )
