"""Chunk planning: overlapping windows over a recording, sample times and frame size per chunk."""

from __future__ import annotations

import math

from daemon.models import ChunkWindow, MediaInfo

# Qwen3-VL: patch 16 merged 2x2, so frame sides are multiples of 32; frames go in pairs.
SIDE_MULTIPLE = 32
TEMPORAL_PATCH = 2


def plan_windows(duration_s: float, seconds: float, overlap_s: float) -> list[tuple[float, float]]:
    """Chunk k covers [k*(L-O), k*(L-O)+L] clipped to the duration; together they cover it all.

    A recording no longer than L is one chunk. The last chunk ends exactly at the duration.
    """
    if seconds <= 0 or not 0 <= overlap_s < seconds:
        raise ValueError("need seconds > 0 and 0 <= overlap < seconds")
    if duration_s <= 0:
        return []
    step = seconds - overlap_s
    windows: list[tuple[float, float]] = []
    k = 0
    while True:
        start = k * step
        end = min(start + seconds, duration_s)
        windows.append((round(start, 6), round(end, 6)))
        if end >= duration_s:
            return windows
        k += 1


def sample_times(start_s: float, end_s: float, fps: float) -> tuple[float, ...]:
    """Sample times inside [start_s, end_s]: about `fps` per second, an even count, at least 2.

    Each sample sits in the middle of its slot, so a window's first and last samples stay inside it.
    """
    span = max(end_s - start_s, 0.0)
    n = max(TEMPORAL_PATCH, round(span * fps))
    return evenly_spaced(start_s, end_s, n + n % TEMPORAL_PATCH)


def evenly_spaced(start_s: float, end_s: float, n: int) -> tuple[float, ...]:
    """n times, each in the middle of its slot of [start_s, end_s] (how a stored plan is replayed)."""
    slot = max(end_s - start_s, 0.0) / n
    return tuple(round(start_s + (i + 0.5) * slot, 6) for i in range(n))


def _round_side(x: float) -> int:
    return max(SIDE_MULTIPLE, int(round(x / SIDE_MULTIPLE)) * SIDE_MULTIPLE)


def frame_size(
    width: int, height: int, max_side: int, max_pixels: int | None = None
) -> tuple[int, int]:
    """Output (width, height) for a display size: aspect kept, longest side <= max_side,
    width*height <= max_pixels when given, both sides multiples of 32, never upscaled beyond
    rounding to the next multiple of 32."""
    if width <= 0 or height <= 0:
        raise ValueError("frame size must be positive")
    scale = min(1.0, max_side / max(width, height))
    if max_pixels is not None and width * height * scale * scale > max_pixels:
        scale = math.sqrt(max_pixels / (width * height))
    w, h = _round_side(width * scale), _round_side(height * scale)
    # Rounding may overshoot the limits; step down in multiples of 32 until both hold.
    while max(w, h) > max(max_side, SIDE_MULTIPLE) or (
        max_pixels is not None and w * h > max_pixels and max(w, h) > SIDE_MULTIPLE
    ):
        if w >= h:
            w -= SIDE_MULTIPLE
        else:
            h -= SIDE_MULTIPLE
        w, h = max(w, SIDE_MULTIPLE), max(h, SIDE_MULTIPLE)
    return w, h


def plan_chunks(
    media: MediaInfo,
    *,
    seconds: float,
    overlap_s: float,
    fps: float,
    max_side: int,
    max_pixels: int | None = None,
) -> list[ChunkWindow]:
    """The whole plan for one recording."""
    dw, dh = media.display_size
    w, h = frame_size(dw, dh, max_side, max_pixels)
    return [
        ChunkWindow(
            index=i, start_s=start, end_s=end, sample_times=sample_times(start, end, fps), width=w, height=h
        )
        for i, (start, end) in enumerate(plan_windows(media.duration_s, seconds, overlap_s))
    ]
