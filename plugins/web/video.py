"""The video route's file: opened without following a link, checked on the open descriptor, and
streamed from that same descriptor (with HTTP Range), so the file that was checked is the file
that is sent.

Checking a path and then opening it by name (what Starlette's FileResponse does) leaves a gap in
which the path can be swapped for a symlink to /etc/passwd or to the web token, of the same size.
Here the path is opened once with O_NOFOLLOW (a symlink as the last component fails with ELOOP)
and O_NONBLOCK (a FIFO put there cannot hang the open), and the descriptor's fstat must show a
regular file of the registered size and, where intake recorded it, the registered device and
inode. Every byte then comes from that descriptor (pread), never from the path again.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import weakref
from collections.abc import AsyncGenerator, Mapping
from email.utils import formatdate
from secrets import token_hex
from typing import Any

import anyio
import anyio.to_thread
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
# A recording is streamed while it waits, is analysed or is done; a failed (or skipped) one is not
# media framewatch accepted, and its file is served to nobody.
SERVED_STATES = ("queued", "analyzing", "done")
CHUNK = 64 * 1024
MAX_RANGES = 100  # more parts than this in one Range header: the whole file instead (Starlette's)


class Refused(Exception):
    """The registered path is not the registered file (any more); the message says why."""


class Opened:
    """An open descriptor of a checked file and its fstat; closed once, at the latest when
    garbage-collected."""

    def __init__(self, fd: int, st: os.stat_result):
        self.fd, self.st = fd, st
        self._close = weakref.finalize(self, os.close, fd)

    def close(self) -> None:
        self._close()

    @property
    def closed(self) -> bool:
        return not self._close.alive


def file_key(st: os.stat_result) -> str:
    """Device and inode, as intake records them (daemon.identity.file_key)."""
    return f"{st.st_dev}:{st.st_ino}"


def open_registered(path: str, size: int, key: str | None) -> Opened:
    """Open `path` if it is still the file registered there: not a symlink, a regular file of
    `size` bytes and, when `key` is known ("dev:ino", recorded at intake since revision 0004),
    that very file. Raises Refused with the reason otherwise."""
    try:
        fd = os.open(path, OPEN_FLAGS)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise Refused("is a symbolic link now") from None
        if exc.errno == errno.ENOENT:
            raise Refused("is gone") from None
        raise Refused(f"cannot be opened: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise Refused("is not a regular file now")
        if st.st_size != size:
            raise Refused(f"has {st.st_size} bytes, {size} were registered")
        if key is not None and file_key(st) != key:
            raise Refused(f"is another file (device:inode {file_key(st)}, registered {key})")
    except BaseException:
        os.close(fd)
        raise
    return Opened(fd, st)


def read_picture(path: str | os.PathLike[str], limit: int = 4 * 1024 * 1024) -> bytes | None:
    """A small file framewatch wrote (an event's thumbnail), read the way the video is opened:
    no symlink followed, no FIFO waited on, a regular file of at most `limit` bytes. None when
    there is no such file."""
    try:
        fd = os.open(path, OPEN_FLAGS)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > limit:
            return None
        chunks, left = [], st.st_size
        while left > 0:
            got = os.pread(fd, left, st.st_size - left)
            if not got:
                break
            chunks.append(got)
            left -= len(got)
        return b"".join(chunks)
    finally:
        os.close(fd)


# -- HTTP Range (RFC 9110 section 14), as Starlette's FileResponse answered it before --------------


class BadRange(Exception):
    def __init__(self, status: int, detail: str, size: int):
        super().__init__(detail)
        self.status, self.detail, self.size = status, detail, size

    def response(self) -> Response:
        if self.status == 416:
            return PlainTextResponse(
                status_code=416, headers={"Content-Range": f"bytes */{self.size}"}
            )
        return PlainTextResponse(self.detail, status_code=self.status)


def byte_ranges(header: str, size: int) -> list[tuple[int, int]]:
    """The [start, end) ranges a Range header asks for, merged and sorted when several; [] for
    the whole file. Raises BadRange: 400 for a malformed header, 416 when a range starts past
    the end."""
    units, sep, spec = header.partition("=")
    if not sep:
        raise BadRange(400, "Malformed range header.", size)
    if units.strip().lower() != "bytes":
        raise BadRange(400, "Only support bytes range", size)
    parts = spec.split(",")
    if len(parts) > MAX_RANGES:
        return []
    ranges: list[tuple[int, int]] = []
    for part in (p.strip() for p in parts):
        first, dash, last = part.partition("-")
        first, last = first.strip(), last.strip()
        if not dash or not (first or last):
            continue
        if not (first.isascii() and last.isascii()):
            continue  # int() would take other digits ("²", "٣"); a Range header has ASCII ones
        try:
            if first:
                start = int(first)
                end = int(last) + 1 if last and int(last) < size else size
            else:
                start, end = max(size - int(last), 0), size
        except ValueError:
            continue
        ranges.append((start, end))
    if not ranges:
        raise BadRange(400, "Range header: range must be requested", size)
    if any(not 0 <= start < size for start, _ in ranges):
        raise BadRange(416, "Range not satisfiable", size)
    if any(start >= end for start, end in ranges):
        raise BadRange(400, "Range header: start must be less than end", size)
    if len(ranges) == 1:
        return ranges
    ranges.sort()
    merged = [ranges[0]]
    for start, end in ranges[1:]:
        last_start, last_end = merged[-1]
        if start <= last_end:
            merged[-1] = (last_start, max(last_end, end))
        else:
            merged.append((start, end))
    return merged


def _validators(st: os.stat_result) -> dict[str, str]:
    etag = hashlib.md5(f"{st.st_mtime}-{st.st_size}".encode(), usedforsecurity=False).hexdigest()
    return {"last-modified": formatdate(st.st_mtime, usegmt=True), "etag": f'"{etag}"'}


class DescriptorResponse(StreamingResponse):
    """Sends segments of an open file (literal bytes, or (start, end) byte ranges read with
    pread) and closes the descriptor when the response ends, however it ends (client gone,
    server stopping). Starlette's StreamingResponse stops reading when the client disconnects."""

    def __init__(
        self,
        opened: Opened,
        segments: list[bytes | tuple[int, int]],
        status_code: int,
        headers: Mapping[str, str],
    ):
        self.opened = opened
        self._body = self._read(segments)
        super().__init__(self._body, status_code=status_code, headers=headers)

    async def _read(self, segments: list[bytes | tuple[int, int]]) -> AsyncGenerator[bytes, None]:
        fd = self.opened.fd
        for seg in segments:
            if isinstance(seg, bytes):
                yield seg
                continue
            pos, end = seg
            while pos < end:
                chunk = await anyio.to_thread.run_sync(os.pread, fd, min(CHUNK, end - pos), pos)
                if not chunk:
                    # Truncated since it was checked: the promised length cannot be kept, so the
                    # response is cut off (the client sees an incomplete body, never other bytes).
                    raise OSError(f"file shrank while streaming (at byte {pos} of {end})")
                pos += len(chunk)
                yield chunk

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            with anyio.CancelScope(shield=True):
                await self._body.aclose()
            self.opened.close()


def file_response(opened: Opened, request_headers: Mapping[str, str], media_type: str) -> Response:
    """The response for a checked, open file: 200 with all of it, 206 with the requested range(s)
    (multipart/byteranges for several), 400 or 416 for a Range header that cannot be served.
    `If-Range` with another validator gets the whole file. Takes ownership of `opened`."""
    st, size = opened.st, opened.st.st_size
    validators = _validators(st)
    headers: dict[str, Any] = {"accept-ranges": "bytes", **validators}
    wanted = request_headers.get("range")
    if_range = request_headers.get("if-range")
    if if_range is not None and (if_range.startswith("W/") or if_range not in validators.values()):
        wanted = None
    try:
        ranges = byte_ranges(wanted, size) if wanted is not None else []
    except BadRange as exc:
        opened.close()
        return exc.response()
    if not ranges:
        headers.update({"content-type": media_type, "content-length": str(size)})
        return DescriptorResponse(opened, [(0, size)], 200, headers)
    if len(ranges) == 1:
        ((start, end),) = ranges
        headers.update(
            {
                "content-type": media_type,
                "content-length": str(end - start),
                "content-range": f"bytes {start}-{end - 1}/{size}",
            }
        )
        return DescriptorResponse(opened, [(start, end)], 206, headers)
    boundary = token_hex(13)
    segments: list[bytes | tuple[int, int]] = []
    length = 0
    for start, end in ranges:
        head = (
            f"--{boundary}\r\nContent-Type: {media_type}\r\n"
            f"Content-Range: bytes {start}-{end - 1}/{size}\r\n\r\n"
        ).encode("latin-1")
        segments += [head, (start, end), b"\r\n"]
        length += len(head) + (end - start) + 2
    tail = f"--{boundary}--".encode("latin-1")
    segments.append(tail)
    headers.update(
        {
            "content-type": f"multipart/byteranges; boundary={boundary}",
            "content-length": str(length + len(tail)),
        }
    )
    return DescriptorResponse(opened, segments, 206, headers)
