"""sha256 helpers: one implementation, and a cache whose owner decides how long it lives."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from mmdet_deploy.fileio import Sha256Cache, sha256_file


def test_sha256_cache_hashes_once_and_sees_changes(tmp_path: Path) -> None:
    path = tmp_path / "w.bin"
    path.write_bytes(b"a" * 1000)
    cache = Sha256Cache()
    assert cache(path) == sha256_file(path) == hashlib.sha256(b"a" * 1000).hexdigest()
    assert cache(str(path)) == cache(path) and len(cache) == 1
    path.write_bytes(b"b" * 1001)  # new size (and mtime): a new digest, never the stale one
    os.utime(path, ns=(1, 1))
    assert cache(path) == hashlib.sha256(b"b" * 1001).hexdigest() and len(cache) == 2
    assert len(Sha256Cache()) == 0  # no global state shared between owners
