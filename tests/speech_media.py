"""Test media with speech: espeak-ng utterances placed at known offsets between silences, muxed
with a small video track by PyAV; and awkward audio (damaged packets, 7.1, hours of silence,
audio shorter than the video, streams that start late)."""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Callable, Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

TRACK_RATE = 48000

# (offset_s, text) of a 36-s lecture: chunks [0, 20] and [16, 36] (chunking 20 s, overlap 4 s);
# the third utterance crosses the border at 20 s and lies in the overlap.
LECTURE = (
    (2.0, "The quick brown fox jumps over the lazy dog."),
    (8.5, "Framewatch analyses long recordings in overlapping chunks."),
    (18.3, "This sentence is spoken across the border between two chunks."),
    (28.0, "Silence follows, and then the recording ends."),
)
LECTURE_S = 36.0

Truth = list[tuple[float, float, str]]


def espeak(text: str, rate: int = TRACK_RATE) -> tuple[np.ndarray, float, float]:
    """espeak-ng's waveform at `rate` (float32 mono) and its true onset and offset in seconds:
    the first and last sample above 1 % of the peak."""
    with tempfile.TemporaryDirectory() as d:
        wav = Path(d) / "u.wav"
        subprocess.run(["espeak-ng", "-w", str(wav), text], check=True, capture_output=True)
        with av.open(str(wav)) as c:
            r = av.AudioResampler(format="flt", layout="mono", rate=rate)
            parts = [o.to_ndarray().reshape(-1) for f in c.decode(audio=0) for o in r.resample(f)]
            parts += [o.to_ndarray().reshape(-1) for o in r.resample(None)]
    x = np.concatenate(parts).astype(np.float32)
    loud = np.flatnonzero(np.abs(x) > 0.01 * np.abs(x).max())
    return x, loud[0] / rate, (loud[-1] + 1) / rate


def speech_track(
    total_s: float,
    items: Sequence[tuple[float, str]],
    *,
    noise_db: float | None = None,
    rate: int = TRACK_RATE,
) -> tuple[np.ndarray, Truth]:
    """`total_s` seconds of silence (or white noise at `noise_db` dBFS) with each (offset_s,
    text) spoken at its offset; the samples and each utterance's true (onset_s, offset_s, text)."""
    track = np.zeros(int(total_s * rate), dtype=np.float32)
    truth: Truth = []
    for offset, text in items:
        x, on, off = espeak(text, rate)
        i = int(round(offset * rate))
        track[i : i + len(x)] += x[: len(track) - i]
        truth.append((offset + on, offset + off, text))
    if noise_db is not None:
        noise = np.random.default_rng(0).standard_normal(len(track)) * 10 ** (noise_db / 20)
        track += noise.astype(np.float32)
    return np.clip(track, -1, 1), truth


def mux(
    path: str | Path,
    audio: np.ndarray | None,
    *,
    video_s: float,
    rate: int = TRACK_RATE,
    layout: str = "mono",
    codec: str = "aac",
    video_start_s: float = 0.0,
    audio_start_s: float = 0.0,
    h264: bool = False,
    silent_until_s: float | None = None,
    damage: Callable[[int, bytes], bytes] | None = None,
) -> Path:
    """A recording: `video_s` seconds of video at 1 fps from stream time `video_start_s` on, and
    `audio` ((channels, n) or (n,) float32, encoded for real by `codec`) from stream time
    `audio_start_s` on. The video is one 16x16 MJPEG picture repeated (hours cost nothing), or
    with `h264` 64x64 H.264 pictures (MPEG-TS carries MJPEG as a data stream).

    silent_until_s: after `audio`, repeat its last (silent) packet up to this time: hours of
    silence in seconds. damage(i, data) -> bytes: replace audio packet i's bytes."""
    path = Path(path)
    with av.open(str(path), "w") as out:
        if h264:
            vs = out.add_stream("libx264", rate=1, options={"preset": "ultrafast"})
            vs.width = vs.height = 64
            vs.pix_fmt = "yuv420p"
        else:
            vs = out.add_stream("mjpeg", rate=1)
            vs.width = vs.height = 16
            vs.pix_fmt = "yuvj420p"
            vs.time_base = Fraction(1, 1)
            picture = np.full((16, 16, 3), 90, np.uint8)
            img = av.VideoFrame.from_ndarray(picture, format="rgb24").reformat(format="yuvj420p")
            img.pts = 0
            vdata = [bytes(p) for p in vs.encode(img)][0]
        pending: list[tuple[float, av.Packet, bytes]] = []
        ast = None
        if audio is not None:
            ast = out.add_stream(codec, rate=rate, layout=layout)
            ast.time_base = Fraction(1, rate)
            pending = _encoded(ast, audio, rate, layout, int(round(audio_start_s * rate)), damage)
            if silent_until_s is None:
                pending += _packets(ast, ast.encode(None), len(pending), damage)
        silent = None
        if silent_until_s is not None and pending:
            _, last, data = pending[-1]
            silent = (data, last.pts + last.duration, last.duration)
        v0 = int(round(video_start_s))
        ai = 0
        for k in range(int(round(video_s))):
            if h264:
                frame = av.VideoFrame.from_ndarray(
                    np.full((64, 64, 3), (k * 37) % 256, np.uint8), format="rgb24"
                )
                frame.pts, frame.time_base = v0 + k, Fraction(1, 1)
                out.mux(vs.encode(frame))
            else:
                p = av.Packet(vdata)
                p.pts = p.dts = v0 + k
                p.duration = 1
                p.time_base = Fraction(1, 1)
                p.stream = vs
                p.is_keyframe = True
                out.mux(p)
            t = v0 + k + 1
            while ai < len(pending) and pending[ai][0] <= t:
                out.mux(pending[ai][1])
                ai += 1
            if silent is not None and ai >= len(pending) and silent_until_s is not None:
                data, pts, step = silent
                while pts / rate <= min(t, silent_until_s):
                    q = av.Packet(data)
                    q.pts = q.dts = pts
                    q.duration = step
                    q.time_base = Fraction(1, rate)
                    q.stream = ast
                    out.mux(q)
                    pts += step
                silent = (data, pts, step)
        for _, packet, _ in pending[ai:]:
            out.mux(packet)
        if h264:
            out.mux(vs.encode(None))
    return path


def _encoded(
    ast: av.AudioStream,
    audio: np.ndarray,
    rate: int,
    layout: str,
    offset: int,
    damage: Callable[[int, bytes], bytes] | None,
) -> list[tuple[float, av.Packet, bytes]]:
    if audio.ndim == 1:
        audio = audio[None, :]
    fmt = ast.codec_context.format.name if ast.codec_context.format else "fltp"
    out: list[tuple[float, av.Packet, bytes]] = []
    for pos in range(0, audio.shape[1], 1024):
        block = np.ascontiguousarray(audio[:, pos : pos + 1024].astype(np.float32))
        if fmt in ("s16", "s32"):
            scale, kind = (32767, np.int16) if fmt == "s16" else (2147483647, np.int32)
            frame_fmt, block = fmt, (block.T.reshape(1, -1) * scale).astype(kind)
        elif block.shape[0] >= 8:
            # PyAV 18.1: a planar frame of 8 or more channels crashes (from_ndarray raises
            # IndexError, to_ndarray segfaults); the encoder converts from packed floats.
            frame_fmt, block = "flt", np.ascontiguousarray(block.T.reshape(1, -1))
        else:
            frame_fmt = "fltp"
        frame = av.AudioFrame.from_ndarray(block, format=frame_fmt, layout=layout)
        frame.sample_rate = rate
        frame.pts = offset + pos
        frame.time_base = Fraction(1, rate)
        out += _packets(ast, ast.encode(frame), len(out), damage)
    return out


def _packets(
    ast: av.AudioStream,
    packets: Sequence[av.Packet],
    first: int,
    damage: Callable[[int, bytes], bytes] | None,
) -> list[tuple[float, av.Packet, bytes]]:
    out = []
    for i, p in enumerate(packets, first):
        data = bytes(p) if damage is None else damage(i, bytes(p))
        q = av.Packet(data)
        q.pts, q.dts, q.duration, q.time_base = p.pts, p.dts, p.duration, p.time_base
        q.stream = ast
        out.append((float(p.pts * p.time_base), q, data))
    return out
