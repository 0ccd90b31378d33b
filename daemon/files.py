"""Files someone else put in a watched folder: opened only when they are regular files, without
blocking, and their names printed without letting them steer a terminal.

Whoever can write a watched folder can put a FIFO there (an `open()` for reading blocks until a
writer appears: for ever), a device node, a name that is not UTF-8 (the store cannot keep it) or a
name with terminal escape sequences and newlines. Every reader of a recording's bytes (identity's
fingerprint, the probe, the sampler, the audio reader) opens it through `open_regular`, so none of
them can block or read anything but a regular file.
"""

from __future__ import annotations

import os
import stat
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager

_KINDS = {
    stat.S_IFIFO: "a FIFO (named pipe)",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
    stat.S_IFDIR: "a directory",
}


class NotRegularFile(OSError):
    """The path names something that is not a regular file; `reason` says what, for a person."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(reason)
        self.path = path
        self.reason = reason

    def __str__(self) -> str:
        return self.reason


def not_regular(mode: int) -> str | None:
    """Why a file of this st_mode cannot be a recording, or None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    kind = _KINDS.get(stat.S_IFMT(mode), "not a regular file")
    return f"not a regular file: it is {kind}" if kind in _KINDS.values() else kind


def check_regular(path: str | os.PathLike[str]) -> os.stat_result:
    """`stat` of the file at `path` (a symlink's target), which must be a regular file. Never
    opens it, so never blocks. Raises NotRegularFile, or OSError when it is not there."""
    st = os.stat(path)
    why = not_regular(st.st_mode)
    if why is not None:
        raise NotRegularFile(os.fspath(path), why)  # type: ignore[arg-type]
    return st


def open_regular(path: str | os.PathLike[str]) -> int:
    """A read-only descriptor of the regular file at `path`, opened without blocking.

    `lstat` first: a path that is not a symlink is opened with O_NOFOLLOW, so a link swapped in
    afterwards is refused; a symlink (the watcher's policy decided it may be followed) must point
    at a regular file. O_NONBLOCK makes even a FIFO swapped in after the check open at once, and
    the `fstat` of the open descriptor is what decides. Raises NotRegularFile or OSError."""
    p = os.fspath(path)
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC
    if not stat.S_ISLNK(os.lstat(p).st_mode):
        flags |= os.O_NOFOLLOW
    check_regular(p)
    fd = os.open(p, flags)
    try:
        why = not_regular(os.fstat(fd).st_mode)
        if why is not None:
            raise NotRegularFile(str(p), why)
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


@contextmanager
def regular_path(path: str | os.PathLike[str]) -> Iterator[str]:
    """A name for FFmpeg that reaches exactly the regular file `open_regular` opened (its
    /proc/self/fd entry), valid inside the `with`: FFmpeg opens that descriptor's file, never a
    FIFO or a file swapped in after the check. Where /proc is missing, the checked path itself."""
    fd = open_regular(path)
    try:
        link = f"/proc/self/fd/{fd}"
        yield link if os.path.exists(link) else os.fspath(path)  # type: ignore[misc]
    finally:
        os.close(fd)


def printable(name: str | bytes) -> str:
    """A file name (or any text from outside) as it is safe to print on a terminal: bytes that
    are not UTF-8 as \\xNN, control and format characters (escape sequences, newlines, bidi
    overrides) as \\xNN, \\uNNNN or \\UNNNNNNNN. Printable text, spaces and backslashes
    included, is left as it is, so text escaped once prints the same again (a stored escaped
    name is not escaped twice); a name that itself spells `\\xff` reads like the byte 0xff."""
    text = os.fsdecode(name) if isinstance(name, bytes) else name
    if text.isprintable():
        return text  # the common case, at C speed (`framewatch events` prints 100,000 lines)
    out = []
    for ch in text:
        code = ord(ch)
        if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8 (surrogateescape)
            out.append(f"\\x{code - 0xDC00:02x}")
        elif ch == " " or unicodedata.category(ch)[0] not in "CZ":
            out.append(ch)
        elif code < 0x100:
            out.append(f"\\x{code:02x}")
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    return "".join(out)


def storable(path: str) -> bool:
    """Whether a path can be stored and printed as text: it was valid UTF-8 on disk (no lone
    surrogates from Python's surrogateescape decoding of the bytes)."""
    return not _has_surrogates(path)


def _has_surrogates(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False
