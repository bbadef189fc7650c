"""Input discovery: folders, single files, lists; extension tables; deterministic order."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mmdet_deploy.errors import UsageError
from mmdet_deploy.runtime.discovery import IMAGE, OTHER, VIDEO, discover, media_kind


def _touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    ("name", "kind"),
    [("a.JPG", IMAGE), ("a.jpeg", IMAGE), ("a.PnG", IMAGE), ("a.bmp", IMAGE), ("a.webp", IMAGE),
     ("a.MP4", VIDEO), ("a.avi", VIDEO), ("a.mov", VIDEO), ("a.MKV", VIDEO), ("a.webm", VIDEO),
     ("a.gif", OTHER), ("a.txt", OTHER), ("noext", OTHER), ("a.mp4.part", OTHER)],
)
def test_media_kind_is_case_insensitive_and_exact(name: str, kind: str) -> None:
    assert media_kind(name) == kind


def test_folder_is_recursive_sorted_and_lists_everything(tmp_path: Path) -> None:
    root = tmp_path / "in"
    for rel in ["z.mp4", "a/b.png", "a/c d é.jpg", "B.webm", "notes.txt", "a/deep/x.MOV"]:
        _touch(root / rel)
    os.symlink(root / "missing.mp4", root / "broken.mp4")
    items = discover(root)
    names = [i.name for i in items]
    assert names == sorted(names)
    assert set(names) == {"z.mp4", "a/b.png", "a/c d é.jpg", "B.webm", "notes.txt", "a/deep/x.MOV", "broken.mp4"}
    kinds = {i.name: i.kind for i in items}
    assert kinds["notes.txt"] == OTHER and kinds["broken.mp4"] == VIDEO and kinds["a/deep/x.MOV"] == VIDEO
    assert discover(root) == items  # deterministic


def test_output_folder_inside_input_is_not_listed(tmp_path: Path) -> None:
    _touch(tmp_path / "a.png")
    _touch(tmp_path / "out" / "results.csv")
    names = [i.name for i in discover(tmp_path, exclude=[tmp_path / "out"])]
    assert names == ["a.png"]


def test_single_file_input(tmp_path: Path) -> None:
    video = _touch(tmp_path / "clip one.mp4")
    (item,) = discover(video)
    assert item.name == "clip one.mp4" and item.kind == VIDEO and item.path == video


def test_list_file_resolves_relative_to_itself_and_keeps_order(tmp_path: Path) -> None:
    _touch(tmp_path / "media" / "b.png")
    absolute = _touch(tmp_path / "elsewhere" / "a.mp4")
    listing = tmp_path / "media" / "list.txt"
    listing.write_text(f"# my files\nb.png\n\n{absolute}\nb.png\nmissing.jpg\nreadme.md\n", encoding="utf-8")
    items = discover(listing)
    assert [i.name for i in items] == ["b.png", str(absolute), "missing.jpg", "readme.md"]
    assert items[0].path == tmp_path / "media" / "b.png"
    assert items[2].path == tmp_path / "media" / "missing.jpg"  # reported later by the decoder, not dropped
    assert items[3].kind == OTHER


def test_list_file_that_is_not_text(tmp_path: Path) -> None:
    listing = _touch(tmp_path / "list.txt", b"\xff\xfe\x00bad")
    with pytest.raises(UsageError, match="not UTF-8"):
        discover(listing)


def test_missing_input_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="does not exist"):
        discover(tmp_path / "nope")


def test_line_breaks_in_names_are_escaped(tmp_path: Path) -> None:
    _touch(tmp_path / "two\nlines.png")
    (item,) = discover(tmp_path)
    assert item.name == "two\\nlines.png" and "\n" not in item.name
    assert item.path.exists()
