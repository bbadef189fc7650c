"""Input discovery: a folder (recursive), a single file, or a text file listing paths.

Every file found becomes one :class:`MediaItem`, including files that are not media (they are reported
as ``skipped``, never silently dropped) and broken symbolic links (reported as errors by the decoder).
The order is deterministic: sorted by the ``name`` shown in ``results.csv`` (a POSIX-style path relative to
INPUT), so two runs over the same folder list files identically and ``--resume`` is well defined.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from mmdet_deploy.errors import UsageError

logger = logging.getLogger(__name__)

#: Lower-case extensions read as still images (the comparison is case-insensitive).
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})
#: Lower-case extensions read as videos.
VIDEO_EXTENSIONS = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm"})
#: A single INPUT file with one of these extensions is a list of paths, one per line.
LIST_EXTENSIONS = frozenset({".txt", ".lst", ".list"})

IMAGE = "image"
VIDEO = "video"
OTHER = "other"


def media_kind(path: str | os.PathLike[str]) -> str:
    """``image``, ``video`` or ``other`` from the file extension alone (case-insensitive)."""
    suffix = Path(path).suffix.lower()
    if suffix in IMAGE_EXTENSIONS:
        return IMAGE
    if suffix in VIDEO_EXTENSIONS:
        return VIDEO
    return OTHER


@dataclass(frozen=True)
class MediaItem:
    """One input file.

    ``name`` is the key written to ``results.csv`` / ``predictions.csv``: the path relative to the INPUT
    folder (POSIX separators), the bare file name for a single-file INPUT, or the line as written in a list
    file. ``path`` is where the file is read from.
    """

    path: Path
    name: str
    kind: str

    @property
    def is_media(self) -> bool:
        return self.kind in (IMAGE, VIDEO)


def discover(input_path: str | os.PathLike[str], exclude: Sequence[str | os.PathLike[str]] = ()) -> list[MediaItem]:
    """List the files of INPUT in a deterministic order.

    ``exclude`` names directories never descended into (the output folder, when it lies inside INPUT, so a
    run does not list its own ``results.csv``). Raises :class:`UsageError` when INPUT does not exist.
    """
    root = Path(input_path)
    if not root.exists() and not root.is_symlink():
        raise UsageError(f"{root}: INPUT does not exist")
    if root.is_dir():
        return _walk_folder(root, exclude)
    if root.suffix.lower() in LIST_EXTENSIONS:
        return read_list_file(root)
    # A single file, media or not (a broken symlink passed directly is reported by the decoder).
    return [MediaItem(root, safe_name(root.name), media_kind(root))]


def safe_name(name: str) -> str:
    """``name`` with line breaks escaped: a file name may contain them, a ``results.csv`` row may not.

    Bytes that are not UTF-8 (Python keeps them as lone surrogates) become ``\\xNN``: UTF-8 files cannot
    hold them, and writing one used to abort the run.
    """
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        name = name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return name.replace("\n", "\\n").replace("\r", "\\r")


def _walk_folder(root: Path, exclude: Sequence[str | os.PathLike[str]]) -> list[MediaItem]:
    excluded = {os.path.realpath(p) for p in exclude}
    items: list[MediaItem] = []

    def on_error(exc: OSError) -> None:
        # An unreadable sub-folder cannot be listed; say so instead of silently missing its files.
        logger.warning("cannot list %s: %s", exc.filename, exc.strerror)

    # followlinks=False: a symlinked folder loop cannot make the walk infinite; symlinked files are kept.
    for dirpath, dirnames, filenames in os.walk(root, onerror=on_error, followlinks=False):
        dirnames[:] = [d for d in dirnames if os.path.realpath(os.path.join(dirpath, d)) not in excluded]
        for filename in filenames:
            path = Path(dirpath) / filename
            name = safe_name(path.relative_to(root).as_posix())
            items.append(MediaItem(path, name, media_kind(path)))
    items.sort(key=lambda item: item.name)
    return items


def read_list_file(list_path: Path) -> list[MediaItem]:
    """Read a list of paths: one per line, ``#`` comments and blank lines ignored, duplicates kept once.

    Relative paths are resolved against the list file's folder (so a list travels with its media); the
    ``name`` of each item is the line as written. The list order is kept: it is the user's chosen order.
    """
    try:
        text = list_path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(f"{list_path}: the list of paths is not UTF-8 text ({exc.reason})") from exc
    except OSError as exc:
        raise UsageError(f"{list_path}: cannot read the list of paths ({exc.strerror})") from exc
    return list(_items_from_lines(text.splitlines(), list_path.parent))


def _items_from_lines(lines: Iterable[str], base: Path) -> Iterable[MediaItem]:
    seen: set[str] = set()
    for raw in lines:
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line in seen:
            logger.warning("%s is listed more than once; it is processed once", line)
            continue
        seen.add(line)
        path = Path(line)
        if not path.is_absolute():
            path = base / path
        yield MediaItem(path, line, media_kind(path))
