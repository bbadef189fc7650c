"""Small file helpers shared by every stage (standard library only)."""

from __future__ import annotations

import hashlib
from pathlib import Path


def sha256_file(path: str | Path, chunk: int = 1 << 22) -> str:
    """Hex sha256 of a file, read in chunks (checkpoints and engines are hundreds of MB)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


class Sha256Cache:
    """:func:`sha256_file` remembered per (resolved path, size, mtime), for one owner (e.g. one benchmark
    run's artefact store) so that a multi-GB checkpoint is hashed once. A file that changes gets a new key,
    so a stale digest is never returned; the cache lives exactly as long as the object that holds it."""

    def __init__(self) -> None:
        self._digests: dict[tuple[str, int, int], str] = {}

    def __call__(self, path: str | Path) -> str:
        path = Path(path)
        st = path.stat()
        key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
        if key not in self._digests:
            self._digests[key] = sha256_file(path)
        return self._digests[key]

    def __len__(self) -> int:
        return len(self._digests)
