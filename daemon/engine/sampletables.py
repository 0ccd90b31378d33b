"""An MP4's (ISO-BMFF's) sample tables checked against the file's size before FFmpeg reads them.

FFmpeg's demuxer trusts the counts in `stts`, `ctts`, `stsz`, `stsc` and `stco`: a table that
claims 60 million samples makes it allocate index entries for all of them (24 bytes each, plus
the tables themselves) before it notices that the file holds no such thing, and a few-KB file
takes gigabytes. Here every count is held to what the bytes can hold, reading only the boxes'
headers and the tables (which are inside the file, so bounded by it): an entry count must fit
its box, and the samples claimed, over all tracks, must average at least MIN_SAMPLE_BYTES of the
file each (no real audio or video sample is smaller on average).
"""

from __future__ import annotations

import struct
from typing import BinaryIO

MIN_SAMPLE_BYTES = 8
# Boxes whose children are boxes, on the way from moov to each track's sample tables.
_CONTAINERS = {b"moov", b"trak", b"mdia", b"minf", b"stbl"}
# Table -> bytes per entry after the 8 bytes of version, flags and entry count.
_ENTRY_BYTES = {b"stts": 8, b"ctts": 8, b"stsc": 12, b"stco": 4, b"co64": 8}
# What FFmpeg's mov demuxer accepts as a file's first box (an ftyp is not required: old
# QuickTime files, and a hostile file that leaves it out, start with moov or mdat).
_FIRST_BOXES = {b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot", b"uuid", b"styp"}
_MAX_TABLE = 1 << 28  # no legitimate sample table is anywhere near 256 MiB


def sample_table_problem(f: BinaryIO, size: int) -> str | None:
    """Why the sample tables of the ISO-BMFF/QuickTime file `f` (`size` bytes) cannot be true,
    or None (also for files that are not: FFmpeg decides those)."""
    f.seek(0)
    head = f.read(8)
    if len(head) < 8 or head[4:8] not in _FIRST_BOXES:
        return None
    claimed = {b"stts": 0, b"ctts": 0, b"stsz": 0, b"stsc": 0}
    for kind, start, end in _boxes(f, 0, size, depth=0):
        if kind not in _ENTRY_BYTES and kind not in (b"stsz", b"stz2"):
            continue
        if end - start > _MAX_TABLE:
            return f"malformed MP4: {kind.decode()} table of {end - start} bytes"
        f.seek(start)
        body = f.read(end - start)
        why = _table(kind, body, claimed, end - start)
        if why:
            return f"malformed MP4: {why}"
    limit = size // MIN_SAMPLE_BYTES
    for kind, n in claimed.items():
        if n > limit:
            return (
                f"malformed MP4: its {kind.decode()} table claims {n} samples, more than a file "
                f"of {size} bytes can hold"
            )
    return None


def _boxes(f: BinaryIO, start: int, end: int, depth: int):  # type: ignore[no-untyped-def]
    """(kind, payload start, payload end) of every box below `start`..`end`, descending into
    the containers on the way to the sample tables."""
    offset = start
    while offset + 8 <= end:
        f.seek(offset)
        header = f.read(16)
        if len(header) < 8:
            return
        box = int.from_bytes(header[:4], "big")
        kind = header[4:8]
        body = offset + 8
        if box == 1 and len(header) == 16:
            box, body = int.from_bytes(header[8:16], "big"), offset + 16
        elif box == 0:
            box = end - offset
        if box < body - offset or offset + box > end:
            return  # cut short or nonsense: FFmpeg reports the damage
        if kind in _CONTAINERS and depth < 8:
            yield from _boxes(f, body, offset + box, depth + 1)
        elif depth > 0:
            yield kind, body, offset + box
        offset += box


def _table(kind: bytes, body: bytes, claimed: dict[bytes, int], length: int) -> str | None:
    if len(body) < 8:
        return f"{kind.decode()} box too short"
    if kind in (b"stsz", b"stz2"):
        if len(body) < 12:
            return f"{kind.decode()} box too short"
        first, count = struct.unpack(">II", body[4:12])
        if kind == b"stz2":
            bits = first & 0xFF
            need = (count * bits + 7) // 8
        else:
            need = 0 if first else count * 4  # a constant size has no table
        if need > length - 12:
            return f"{kind.decode()} claims {count} sample sizes in a box of {length} bytes"
        claimed[b"stsz"] += count
        return None
    (entries,) = struct.unpack(">I", body[4:8])
    width = _ENTRY_BYTES[kind]
    if entries * width > length - 8:
        return f"{kind.decode()} claims {entries} entries in a box of {length} bytes"
    if kind in (b"stts", b"ctts"):
        claimed[kind] += sum(
            struct.unpack_from(">I", body, 8 + i * width)[0] for i in range(entries)
        )
    elif kind == b"stsc":
        # Samples per chunk, as if every run were one chunk long: a lower bound on what the
        # table claims, enough to catch a run of millions.
        claimed[kind] += sum(
            struct.unpack_from(">I", body, 8 + i * width + 4)[0] for i in range(entries)
        )
    return None
