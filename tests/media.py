"""Test media: the clip generator of daemon.selftest.clips, and the broken inputs only tests need
(empty, random, text, truncated MP4, audio only, a header declaring a huge picture)."""

from __future__ import annotations

import random
import re
import struct
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from daemon.selftest.clips import (  # noqa: F401
    BLUE,
    GREEN,
    RED,
    VFR_GAPS,
    VFR_TIME_BASE,
    make_video,
    vfr_times,
)

# Stored size of the 'huge' bad input: two bytes wide in both the Matroska and JPEG headers, so
# the declared size can be patched in place without moving any other byte.
_HUGE_STORED = 256
HUGE_SIDE = 16000


def make_audio_only(path: str | Path, *, seconds: float = 0.5) -> Path:
    """Write an AAC-only file (a 440 Hz tone) and return its path."""
    path = Path(path)
    rate = 16000
    with av.open(str(path), "w") as out:
        stream = out.add_stream("aac", rate=rate)
        stream.layout = "mono"
        samples = np.sin(2 * np.pi * 440 * np.arange(int(seconds * rate)) / rate).astype(np.float32)
        block = 1024  # the AAC frame size
        for start in range(0, len(samples), block):
            chunk = samples[start : start + block]
            frame = av.AudioFrame.from_ndarray(chunk[np.newaxis, :], format="fltp", layout="mono")
            frame.sample_rate = rate
            frame.pts = start
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def make_huge_header(path: str | Path, side: int = HUGE_SIDE) -> Path:
    """Write a one-frame MJPEG Matroska file whose headers declare `side` x `side` pixels.

    The frame is encoded at 256x256 and then the size is patched in both the Matroska track
    header and the JPEG SOF marker, so the file is a few KB and costs nothing to make, but any
    reader that trusts the header would allocate a `side` x `side` picture.
    """
    if not _HUGE_STORED <= side <= 0xFFFF:
        raise ValueError(f"side must fit in two bytes and be >= {_HUGE_STORED}")
    path = Path(path)
    with av.open(str(path), "w", format="matroska") as out:
        stream = out.add_stream("mjpeg", rate=1)
        stream.width = stream.height = _HUGE_STORED
        stream.pix_fmt = "yuvj420p"
        picture = np.full((_HUGE_STORED, _HUGE_STORED, 3), 128, dtype=np.uint8)
        frame = av.VideoFrame.from_ndarray(picture, format="rgb24").reformat(format="yuvj420p")
        frame.pts = 0
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)

    data = bytearray(path.read_bytes())
    old = _HUGE_STORED.to_bytes(2, "big")
    new = side.to_bytes(2, "big")
    # Matroska PixelWidth (0xB0) and PixelHeight (0xBA), each with a 2-byte payload (size 0x82).
    for element_id in (b"\xb0", b"\xba"):
        _patch_once(data, element_id + b"\x82" + old, element_id + b"\x82" + new)
    # JPEG baseline SOF0: FFC0, 2-byte length, 1-byte precision, then height and width.
    sof = re.search(rb"\xff\xc0..\x08" + re.escape(old + old), bytes(data), re.DOTALL)
    if sof is None:
        raise RuntimeError("no SOF0 marker with the expected size in the MJPEG frame")
    data[sof.end() - 4 : sof.end()] = new + new
    path.write_bytes(bytes(data))
    return path


def make_bad_inputs(directory: str | Path) -> dict[str, Path]:
    """Write one file per way a recording can be unusable and return them by name.

    Names: "empty" (0 bytes), "random" (random bytes), "text" (prose), "truncated" (an MP4 cut
    before its moov atom), "audio_only" (AAC only), "huge" (header declares 16000x16000). The first
    four carry a .mp4 suffix, as a misnamed upload would.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}

    files["empty"] = directory / "empty.mp4"
    files["empty"].write_bytes(b"")

    files["random"] = directory / "random.mp4"
    # Fixed seed: some random buffers happen to look like MP3 frames to FFmpeg's probe.
    files["random"].write_bytes(random.Random(20240601).randbytes(64 * 1024))

    files["text"] = directory / "text.mp4"
    files["text"].write_text("Meeting notes\n\nThe camera in hall B was moved on Tuesday.\n" * 40)

    whole = make_video(directory / "whole.mp4", seconds=2.0, counter=True)
    data = whole.read_bytes()
    whole.unlink()
    # MP4 muxers put moov after the media data, so a copy cut short has none, as when a camera
    # loses power mid-recording. Solid colours compress so well that moov may start before 60%;
    # cut before it then.
    moov = data.find(b"moov") - 4
    files["truncated"] = directory / "truncated.mp4"
    files["truncated"].write_bytes(data[: min(int(len(data) * 0.6), moov)])

    files["audio_only"] = make_audio_only(directory / "audio_only.m4a")
    files["huge"] = make_huge_header(directory / "huge.mkv")
    return files


def make_timed_frames(path: str | Path, times: list[float], side: int = 64) -> Path:
    """A Matroska MJPEG file with one frame at each of `times` (seconds, set as the frames' PTS):
    `[0, 1, 1e6]` is a 3-frame file of a few KB whose last timestamp claims 11 days."""
    path = Path(path)
    with av.open(str(path), "w", format="matroska") as out:
        stream = out.add_stream("mjpeg", rate=1)
        stream.width = stream.height = side
        stream.pix_fmt = "yuvj420p"
        for i, t in enumerate(times):
            picture = np.full((side, side, 3), (70 * i) % 256, np.uint8)
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
            frame.pts, frame.time_base = round(t * 1000), Fraction(1, 1000)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def make_sample_count_bomb(source: str | Path, path: str | Path, count: int = 60_000_000) -> Path:
    """A copy of the MP4 `source` whose sample tables claim `count` samples: the first stts
    entry's count, stsz as `count` samples of one byte (a constant size needs no table) and the
    first stsc run's samples per chunk. Only those fields change; the file stays a few KB."""
    data = bytearray(Path(source).read_bytes())
    for kind, at, value in (
        (b"stts", 16, (count,)),
        (b"stsz", 12, (1, count)),
        (b"stsc", 20, (count,)),
    ):
        box = data.find(kind) - 4
        if box < 0 or data.find(kind, box + 5) >= 0:
            raise RuntimeError(f"expected exactly one {kind.decode()} box in {source}")
        struct.pack_into(f">{len(value)}I", data, box + at, *value)
    Path(path).write_bytes(data)
    return Path(path)


def _patch_once(data: bytearray, old: bytes, new: bytes) -> None:
    at = data.find(old)
    if at < 0 or data.find(old, at + 1) >= 0:
        raise RuntimeError(f"expected exactly one {old.hex()} in the file")
    data[at : at + len(old)] = new
