"""Synthetic recordings: solid-colour scenes at known times, and broken inputs (selftest, tests, bench).

Everything is written with PyAV (no ffmpeg CLI), small and fast, so any test may call these freely
on a shared machine.
"""

from __future__ import annotations

import random
import re
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

import av
import numpy as np

if TYPE_CHECKING:
    from collections.abc import Sequence

Color = tuple[int, int, int]

RED: Color = (255, 0, 0)
GREEN: Color = (0, 255, 0)
BLUE: Color = (0, 0, 255)

# Irregular frame gaps for vfr=True, in units of VFR_TIME_BASE: 1/30 s then 1/5 s, repeating.
VFR_TIME_BASE = Fraction(1, 90000)
VFR_GAPS = (3000, 18000)

# Stored size of the 'huge' bad input: two bytes wide in both the Matroska and JPEG headers, so
# the declared size can be patched in place without moving any other byte.
_HUGE_STORED = 256
HUGE_SIDE = 16000


def make_video(
    path: str | Path,
    *,
    seconds: float,
    fps: int = 10,
    size: tuple[int, int] = (160, 90),
    codec: str = "libx264",
    scenes: Sequence[tuple[float, Color]] | None = None,
    bottom: Color | None = None,
    counter: bool = False,
    gop: int | None = None,
    rotation: int = 0,
    vfr: bool = False,
    container_options: dict[str, str] | None = None,
) -> Path:
    """Write a short clip of solid-colour scenes and return its path.

    The container follows the suffix of `path` (.mp4, .mkv, ...).

    - `size`: (width, height) of the upright picture, as a viewer sees it.
    - `scenes`: (start_s, rgb) pairs sorted by start; a frame shows the colour of the last scene
      starting at or before its PTS. Default: one red scene.
    - `bottom`: if given, the bottom half of the upright picture has this colour, so a test can
      tell whether a frame came out upside down or sideways.
    - `counter`: draw the frame index as a row of black/white squares along the top-left edge, so
      consecutive frames differ (the rest of the picture stays solid).
    - `gop`: keyframe interval in frames (encoder default if None).
    - `rotation`: clockwise degrees (0, 90, 180, 270) a player must turn the stored picture to show
      it upright, stored as the stream's display matrix. The pixels are stored turned the other
      way, like a phone held sideways, so a reader that honours the matrix sees `size` upright.
    - `vfr`: irregular PTS (gaps alternate 1/30 s and 1/5 s, see VFR_GAPS) in a 1/90000 time base;
      `fps` then only sets the nominal rate given to the encoder.
    - `codec`: falls back to "mpeg4" when the requested encoder is not built in.
    - `container_options`: passed to the muxer (e.g. {"live": "1"} for Matroska without duration).
    """
    if rotation not in (0, 90, 180, 270):
        raise ValueError(f"rotation must be 0, 90, 180 or 270, not {rotation}")
    path = Path(path)
    scenes = list(scenes) if scenes else [(0.0, RED)]
    width, height = size
    # Encoders want even sides for 4:2:0.
    if width % 2 or height % 2:
        raise ValueError(f"size must be even, got {size}")
    if codec not in av.codecs_available:
        codec = "mpeg4"

    times = _frame_times(seconds, fps, vfr)
    time_base = VFR_TIME_BASE if vfr else Fraction(1, fps)
    stored_w, stored_h = (height, width) if rotation in (90, 270) else (width, height)

    with av.open(str(path), "w", container_options=container_options or {}) as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height = stored_w, stored_h
        stream.pix_fmt = "yuv420p"
        stream.time_base = time_base
        stream.codec_context.time_base = time_base
        if gop is not None:
            stream.codec_context.gop_size = gop
        if codec == "libx264":
            # veryfast keeps B-frames (so PTS != DTS, as in real files); one thread because the
            # test machine is shared.
            options = {"preset": "veryfast", "threads": "1"}
            if gop is not None:
                # Without this x264 also cuts a keyframe at each scene change.
                options["sc_threshold"] = "0"
            stream.codec_context.options = options
        if rotation:
            # set_display_rotation takes counter-clockwise degrees.
            stream.set_display_rotation(-rotation)

        for index, t in enumerate(times):
            colour = _colour_at(scenes, t)
            upright = _picture(width, height, colour, bottom, index if counter else None)
            # np.rot90 turns counter-clockwise, i.e. undoes a clockwise display rotation.
            stored = np.ascontiguousarray(np.rot90(upright, k=rotation // 90))
            frame = av.VideoFrame.from_ndarray(stored, format="rgb24")
            frame.pts = round(t / time_base)
            frame.time_base = time_base
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


# Kinds of event make_static_scene can plant.
EVENT_KINDS = ("object", "flash", "scene")


def make_static_scene(
    path: str | Path,
    *,
    seconds: float,
    events: Sequence[tuple[float, float, str]],
    fps: int = 5,
    size: tuple[int, int] = (160, 90),
    gop: int = 600,
    seed: int = 7,
) -> Path:
    """Write a mostly static recording (a fixed textured background) with planted events.

    `events`: (start_s, duration_s, kind) with kind one of EVENT_KINDS: "object" (a dark box
    appears for the duration), "flash" (a bar of text-like stripes shows for the duration),
    "scene" (the background changes for good at start_s; duration ignored). Long GOPs and a
    tiny picture keep a two-hour file quick to write (the activity bench and tests use it).
    """
    path = Path(path)
    width, height = size
    if width % 2 or height % 2:
        raise ValueError(f"size must be even, got {size}")
    for _, _, kind in events:
        if kind not in EVENT_KINDS:
            raise ValueError(f"unknown event kind {kind!r}; one of {', '.join(EVENT_KINDS)}")
    rng = np.random.default_rng(seed)
    # Low-contrast blocks: a picture with texture (like a real room), identical in every frame.
    blocks = rng.integers(90, 140, size=(height // 6 + 1, width // 8 + 1, 3), dtype=np.uint8)
    background = np.repeat(np.repeat(blocks, 6, axis=0), 8, axis=1)[:height, :width]
    scene_changes = sorted(t for t, _, kind in events if kind == "scene")
    spans = [(t, t + d, kind) for t, d, kind in events if kind != "scene"]
    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    n = max(1, round(seconds * fps))
    cache: dict[tuple[int, tuple[str, ...]], av.VideoFrame] = {}
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p"
        stream.codec_context.gop_size = gop
        if codec == "libx264":
            stream.codec_context.options = {"preset": "veryfast", "threads": "1", "sc_threshold": "0"}
        for i in range(n):
            t = i / fps
            scene = sum(1 for c in scene_changes if c <= t + 1e-9)
            showing = tuple(kind for a, b, kind in spans if a <= t + 1e-9 < b)
            key = (scene, showing)
            if key not in cache:
                picture = background.copy() if scene == 0 else np.roll(255 - background, scene * 13, axis=1)
                if "object" in showing:
                    picture[height // 3 : height // 3 + height // 3, width // 3 : width // 3 + width // 5] = 20
                if "flash" in showing:
                    bar = picture[height - height // 4 :, width // 8 : width - width // 8]
                    bar[:] = 250
                    bar[2:-2, ::3] = 0
                # Only a handful of distinct pictures exist: build each once.
                cache[key] = av.VideoFrame.from_ndarray(np.ascontiguousarray(picture), format="rgb24")
            frame = cache[key]
            frame.pts = i
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def vfr_times(seconds: float) -> list[float]:
    """The exact frame times make_video(vfr=True) writes for a clip of `seconds`."""
    return _frame_times(seconds, 0, vfr=True)


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


def _frame_times(seconds: float, fps: int, vfr: bool) -> list[float]:
    if not vfr:
        return [i / fps for i in range(max(1, round(seconds * fps)))]
    ticks, times = 0, []
    while ticks * VFR_TIME_BASE < seconds:
        times.append(float(ticks * VFR_TIME_BASE))
        ticks += VFR_GAPS[(len(times) - 1) % 2]
    return times


def _colour_at(scenes: Sequence[tuple[float, Color]], t: float) -> Color:
    colour = scenes[0][1]
    for start, scene_colour in scenes:
        # A small tolerance so a frame whose PTS is exactly a scene start belongs to that scene.
        if start <= t + 1e-9:
            colour = scene_colour
    return colour


def _picture(
    width: int, height: int, colour: Color, bottom: Color | None, index: int | None
) -> np.ndarray:
    picture = np.empty((height, width, 3), dtype=np.uint8)
    picture[:] = colour
    if bottom is not None:
        picture[height // 2 :] = bottom
    if index is not None:
        square = 4
        for bit in range(min(16, width // square)):
            shade = 255 if index >> bit & 1 else 0
            picture[:square, bit * square : (bit + 1) * square] = shade
    return picture


def _patch_once(data: bytearray, old: bytes, new: bytes) -> None:
    at = data.find(old)
    if at < 0 or data.find(old, at + 1) >= 0:
        raise RuntimeError(f"expected exactly one {old.hex()} in the file")
    data[at : at + len(old)] = new
