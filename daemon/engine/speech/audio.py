"""A window of a recording's audio as 16 kHz mono float32, on the video's clock.

Only the window is decoded (a seek, then decoding stops past its end), so memory is the window's
samples whatever the file's length, and no temporary file is written. Zero is the first video
stream's start, the sampler's zero (daemon/engine/sampler.py): audio that starts later or earlier
than the video keeps its offset. Samples are placed by the resampler's output timestamps, so a
gap, a late start or an early end stays silence at the right place. What was missing or damaged
is said in `AudioWindow.note`; a stream that cannot be decoded at all raises AudioError.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import av
import av.error
import numpy as np

from daemon.engine.probe import av_message, video_stream
from daemon.files import regular_path

if TYPE_CHECKING:
    from collections.abc import Iterable
    from pathlib import Path

    from av.audio.frame import AudioFrame
    from av.audio.stream import AudioStream
    from av.container import InputContainer

RATE = 16000
# Seek this far before the window: demuxers seek on index times; audio packets are short.
SEEK_MARGIN_S = 1.0
# Decoding stops once a packet starts this far past the window's end.
READ_PAST_S = 0.5
# A stream whose first packets all fail: give up after this many in a row, and say why.
MAX_FAILURES_IN_A_ROW = 50


class AudioError(Exception):
    """Audio that cannot be used; `reason` is one short sentence for a person."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

    def __str__(self) -> str:
        return self.reason


@dataclass
class AudioWindow:
    """`samples[0]` lies at `start_s` (seconds on the recording's clock); silence where no audio
    was decoded. `audio_from_s`/`audio_to_s` bound the decoded audio inside the window (None: none
    at all)."""

    samples: np.ndarray  # float32, mono, `rate` Hz
    start_s: float
    end_s: float
    rate: int = RATE
    audio_from_s: float | None = None
    audio_to_s: float | None = None
    # "no audio stream", "audio ends at 12.30 s", "3 of 940 audio packets undecodable (...)"
    note: str | None = None
    packets: int = 0
    decode_errors: int = 0
    decode_error: str | None = None  # the last packet's decoding error
    read_error: str | None = None  # why the demuxer stopped early, if it did
    seek: str | None = None  # how the window was reached: "audio", "container", "from start"
    stream: dict[str, Any] = field(default_factory=dict)  # codec, rate, channels, layout

    @property
    def empty(self) -> bool:
        return self.audio_from_s is None


def read_audio(path: str | Path, start_s: float, end_s: float, *, rate: int = RATE) -> AudioWindow:
    """Decode [start_s, end_s] of the first audio stream as mono float32 at `rate` Hz.

    A file without audio gives an empty window noted "no audio stream". Raises AudioError when
    the file cannot be opened or its audio stream cannot be decoded at all."""
    if end_s <= start_s:
        raise ValueError("need end_s > start_s")
    n = int(round((end_s - start_s) * rate))
    win = AudioWindow(np.zeros(n, dtype=np.float32), start_s, end_s, rate)
    try:
        with regular_path(path) as name:  # a FIFO put in its place must not block the reader
            container = av.open(name)
    except av.error.FFmpegError as exc:
        raise AudioError(f"cannot open media ({av_message(exc)})") from exc
    except OSError as exc:
        raise AudioError(f"cannot open media ({exc.strerror or exc})") from exc
    with container:
        if not container.streams.audio:
            win.note = "no audio stream"
            return win
        _decode(container, container.streams.audio[0], win)
    win.note = _describe(win)
    return win


def _decode(container: InputContainer, audio: AudioStream, win: AudioWindow) -> None:
    ctx = audio.codec_context
    win.stream = {
        "codec": ctx.name,
        "rate": ctx.sample_rate,
        "channels": ctx.channels,
        "layout": ctx.layout.name if ctx.layout else None,
    }
    rate, n, out = win.rate, len(win.samples), win.samples
    first = _origin_s(container, audio) + win.start_s  # stream seconds of samples[0]
    stop = first + (win.end_s - win.start_s)
    if win.start_s > SEEK_MARGIN_S:
        win.seek = _seek(container, audio, first - SEEK_MARGIN_S)

    lo: int | None = None
    hi: int | None = None
    cursor: float | None = None  # stream seconds just after the last placed sample

    def place(frames: Iterable[AudioFrame]) -> None:
        nonlocal lo, hi, cursor
        for o in frames:
            # Only ever on the resampler's packed mono output: PyAV 18.1 crashes (SIGSEGV) in
            # to_ndarray() of a decoded planar frame with 8 channels (7.1 AAC).
            data = o.to_ndarray().reshape(-1)
            if o.pts is not None:
                t = float(o.pts * o.time_base)
            elif cursor is not None:
                t = cursor
            else:
                continue
            cursor = t + len(data) / rate
            i = int(round((t - first) * rate))
            a, b = max(i, 0), min(i + len(data), n)
            if a < b:
                out[a:b] = data[a - i : b - i]
                lo = a if lo is None else min(lo, a)
                hi = b if hi is None else max(hi, b)

    resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
    downmix: av.AudioResampler | None = None  # for layouts swresample will not downmix
    in_a_row = 0
    packets = container.demux(audio)
    while True:
        try:
            packet = next(packets)
        except StopIteration:
            break
        except av.error.FFmpegError as exc:  # the demuxer gave up (a file cut short)
            win.read_error = av_message(exc)
            break
        if packet.pts is not None and audio.time_base is not None:
            if float(packet.pts * audio.time_base) > stop + READ_PAST_S:
                break
        if packet.size:  # not the demuxer's last, empty packet (it drains the decoder)
            win.packets += 1
        try:
            frames = packet.decode()
        except av.error.FFmpegError as exc:
            win.decode_errors += 1
            in_a_row += 1
            win.decode_error = av_message(exc)
            if in_a_row >= MAX_FAILURES_IN_A_ROW and lo is None:
                raise AudioError(
                    f"audio stream undecodable ({ctx.name}: {in_a_row} packets in a row failed: "
                    f"{win.decode_error})"
                ) from exc
            continue
        in_a_row = 0
        for frame in frames:
            if frame.pts is not None:
                t = float(frame.pts * frame.time_base)
                if t + frame.samples / frame.sample_rate < first - 0.1 or t > stop + 0.1:
                    continue
            if downmix is None:
                try:
                    place(resampler.resample(frame))
                    continue
                except (av.error.FFmpegError, ValueError):
                    downmix = av.AudioResampler(format="flt", layout="mono", rate=rate)
            place(downmix.resample(_averaged(frame)))
    place((downmix or resampler).resample(None))
    if lo is None and win.packets and win.decode_errors >= win.packets:
        raise AudioError(
            f"audio stream undecodable ({ctx.name}: all {win.packets} packets failed: "
            f"{win.decode_error})"
        )
    if lo is None and win.read_error:
        raise AudioError(f"audio unreadable ({win.read_error})")
    if lo is not None and hi is not None:
        win.audio_from_s = win.start_s + lo / rate
        win.audio_to_s = win.start_s + hi / rate


def _describe(win: AudioWindow) -> str | None:
    notes = []
    if win.audio_from_s is None or win.audio_to_s is None:
        notes.append("no audio in this window")
    else:
        if win.read_error:
            notes.append(f"audio unreadable after {win.audio_to_s:.2f} s ({win.read_error})")
        elif win.audio_to_s < win.end_s - 0.05:
            notes.append(f"audio ends at {win.audio_to_s:.2f} s")
        if win.audio_from_s > win.start_s + 0.05:
            notes.append(f"audio starts at {win.audio_from_s:.2f} s")
    if win.decode_errors:
        notes.append(
            f"{win.decode_errors} of {win.packets} audio packets undecodable ({win.decode_error})"
        )
    return "; ".join(notes) or None


def _origin_s(container: InputContainer, audio: AudioStream) -> float:
    """Zero of the recording's clock in stream seconds: the analysed video stream's start, else
    the audio's own."""
    video = video_stream(container)
    for s in (video, audio):
        if s is not None and s.start_time is not None and s.time_base is not None:
            return float(s.start_time * s.time_base)
    return 0.0


def _seek(container: InputContainer, audio: AudioStream, t: float) -> str:
    """Seek backward to stream second `t`; returns how. Matroska indexes only video keyframes,
    so a seek on its audio stream fails (EPERM): the container-level seek uses the video index."""
    if audio.time_base is not None:
        try:
            container.seek(int(t / audio.time_base), stream=audio, backward=True)
            return "audio"
        except av.error.FFmpegError:
            pass
    try:
        container.seek(int(t * av.time_base), backward=True)
        return "container"
    except av.error.FFmpegError:
        pass
    try:
        container.seek(0)
    except av.error.FFmpegError:
        pass
    return "from start"


def _averaged(frame: AudioFrame) -> AudioFrame:
    """`frame` with its channels averaged into one, for layouts swresample will not downmix
    (channel order unspecified). Converted to packed samples of the same layout first: no
    rematrixing is needed for that, and to_ndarray() never sees a planar frame of 8 channels."""
    channels = frame.layout.nb_channels
    packed = av.AudioResampler(format="flt", layout=frame.layout, rate=frame.sample_rate)
    rows = [o.to_ndarray().reshape(-1, channels) for o in packed.resample(frame)]
    rows += [o.to_ndarray().reshape(-1, channels) for o in packed.resample(None)]
    mono = np.concatenate(rows).mean(axis=1, dtype=np.float32) if rows else np.zeros(0, np.float32)
    out = av.AudioFrame.from_ndarray(mono[None, :], format="flt", layout="mono")
    out.sample_rate = frame.sample_rate
    out.pts, out.time_base = frame.pts, frame.time_base
    return out
