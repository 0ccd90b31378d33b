"""Content identity of a recording: the same bytes under any name are one recording."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

BLOCK = 1 << 20  # head and tail blocks hashed; enough to tell recordings apart, cheap on hours of video


@dataclass(frozen=True, slots=True)
class FileId:
    fingerprint: str
    size: int
    mtime: float


def fingerprint(path: str | os.PathLike[str]) -> FileId:
    """size + SHA-256 of the first and last MiB. Raises OSError when the file cannot be read."""
    with open(path, "rb") as f:
        st = os.fstat(f.fileno())
        h = hashlib.sha256(str(st.st_size).encode())
        h.update(f.read(BLOCK))
        if st.st_size > BLOCK:
            f.seek(max(BLOCK, st.st_size - BLOCK))
            h.update(f.read(BLOCK))
    return FileId(fingerprint=f"{st.st_size:x}-{h.hexdigest()[:32]}", size=st.st_size, mtime=st.st_mtime)
