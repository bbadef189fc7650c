"""Input discovery: a folder (recursive), a single file, or a text file listing paths.

Every file found becomes one :class:`MediaItem`, including files that are not media (they are reported
as ``skipped``, never silently dropped) and broken symbolic links (reported as errors by the decoder).
Symbolic links to folders are followed; a link back to a folder it lies in (a loop) is listed as one
``skipped`` item saying "symlink loop" instead of being walked for ever. The order is deterministic: sorted
by the ``name`` shown in ``results.csv`` (a POSIX-style path relative to INPUT, escaped by
:func:`~mmdet_deploy.runtime.names.escape_name`), so two runs over the same folder list files identically
and ``--resume`` is well defined.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from mmdet_deploy.errors import UsageError
from mmdet_deploy.runtime.names import escape_name

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
    file, always escaped by :func:`~mmdet_deploy.runtime.names.escape_name` (injective, so two files never
    share a name). ``path`` is where the file is read from. ``note`` says why a non-media item is listed
    (a symlink loop), when the extension is not the reason.
    """

    path: Path
    name: str
    kind: str
    note: str = ""

    @property
    def is_media(self) -> bool:
        return self.kind in (IMAGE, VIDEO)


def discover(input_path: str | os.PathLike[str], exclude: Sequence[str | os.PathLike[str]] = ()) -> list[MediaItem]:
    """List the files of INPUT in a deterministic order.

    ``exclude`` names directories never descended into (the output folder, when it lies inside INPUT, so a
    run does not list its own ``results.csv``). Raises :class:`UsageError` when INPUT does not exist or is
    one of the excluded folders (a run would list its own outputs).
    """
    root = Path(input_path)
    if not root.exists() and not root.is_symlink():
        raise UsageError(f"{escape_name(str(root))}: INPUT does not exist")
    if root.is_dir():
        for folder in exclude:
            check_out_not_input(root, folder)
        return _walk_folder(root, exclude)
    if root.suffix.lower() in LIST_EXTENSIONS:
        return read_list_file(root)
    # A single file, media or not (a broken symlink passed directly is reported by the decoder).
    return [MediaItem(root, escape_name(root.name), media_kind(root))]


def check_out_not_input(input_path: str | os.PathLike[str], out: str | os.PathLike[str]) -> None:
    """Refuse an output folder that is the INPUT folder itself (:class:`UsageError`).

    ``--out`` inside INPUT is fine (that sub-folder is not listed), but INPUT itself would list the run's own
    ``results.csv`` and friends as inputs on ``--resume``.
    """
    if os.path.isdir(input_path) and os.path.realpath(input_path) == os.path.realpath(out):
        raise UsageError(
            f"{escape_name(str(out))}: --out is the INPUT folder itself, so the run would list its own outputs; "
            "choose another folder (a sub-folder of INPUT is fine)"
        )


def _walk_folder(root: Path, exclude: Sequence[str | os.PathLike[str]]) -> list[MediaItem]:
    """Every file under ``root``, following symlinked folders except loops (a link to a folder on its own
    path, which would repeat for ever: listed as one ``skipped`` item instead)."""
    excluded = {os.path.realpath(p) for p in exclude}
    items: list[MediaItem] = []
    # (folder, real paths of it and of every folder above it up to root): a link into that chain is a loop.
    stack: list[tuple[Path, frozenset[str]]] = [(root, frozenset({os.path.realpath(root)}))]
    while stack:
        folder, chain = stack.pop()
        try:
            with os.scandir(folder) as listing:
                entries = list(listing)
        except OSError as exc:
            # An unreadable sub-folder cannot be listed; say so instead of silently missing its files.
            logger.warning("cannot list %s: %s", escape_name(str(folder)), exc.strerror or exc)
            continue
        for entry in entries:
            path = Path(entry.path)
            name = escape_name(path.relative_to(root).as_posix())
            try:
                is_dir = entry.is_dir(follow_symlinks=True)
            except OSError:  # a link chain that loops on itself: the decoder reports it per file
                is_dir = False
            if not is_dir:
                items.append(MediaItem(path, name, media_kind(path)))
                continue
            real = os.path.realpath(path)
            if real in excluded:
                continue
            if real in chain:
                note = f"symlink loop: this link points back to {escape_name(real)}, a folder on its own path"
                items.append(MediaItem(path, name, OTHER, note=note))
                continue
            stack.append((path, chain | {real}))
    items.sort(key=lambda item: item.name)
    return items


def read_list_file(list_path: Path) -> list[MediaItem]:
    """Read a list of paths: one per line, ``#`` comments and blank lines ignored, duplicates kept once.

    UTF-8, with or without a byte-order mark; LF or CRLF line ends. Each line is taken exactly as
    written, leading and trailing spaces included (they are part of a file name); a line that is blank or
    whose first non-space character is ``#`` is skipped (list a file whose name starts with ``#`` as
    ``./#name``). Relative paths are resolved against the list file's folder (so a list travels with its
    media); the ``name`` of each item is the line as written (escaped). The list order is kept.
    """
    shown = escape_name(str(list_path))
    try:
        if not stat.S_ISREG(os.stat(list_path).st_mode):  # reading a FIFO would wait for a writer
            raise UsageError(f"{shown}: the list of paths is not a regular file")
        # utf-8-sig: Windows editors start a file with a byte-order mark, which is not part of the first path.
        text = list_path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UsageError(f"{shown}: the list of paths is not UTF-8 text ({exc.reason})") from exc
    except OSError as exc:
        raise UsageError(f"{shown}: cannot read the list of paths ({exc.strerror})") from exc
    # Only "\n" (and the "\r" of "\r\n") ends a line: str.splitlines would also split inside a name on
    # form feeds, U+2028 and the like.
    lines = [line[:-1] if line.endswith("\r") else line for line in text.split("\n")]
    return list(_items_from_lines(lines, list_path.parent))


def _items_from_lines(lines: Iterable[str], base: Path) -> Iterable[MediaItem]:
    seen: set[str] = set()
    for line in lines:
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if line in seen:
            logger.warning("%s is listed more than once; it is processed once", escape_name(line))
            continue
        seen.add(line)
        path = Path(line)
        if not path.is_absolute():
            path = base / path
        yield MediaItem(path, escape_name(line), media_kind(path))
