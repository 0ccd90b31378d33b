"""Identity: a recording's content (the same bytes under any name are one recording) and this
process's (who holds a chunk)."""

from __future__ import annotations

import hashlib
import os
import socket
from dataclasses import dataclass

from daemon.files import open_regular

BLOCK = (
    1 << 20
)  # head and tail blocks hashed; enough to tell recordings apart, cheap on hours of video


@dataclass(frozen=True, slots=True)
class FileId:
    """What intake learns of a file's bytes: content fingerprint, size, mtime, and which file it
    was (`file_key`: device and inode, "dev:ino"), so a later reader can tell the same file from
    another one put at its path."""

    fingerprint: str
    size: int
    mtime: float
    file_key: str | None = None


def file_key(st: os.stat_result) -> str:
    """A file's identity on this host: device and inode of an open descriptor's fstat."""
    return f"{st.st_dev}:{st.st_ino}"


def fingerprint(path: str | os.PathLike[str]) -> FileId:
    """size + SHA-256 of the first and last MiB. Raises OSError when the file cannot be read, and
    files.NotRegularFile (an OSError) for a FIFO, a device or anything else that is not a
    regular file, without opening it or blocking."""
    with open(open_regular(path), "rb") as f:
        st = os.fstat(f.fileno())
        h = hashlib.sha256(str(st.st_size).encode())
        h.update(f.read(BLOCK))
        if st.st_size > BLOCK:
            f.seek(max(BLOCK, st.st_size - BLOCK))
            h.update(f.read(BLOCK))
    return FileId(
        fingerprint=f"{st.st_size:x}-{h.hexdigest()[:32]}",
        size=st.st_size,
        mtime=st.st_mtime,
        file_key=file_key(st),
    )


def owner_id() -> str:
    """This process as the holder of a chunk (store lease) or a stream consumer (Redis): host and
    pid, so a dead local owner is recognised at once and a restarted process is a new one."""
    return f"{socket.gethostname()}:{os.getpid()}"


def owner_is_dead(owner: str | None) -> bool:
    """True when `owner` (an owner_id) names a process of this host that no longer exists."""
    if not owner or ":" not in owner:
        return False
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False
