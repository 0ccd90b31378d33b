"""What a recording is (duration, size, rate, rotation, codec) and whether it can be analysed."""

from __future__ import annotations

import errno
import os
import statistics
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING

import av
import av.error

from daemon.engine.sampletables import sample_table_problem
from daemon.files import NotRegularFile, open_regular, regular_path
from daemon.models import MediaInfo

if TYPE_CHECKING:
    from av.video.frame import VideoFrame
    from av.video.stream import VideoStream

MAX_SIDE = 8192

# No real recording has less than a byte per second: a picture every ten minutes of 600 bytes
# (a thumbnail-sized JPEG) still has one. A file below this claims a duration its bytes cannot
# hold (checked for claims over MIN_CLAIM_S, where a short clip's container overhead is noise).
MIN_BYTES_PER_S = 1.0
MIN_CLAIM_S = 600.0

# Decoders refuse pictures above this many pixels, so a stream whose bitstream declares a bigger
# size than its container (which is what we check) still cannot allocate gigabytes.
DECODER_OPTIONS = {"max_pixels": str(MAX_SIDE * MAX_SIDE)}

# Packets examined for the VFR heuristic.
_VFR_PACKETS = 100
# A gap further than this from the median gap counts as irregular ...
_VFR_GAP_TOLERANCE = 0.25
# ... and a stream is VFR when more than this share of its gaps are irregular (one dropped frame
# in a CFR recording is not VFR).
_VFR_IRREGULAR_SHARE = 0.1
# Without a decodable frame in this many packets the stream is considered broken.
_MAX_PACKETS_TO_FIRST_FRAME = 500
# When no header carries the duration, demux at most this many packets to find the last PTS,
# then extrapolate from the bytes read.
_MAX_PACKETS_FOR_DURATION = 20_000


class UnsupportedMedia(Exception):
    """A file that cannot be analysed; `reason` is one short sentence for a person."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

    def __str__(self) -> str:
        return self.reason


def probe(path: str | Path, max_duration_s: float | None = None) -> MediaInfo:
    """Describe the first video stream of `path` and prove one frame decodes.

    Raises UnsupportedMedia (never an av exception) when the file is unusable, and when its
    duration is not credible: more than `max_duration_s` (chunking.max_duration_s), or fewer
    than MIN_BYTES_PER_S bytes of file per second claimed (a few KB claiming days).
    """
    path = Path(path)
    size = _file_size(path)
    _check_tables(path, size)
    try:
        with regular_path(path) as name:
            try:
                container = av.open(name)
            except av.error.FFmpegError as exc:
                raise UnsupportedMedia(_open_failure_reason(path, exc)) from exc
    except OSError as exc:  # swapped for something else since _file_size looked
        raise UnsupportedMedia(_os_reason(exc)) from exc
    try:
        with container:
            media = _probe_open(path, size, container)
    except av.error.FFmpegError as exc:
        raise UnsupportedMedia(f"unreadable media ({av_message(exc)})") from exc
    _check_duration(media.duration_s, size, max_duration_s)
    return media


def _check_tables(path: Path, size: int) -> None:
    """An MP4's sample counts held to its size before FFmpeg allocates for them."""
    try:
        with open(open_regular(path), "rb") as f:
            why = sample_table_problem(f, size)
    except OSError as exc:
        raise UnsupportedMedia(_os_reason(exc)) from exc
    if why:
        raise UnsupportedMedia(why)


def _check_duration(duration: float, size: int, max_duration_s: float | None) -> None:
    """The duration is the file's own word (header or last timestamp); refuse what no real
    recording of this size could be, and what is longer than the configured cap."""
    if duration > MIN_CLAIM_S and size / duration < MIN_BYTES_PER_S:
        raise UnsupportedMedia(
            f"claims {duration:.0f} s of video in {size} bytes ({size / duration:.3g} bytes per "
            f"second, under {MIN_BYTES_PER_S}): its header or timestamps are not credible"
        )
    if max_duration_s is not None and duration > max_duration_s:
        raise UnsupportedMedia(
            f"claims {duration:.0f} s of video, more than chunking.max_duration_s "
            f"({max_duration_s:.0f} s); raise it if the recording really is that long"
        )


def rotation_of(frame: VideoFrame) -> int:
    """Clockwise degrees (0, 90, 180, 270) that turn `frame` upright, from its display matrix.

    PyAV's `frame.rotation` is FFmpeg's counter-clockwise angle in [-180, 180]; the clockwise
    angle to apply is its negation. Angles off the right-angle grid are rounded to it.
    """
    return round(-frame.rotation / 90) % 4 * 90


def _probe_open(path: Path, size: int, container: av.container.InputContainer) -> MediaInfo:
    stream = video_stream(container)
    if stream is None:
        damage = _mp4_damage(path)
        if damage:
            raise UnsupportedMedia(damage)
        if container.streams.audio:
            raise UnsupportedMedia("no video stream (audio-only file)")
        raise UnsupportedMedia("no video stream")

    context = stream.codec_context
    _check_size(context.width, context.height)
    context.options = dict(DECODER_OPTIONS)

    need_duration = not (stream.duration or container.duration)
    scan = _scan(container, stream, need_duration)
    first_frame = scan.first_frame
    if first_frame is None:
        detail = f" ({av_message(scan.error)})" if scan.error else ""
        raise UnsupportedMedia(_mp4_damage(path) or f"no decodable frames{detail}")
    _check_size(first_frame.width, first_frame.height)

    time_base = stream.time_base
    start = stream.start_time or 0
    if stream.duration:
        duration = float(stream.duration * time_base)
    elif container.duration:
        duration = container.duration / av.time_base
    elif scan.last_end is not None and time_base is not None:
        duration = float((scan.last_end - start) * time_base)
        if not scan.reached_end and 0 < scan.last_pos < size:
            duration *= size / scan.last_pos
    else:
        duration = 0.0

    frame_count = stream.frames or None
    return MediaInfo(
        path=str(path),
        duration_s=duration,
        width=first_frame.width,
        height=first_frame.height,
        fps=_average_fps(stream, frame_count, duration, scan.pts),
        rotation=rotation_of(first_frame),
        codec=context.name,
        frame_count=frame_count,
        variable_frame_rate=_looks_vfr(scan.pts),
        has_audio=bool(container.streams.audio),
    )


@dataclass
class _Scan:
    """What one pass over the first packets of the video stream found."""

    first_frame: VideoFrame | None = None
    error: av.error.FFmpegError | None = None
    pts: list[int] = field(default_factory=list)  # of the first _VFR_PACKETS packets
    last_end: int | None = None  # largest pts + duration seen
    last_pos: int = 0  # byte offset of the last packet read
    reached_end: bool = False


def _scan(
    container: av.container.InputContainer, stream: VideoStream, need_duration: bool
) -> _Scan:
    """Decode the first frame and collect packet timing, reading only as far as needed."""
    scan = _Scan()
    packets = 0
    demuxer = container.demux(stream)
    while True:
        try:
            packet = next(demuxer)
        except StopIteration:
            scan.reached_end = True
            return scan
        except av.error.FFmpegError as exc:
            # A file damaged further on is still usable up to there; the sampler reports it if a
            # chunk needs that part.
            scan.error = scan.error or exc
            scan.reached_end = True
            return scan
        packets += 1
        if packet.pts is not None:
            if len(scan.pts) < _VFR_PACKETS:
                scan.pts.append(packet.pts)
            end = packet.pts + (packet.duration or 0)
            scan.last_end = end if scan.last_end is None else max(scan.last_end, end)
        if packet.pos is not None and packet.pos > 0:
            scan.last_pos = packet.pos
        if scan.first_frame is None:
            try:
                frames = packet.decode()
            except av.error.FFmpegError as exc:
                # A damaged first packet does not condemn the file; a later keyframe may decode.
                scan.error = exc
                frames = []
            if frames:
                scan.first_frame = frames[0]
            elif packets >= _MAX_PACKETS_TO_FIRST_FRAME:
                return scan
        elif len(scan.pts) >= _VFR_PACKETS:
            if not need_duration or packets >= _MAX_PACKETS_FOR_DURATION:
                return scan


def _file_size(path: Path) -> int:
    try:
        # stat succeeds on unreadable files; opening (never blocking, regular files only) is
        # the real test of access.
        fd = open_regular(path)
        try:
            size = os.fstat(fd).st_size
        finally:
            os.close(fd)
    except OSError as exc:
        raise UnsupportedMedia(_os_reason(exc)) from exc
    if size == 0:
        raise UnsupportedMedia("empty file (0 bytes)")
    return size


def _os_reason(exc: OSError) -> str:
    if isinstance(exc, NotRegularFile):
        return exc.reason
    reason = {
        errno.ENOENT: "no such file",
        errno.EACCES: "permission denied",
        errno.EPERM: "permission denied",
        errno.EISDIR: "it is a directory",
        errno.ELOOP: "it became a symlink",
    }.get(exc.errno or 0, (exc.strerror or str(exc)).lower())
    return f"cannot read file: {reason}"


def _open_failure_reason(path: Path, exc: av.error.FFmpegError) -> str:
    if isinstance(exc, PermissionError):
        return "cannot read file: permission denied"
    if isinstance(exc, FileNotFoundError):
        return "cannot read file: no such file"
    damage = _mp4_damage(path)
    if damage:
        return damage
    if isinstance(exc, av.error.InvalidDataError):
        return "not a media file (ffmpeg could not find a container format)"
    return f"cannot open media ({av_message(exc)})"


def _mp4_damage(path: Path) -> str | None:
    """Why an ISO-BMFF file (ftyp first) is unplayable at the box level, or None.

    FFmpeg reports a missing moov only in its log (and FFmpeg 8 even opens such a file with one
    codec-less data stream), so the top-level boxes are walked here instead.
    """
    try:
        with open(open_regular(path), "rb") as f:
            end = f.seek(0, 2)
            offset = 0
            kinds: list[bytes] = []
            while offset + 8 <= end:
                f.seek(offset)
                header = f.read(16)
                size = int.from_bytes(header[:4], "big")
                kinds.append(header[4:8])
                if kinds[0] != b"ftyp":
                    return None
                if size == 1 and len(header) == 16:
                    size = int.from_bytes(header[8:16], "big")
                elif size == 0:
                    # The box runs to the end of the file.
                    size = end - offset
                if size < 8:
                    return None
                if offset + size > end and kinds[-1] == b"moov":
                    return "truncated or incomplete MP4 (moov atom cut short)"
                offset += size
    except OSError:
        return None
    if kinds and b"moov" not in kinds:
        return "truncated or incomplete MP4 (no moov atom)"
    return None


def video_stream(container: av.container.InputContainer) -> VideoStream | None:
    """The stream probe and sampler analyse: the first video stream that is not cover art."""
    for stream in container.streams.video:
        # Cover art in music files is a one-picture "video" stream.
        if not stream.disposition & av.stream.Disposition.attached_pic:
            return stream
    return None


def _check_size(width: int, height: int) -> None:
    if width > MAX_SIDE or height > MAX_SIDE:
        raise UnsupportedMedia(f"frame size {width}x{height} exceeds the {MAX_SIDE}-pixel limit")


def _average_fps(
    stream: VideoStream, frame_count: int | None, duration: float, pts: list[int]
) -> float:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate:
            return float(rate)
    if frame_count and duration > 0:
        return frame_count / duration
    gaps = _gaps(pts)
    if gaps and stream.time_base:
        return float(1 / (statistics.median(gaps) * stream.time_base))
    return 0.0


def _looks_vfr(pts: list[int]) -> bool:
    gaps = _gaps(pts)
    if len(gaps) < 3:
        return False
    median = statistics.median(gaps)
    irregular = sum(1 for gap in gaps if abs(gap - median) > _VFR_GAP_TOLERANCE * median)
    return irregular > _VFR_IRREGULAR_SHARE * len(gaps)


def _gaps(pts: list[int]) -> list[int]:
    # Packets arrive in decode order; B-frames make PTS non-monotonic until sorted.
    ordered = sorted(set(pts))
    return [b - a for a, b in pairwise(ordered)]


def av_message(exc: BaseException | None) -> str:
    """FFmpeg's own words for an error, without the errno and path PyAV adds."""
    if isinstance(exc, av.error.FFmpegError) and exc.strerror:
        return exc.strerror
    return str(exc)
