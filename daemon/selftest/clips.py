"""Synthetic recordings: solid-colour scenes at known times, and mostly static scenes with planted
events (selftest, tests, bench).

Everything is written with PyAV (no ffmpeg CLI), small and fast, so any test may call these freely
on a shared machine.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
    audio: np.ndarray | None = None,
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
    - `audio`: mono float32 samples at AUDIO_RATE, from 0 s on, as an AAC track (see voice_track).
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
        # Every stream exists before the first packet is written (the header goes out then).
        sound = out.add_stream("aac", rate=AUDIO_RATE, layout="mono") if audio is not None else None

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
        if sound is not None and audio is not None:
            _encode_audio(out, sound, audio)
    return path


AUDIO_RATE = 16000
# Vowel formants (Hz) of /a/, /i/, /u/, /e/, /o/: a voice-like sound, syllable by syllable.
_VOWELS = (
    (730, 1090, 2440),
    (270, 2290, 3010),
    (300, 870, 2240),
    (530, 1840, 2480),
    (570, 840, 2410),
)


def voice_track(seconds: float, bursts: Sequence[tuple[float, float]], seed: int = 0) -> np.ndarray:
    """`seconds` of silence with a voice-like sound (a 120 Hz glottal tone through vowel formants,
    five syllables a second) during each (start_s, duration_s) burst: something a voice activity
    detector takes for speech, without a speech synthesiser. Not words: a transcript of it is
    noise, only that it is found is meant."""
    rng = np.random.default_rng(seed)
    out = np.zeros(int(seconds * AUDIO_RATE), np.float32)
    syllable = int(0.22 * AUDIO_RATE)
    for start, duration in bursts:
        n = int(duration * AUDIO_RATE)
        t = np.arange(n) / AUDIO_RATE
        phase = 2 * np.pi * np.cumsum(120.0 * (1 + 0.1 * np.sin(2 * np.pi * 0.7 * t))) / AUDIO_RATE
        source = sum(np.sin(k * phase) / k for k in range(1, 30))
        burst = np.zeros(n)
        for a in range(0, n - syllable + 1, syllable):
            piece = np.fft.rfft(source[a : a + syllable])
            freqs = np.fft.rfftfreq(syllable, 1 / AUDIO_RATE)
            formants = _VOWELS[rng.integers(len(_VOWELS))]
            shape = sum(np.exp(-(((freqs - f) / (80 + f * 0.05)) ** 2)) for f in formants)
            burst[a : a + syllable] = (
                np.fft.irfft(piece * shape, syllable) * np.hanning(syllable) ** 0.5
            )
        burst *= 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t) ** 2
        i = int(start * AUDIO_RATE)
        out[i : i + n] = (0.3 * burst / max(np.abs(burst).max(), 1e-9))[: len(out) - i]
    return out


def _encode_audio(out: Any, stream: Any, samples: np.ndarray) -> None:
    for start in range(0, len(samples), 1024):
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(samples[None, start : start + 1024]), format="fltp", layout="mono"
        )
        frame.sample_rate = AUDIO_RATE
        frame.pts = start
        frame.time_base = Fraction(1, AUDIO_RATE)
        for packet in stream.encode(frame):
            out.mux(packet)
    for packet in stream.encode():
        out.mux(packet)


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
            stream.codec_context.options = {
                "preset": "veryfast",
                "threads": "1",
                "sc_threshold": "0",
            }
        for i in range(n):
            t = i / fps
            scene = sum(1 for c in scene_changes if c <= t + 1e-9)
            showing = tuple(kind for a, b, kind in spans if a <= t + 1e-9 < b)
            key = (scene, showing)
            if key not in cache:
                picture = (
                    background.copy()
                    if scene == 0
                    else np.roll(255 - background, scene * 13, axis=1)
                )
                if "object" in showing:
                    picture[
                        height // 3 : height // 3 + height // 3,
                        width // 3 : width // 3 + width // 5,
                    ] = 20
                if "flash" in showing:
                    bar = picture[height - height // 4 :, width // 8 : width - width // 8]
                    bar[:] = 250
                    bar[2:-2, ::3] = 0
                # Only a handful of distinct pictures exist: build each once.
                cache[key] = av.VideoFrame.from_ndarray(
                    np.ascontiguousarray(picture), format="rgb24"
                )
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
