"""Helpers for the report tests: hostile file names, and reading a report page back with a real HTML parser."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

from PIL import Image

from runtime_fixtures import astronaut

#: Names a reviewer's folder may hold, each an attempt to inject markup, as results.csv will write them.
HOSTILE = (
    "x<script>alert(1)</script>.png",  # a folder 'x<script>alert(1)<' holding 'script>.png'
    "<img src=x onerror=alert(2)>.png",
    "quote\" & 'apos'.png",
    "latin1 \\xe9t\\xe9.png",  # on disk: the bytes b'latin1 \xe9t\xe9.png' (not UTF-8)
)


def add_hostile_files(root: Path) -> Path:
    """Write one real image under each of the :data:`HOSTILE` names into ``root``."""
    face = Image.fromarray(astronaut()).resize((256, 256))
    (root / "x<script>alert(1)<").mkdir()
    face.save(root / "x<script>alert(1)<" / "script>.png")
    face.save(root / "<img src=x onerror=alert(2)>.png")
    Image.new("RGB", (96, 64), (200, 40, 40)).save(root / "quote\" & 'apos'.png")
    with open(os.path.join(os.fsencode(root), b"latin1 \xe9t\xe9.png"), "wb") as handle:
        face.save(handle, format="PNG")
    return root


def copy_folder(source: Path, target: Path) -> Path:
    """A copy of a test input folder (symbolic links kept as links, broken ones included)."""
    shutil.copytree(source, target, symlinks=True)
    return target


@dataclass
class ReportRow:
    name: str
    status: str
    prob: str
    href: str | None = None
    has_crops: bool = False
    has_frame: bool = False
    has_face_box: bool = False
    has_timeline: bool = False
    text: list[str] = field(default_factory=list)


class ReportParser(HTMLParser):
    """Collects the table rows, every tag name, and every attribute name of a report page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.rows: list[ReportRow] = []
        self.tags: list[str] = []
        self.attributes: set[str] = set()
        self.text: list[str] = []
        self._row: ReportRow | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        self.tags.append(tag)
        self.attributes.update(name for name, _ in attrs)
        if tag == "tr" and "data-status" in values:
            name, status, prob = (values.get(k) or "" for k in ("data-name", "data-status", "data-p"))
            self._row = ReportRow(name, status, prob)
            self.rows.append(self._row)
        elif self._row is not None:
            classes = (values.get("class") or "").split()
            if tag == "a" and "orig" in classes:
                self._row.href = values.get("href")
            self._row.has_crops |= tag == "img" and "crops" in classes
            self._row.has_frame |= tag == "svg" and "frame" in classes
            self._row.has_face_box |= tag == "rect" and "face" in classes
            self._row.has_timeline |= tag == "svg" and "tl" in classes

    def handle_endtag(self, tag: str) -> None:
        if tag == "tr":
            self._row = None

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._row is not None:
            self._row.text.append(data)


def parse_report(path: Path) -> ReportParser:
    parser = ReportParser()
    parser.feed(path.read_text(encoding="utf-8"))
    parser.close()
    return parser
