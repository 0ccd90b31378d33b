"""Streaming frame sampler: the frames nearest to requested times, upright, resized, PTS-stamped."""

from __future__ import annotations

import bisect
from collections import deque
from itertools import pairwise
from typing import TYPE_CHECKING

import av
import av.error
import numpy as np
import structlog
from av.codec.hwaccel import HWAccel

from daemon.engine.probe import DECODER_OPTIONS, UnsupportedMedia, av_message, video_stream
from daemon.files import regular_path
from daemon.models import Frame

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence
    from pathlib import Path

    from av.video.frame import VideoFrame
    from av.video.stream import VideoStream

log = structlog.get_logger(__name__)

# Hardware decoders (sampling.hwaccel) that could not be opened in this process, with why: each
# is reported once, and later files decode on the CPU without trying again.
HW_UNAVAILABLE: dict[str, str] = {}

# Seek this far before the first requested time: demuxers seek on DTS or index times, which can
# sit a little after the PTS of the frame we want, and a backward seek must land before it.
_SEEK_MARGIN_S = 0.5


def sample_frames(
    path: str | Path,
    times: Sequence[float],
    width: int,
    height: int,
    rotation: int = 0,
    *,
    fast: bool = True,
    hwaccel: str | None = None,
) -> list[Frame]:
    """Return one Frame per requested time: the decoded frame whose PTS is nearest to it.

    - `times`: sorted seconds from the recording's start (the first frame's PTS is 0).
    - `width`, `height`: size of the returned pictures as a viewer sees them, after rotation.
    - `rotation`: clockwise degrees to turn the stored picture upright (MediaInfo.rotation).

    `Frame.t_s` is the chosen frame's own PTS, not the requested time. Several requested times
    may share one source frame (and its array). Times after the last frame get the last frame.
    Only the current candidate and the chosen pictures are held in memory. Raises
    UnsupportedMedia when decoding fails or no frame can be decoded in the window.

    `fast` (the default) decodes only what the samples need: non-reference pictures far from
    every requested time are not decoded (nothing else depends on them), and when the next time
    lies beyond a later keyframe the demuxer seeks there instead of decoding through. The
    chosen frames are the same, at the same PTS, as with `fast=False` (which decodes every
    frame from the first seek on); tests/test_sampler_fast.py holds it to that.

    `hwaccel`: an FFmpeg hardware device ("cuda", "cuda:1", "vaapi:/dev/dri/renderD128") to decode
    on; pictures are copied back to memory and resized as usual. A device that cannot be opened
    means CPU decoding (logged once per device); a stream the device cannot decode falls back in
    FFmpeg itself.
    """
    if not times:
        return []
    if any(b < a for a, b in pairwise(times)):
        raise ValueError("times must be sorted")
    if width <= 0 or height <= 0:
        raise ValueError(f"output size must be positive, got {width}x{height}")
    if rotation not in (0, 90, 180, 270):
        raise ValueError(f"rotation must be 0, 90, 180 or 270, not {rotation}")

    container = _open(path, hwaccel)
    with container:
        stream = video_stream(container)
        if stream is None:
            raise UnsupportedMedia("no video stream")
        stream.thread_type = "AUTO"
        stream.codec_context.options = dict(DECODER_OPTIONS)
        picker = _Picker(times, width, height, rotation)
        decoded_t: float | None = None
        try:
            _seek(container, stream, times[0] - _SEEK_MARGIN_S)
            frames_in = (
                _sparse_frames(container, stream, picker, times)
                if fast
                else _timed_frames(container, stream)
            )
            for t, frame in frames_in:
                decoded_t = t
                if picker.offer(t, frame):
                    break
        except av.error.FFmpegError as exc:
            at = decoded_t if decoded_t is not None else times[0]
            raise UnsupportedMedia(f"decoding failed at {at:.1f} s: {av_message(exc)}") from exc
        frames = picker.finish()
    if not frames:
        raise UnsupportedMedia(f"no decodable frames in window {times[0]:.1f}-{times[-1]:.1f} s")
    return frames


def _open(path: str | Path, hwaccel: str | None) -> av.container.InputContainer:
    # Only a regular file, opened without blocking (a FIFO put in its place since the probe).
    try:
        with regular_path(path) as name:
            return _open_checked(name, hwaccel)
    except OSError as exc:
        raise UnsupportedMedia(f"cannot open media ({exc.strerror or exc})") from exc


def _open_checked(path: str, hwaccel: str | None) -> av.container.InputContainer:
    if hwaccel and hwaccel != "none" and hwaccel not in HW_UNAVAILABLE:
        kind, _, device = hwaccel.partition(":")
        try:
            return av.open(
                path,
                hwaccel=HWAccel(kind, device=device or None, allow_software_fallback=True),
            )
        except av.error.FFmpegError as exc:
            hw_error = f"FFmpeg could not open a {kind} device for decoding: {av_message(exc)}"
        # The device or the file? A file that opens without the device says the device.
        container = _open_checked(path, None)
        HW_UNAVAILABLE[hwaccel] = hw_error
        log.warning(
            "hwaccel_unavailable", hwaccel=hwaccel, reason=hw_error, decoding="on the CPU instead"
        )
        return container
    try:
        return av.open(path)
    except av.error.FFmpegError as exc:
        raise UnsupportedMedia(f"cannot open media ({av_message(exc)})") from exc


class _Picker:
    """Assigns each requested time the nearer of the frames just before and just after it."""

    def __init__(self, times: Sequence[float], width: int, height: int, rotation: int) -> None:
        self._times = times
        self._size = (height, width) if rotation in (90, 270) else (width, height)
        self._turns = rotation // 90
        self._chosen: list[Frame] = []
        self._previous: tuple[float, VideoFrame] | None = None
        # The last converted picture, reused when one source frame serves several times.
        self._converted: tuple[VideoFrame, Frame] | None = None

    def offer(self, t: float, frame: VideoFrame) -> bool:
        """Consider the next decoded frame; True once every time has its frame."""
        while len(self._chosen) < len(self._times) and t >= self._times[len(self._chosen)]:
            wanted = self._times[len(self._chosen)]
            previous = self._previous
            # Ties go to the earlier frame: it is what a viewer saw at `wanted`.
            if previous is not None and wanted - previous[0] <= t - wanted:
                self._chosen.append(self._convert(*previous))
            else:
                self._chosen.append(self._convert(t, frame))
        self._previous = (t, frame)
        return len(self._chosen) == len(self._times)

    @property
    def done(self) -> bool:
        return len(self._chosen) == len(self._times)

    def next_time(self) -> float | None:
        """The first requested time still without its frame."""
        return None if self.done else self._times[len(self._chosen)]

    def finish(self) -> list[Frame]:
        """The chosen frames, padded with the last decoded frame when the stream ended early."""
        if self._previous is not None:
            while len(self._chosen) < len(self._times):
                self._chosen.append(self._convert(*self._previous))
        return self._chosen

    def _convert(self, t: float, frame: VideoFrame) -> Frame:
        if self._converted is not None and self._converted[0] is frame:
            return self._converted[1]
        width, height = self._size
        # Scaling in swscale before rotating keeps the numpy work to the small picture.
        image = frame.reformat(width=width, height=height, format="rgb24").to_ndarray()
        if self._turns:
            # np.rot90 turns counter-clockwise for positive k; the rotation is clockwise.
            image = np.rot90(image, k=-self._turns)
        converted = Frame(t_s=t, image=np.ascontiguousarray(image))
        self._converted = (frame, converted)
        return converted


def _seek(container: av.container.InputContainer, stream: VideoStream, t: float) -> None:
    if t <= 0:
        # Decoding from the start needs no seek, and some demuxers seek badly to 0.
        return
    start = stream.start_time or 0
    container.seek(start + int(t / stream.time_base), stream=stream, backward=True)


def _timed_frames(
    container: av.container.InputContainer, stream: VideoStream
) -> Iterator[tuple[float, VideoFrame]]:
    """Decoded frames in presentation order with seconds since the stream's first PTS."""
    start = stream.start_time or 0
    time_base = stream.time_base
    rate = stream.average_rate or stream.guessed_rate
    step = float(1 / rate) if rate else 0.0
    last: float | None = None
    for frame in container.decode(stream):
        if frame.pts is not None and time_base is not None:
            t = float((frame.pts - start) * time_base)
        elif last is not None:
            # A few raw formats carry no PTS; count frames from the previous one.
            t = last + step
        else:
            t = 0.0
        last = t
        yield t, frame


# Pictures within this many frame gaps of a requested time are always decoded, so the picker sees
# both true neighbours of every time (one gap away at most); the rest is room for jitter. The gap
# is the largest between the older half of the last _GAP_WINDOW packets in presentation order (the
# newer half still misses B-frames that arrive after their reference), so a variable rate widens
# it; until _GAP_WINDOW packets are seen, _GUARD_START_S.
_GUARD_GAPS = 1.5
_GAP_WINDOW = 16
_GUARD_START_S = 0.5


def _sparse_frames(
    container: av.container.InputContainer,
    stream: VideoStream,
    picker: _Picker,
    times: Sequence[float],
) -> Iterator[tuple[float, VideoFrame]]:
    """Like _timed_frames, but decoding only what `picker` can choose from.

    Per packet, before the decoder sees it: a non-reference picture (skip_frame NONREF) whose
    PTS is far from every requested time is dropped inside the decoder; nothing references it,
    so every other picture decodes bit for bit as before. Between distant times, when the index
    shows a keyframe after everything already sent to the decoder and before the next time, the
    demuxer seeks to it (landing at least _SEEK_MARGIN_S early, so the frame just before that
    time is decoded again)."""
    context = stream.codec_context
    start = stream.start_time or 0
    time_base = stream.time_base
    rate = stream.average_rate or stream.guessed_rate
    step = float(1 / rate) if rate else 0.0
    recent: deque[float] = deque(maxlen=_GAP_WINDOW)
    guard = _GUARD_START_S
    wanted = list(times)  # sorted by sample_frames' contract
    end_s = float(stream.duration * time_base) if stream.duration and time_base else None
    keyframes = _keyframe_times(stream)
    sent_max: float | None = None  # the latest PTS handed to the decoder
    last_t: float | None = None
    verify_after: float | None = None  # after a seek: the time the first frame must not pass
    # The time the last seek was made for. The index holds decoding times (DTS), and a demuxer may
    # seek by presentation time: aiming between a keyframe's DTS and PTS lands on the keyframe
    # before, which still sits before the sought key. One seek per time, or that repeats forever.
    sought: float | None = None
    can_seek = bool(keyframes)
    skipping = False
    packets = container.demux(stream)
    for packet in packets:
        pt: float | None = None
        if packet.pts is not None and time_base is not None:
            pt = float((packet.pts - start) * time_base)
            sent_max = pt if sent_max is None else max(sent_max, pt)
            recent.append(pt)
            if len(recent) == _GAP_WINDOW:
                ordered = sorted(recent)[: _GAP_WINDOW // 2]
                gap = max(b - a for a, b in pairwise(ordered))
                guard = _GUARD_GAPS * max(step, gap)
        # A packet without PTS (or the final flush) is always decoded in full.
        skip = (
            pt is not None
            and not _near(wanted, pt, guard)
            and not (end_s is not None and pt >= end_s - guard)
        )
        if skip != skipping:
            # Read by the decoder when the packet is submitted (also per frame thread).
            context.skip_frame = "NONREF" if skip else "DEFAULT"
            skipping = skip
        for frame in packet.decode():
            if frame.pts is not None and time_base is not None:
                t = float((frame.pts - start) * time_base)
            elif last_t is not None:
                t = last_t + step
            else:
                t = 0.0
            if verify_after is not None:
                if t > verify_after:
                    # The demuxer landed after the time whose neighbour we need: go back to
                    # where decoding was and stop seeking for this window.
                    can_seek = False
                    verify_after = None
                    back = (last_t if last_t is not None else 0.0) - _SEEK_MARGIN_S
                    container.seek(
                        start + int(max(back, 0.0) / time_base), stream=stream, backward=True
                    )
                    break
                verify_after = None
            last_t = t
            yield t, frame
            if picker.done:
                return
        if not can_seek or picker.done or sent_max is None:
            continue
        target = picker.next_time()
        if target is None or (sought is not None and target <= sought):
            continue
        to = target - _SEEK_MARGIN_S
        key = _last_at_or_before(keyframes, to)
        if key is not None and key > sent_max + step:
            # Frames still inside the decoder are dropped by the seek; all lie before `key`,
            # and the picker needs none of them (every earlier time already has its frame).
            container.seek(start + int(to / time_base), stream=stream, backward=True)
            verify_after = target
            sought = target
            sent_max = None
            recent.clear()  # the gaps across the seek are not frame gaps
            guard = _GUARD_START_S


def _keyframe_times(stream: VideoStream) -> list[float]:
    """Seconds of the keyframes the demuxer's index knows (sorted; empty without an index)."""
    time_base = stream.time_base
    if time_base is None:
        return []
    start = stream.start_time or 0
    try:
        entries = stream.index_entries
        times = [float((e.timestamp - start) * time_base) for e in entries if e.is_keyframe]
    except (AttributeError, ValueError):
        # An older PyAV without index access: decode through instead of seeking.
        return []
    return sorted(times)


def _near(sorted_times: Sequence[float], t: float, guard: float) -> bool:
    i = bisect.bisect_left(sorted_times, t)
    return (i < len(sorted_times) and sorted_times[i] - t <= guard) or (
        i > 0 and t - sorted_times[i - 1] <= guard
    )


def _last_at_or_before(sorted_times: Sequence[float], t: float) -> float | None:
    i = bisect.bisect_right(sorted_times, t)
    return sorted_times[i - 1] if i else None
