"""Streaming frame sampler: the frames nearest to requested times, upright, resized, PTS-stamped."""

from __future__ import annotations

from typing import TYPE_CHECKING

import av
import av.error
import numpy as np

from daemon.engine.probe import DECODER_OPTIONS, UnsupportedMedia, av_message, video_stream
from daemon.models import Frame

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence
    from pathlib import Path

    from av.video.frame import VideoFrame
    from av.video.stream import VideoStream

# Seek this far before the first requested time: demuxers seek on DTS or index times, which can
# sit a little after the PTS of the frame we want, and a backward seek must land before it.
_SEEK_MARGIN_S = 0.5


def sample_frames(
    path: str | Path,
    times: Sequence[float],
    width: int,
    height: int,
    rotation: int = 0,
) -> list[Frame]:
    """Return one Frame per requested time: the decoded frame whose PTS is nearest to it.

    - `times`: sorted seconds from the recording's start (the first frame's PTS is 0).
    - `width`, `height`: size of the returned pictures as a viewer sees them, after rotation.
    - `rotation`: clockwise degrees to turn the stored picture upright (MediaInfo.rotation).

    `Frame.t_s` is the chosen frame's own PTS, not the requested time. Several requested times
    may share one source frame (and its array). Times after the last frame get the last frame.
    Only the current candidate and the chosen pictures are held in memory. Raises
    UnsupportedMedia when decoding fails or no frame can be decoded in the window.
    """
    if not times:
        return []
    if any(b < a for a, b in zip(times, times[1:])):
        raise ValueError("times must be sorted")
    if width <= 0 or height <= 0:
        raise ValueError(f"output size must be positive, got {width}x{height}")
    if rotation not in (0, 90, 180, 270):
        raise ValueError(f"rotation must be 0, 90, 180 or 270, not {rotation}")

    try:
        container = av.open(str(path))
    except av.error.FFmpegError as exc:
        raise UnsupportedMedia(f"cannot open media ({av_message(exc)})") from exc
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
            for t, frame in _timed_frames(container, stream):
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

