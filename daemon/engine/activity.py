"""Activity pre-pass: how much a window of a recording changes, from small, sparse frames, so
chunks where nothing changes need not go to the model (sampling.skip_static)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from daemon.engine.planner import TEMPORAL_PATCH, evenly_spaced
from daemon.engine.sampler import sample_frames
from daemon.models import ChunkWindow

if TYPE_CHECKING:
    from pathlib import Path

# Size the pre-pass decodes to: enough for an object of a few percent of the picture to move
# many pixels, small enough that swscale and numpy cost nothing next to decoding.
SCAN_SIZE = (128, 72)
# A pixel counts as changed when its luma moves by more than this (out of 255): above the
# flicker of compression and sensor noise once the picture is scaled down this far.
PIXEL_DELTA = 24
# Scan frames are compared in blocks of this many seconds, so a two-hour file is never held whole.
_BLOCK_S = 120.0


@dataclass(frozen=True, slots=True)
class StaticSettings:
    """sampling.skip_static and its knobs, as they apply to one recording (watch overrides in)."""

    threshold: float  # share of pixels that must change between scan frames to count as activity
    static_fps: float  # 0: a static chunk is not sent to the model; else its sampling rate
    scan_fps: float  # rate of the pre-pass


@dataclass(frozen=True, slots=True)
class Activity:
    """Change scores of one window: scores[i] is the share of pixels that changed between the
    scan frames at times[i] and times[i + 1]."""

    times: tuple[float, ...]
    scores: tuple[float, ...]

    @property
    def peak(self) -> float:
        return max(self.scores, default=0.0)

    def is_static(self, threshold: float) -> bool:
        return self.peak <= threshold


def luma(image: np.ndarray) -> np.ndarray:
    """BT.601 luma of an (H, W, 3) uint8 RGB picture, as int16 (so differences do not wrap)."""
    rgb = image.astype(np.int32)
    return ((77 * rgb[..., 0] + 150 * rgb[..., 1] + 29 * rgb[..., 2]) >> 8).astype(np.int16)


def change_score(a: np.ndarray, b: np.ndarray, delta: int = PIXEL_DELTA) -> float:
    """Share of pixels whose luma differs by more than `delta` between two pictures."""
    return float(np.count_nonzero(np.abs(luma(a) - luma(b)) > delta)) / (a.shape[0] * a.shape[1])


def scan_times(start_s: float, end_s: float, fps: float) -> tuple[float, ...]:
    """Times of the pre-pass in [start_s, end_s]: both ends included, gaps of at most 1/fps."""
    span = max(end_s - start_s, 0.0)
    n = max(2, math.ceil(span * fps) + 1)
    return tuple(round(start_s + i * span / (n - 1), 6) for i in range(n))


def scan_window(path: str | Path, start_s: float, end_s: float, fps: float) -> Activity:
    """Decode `path` at `fps` over [start_s, end_s], small, and score each step's change.

    Uses the sampler's sparse path (non-reference pictures far from a scan time are not
    decoded), in blocks of _BLOCK_S so memory stays flat on long windows. Raises UnsupportedMedia
    like the sampler."""
    times = scan_times(start_s, end_s, fps)
    scores: list[float] = []
    previous: np.ndarray | None = None
    i = 0
    while i < len(times):
        block = [t for t in times[i:] if t < times[i] + _BLOCK_S]
        frames = sample_frames(path, block, *SCAN_SIZE)
        for frame in frames:
            if previous is not None:
                scores.append(change_score(previous, frame.image))
            previous = frame.image
        i += len(block)
    return Activity(times, tuple(scores))


def static_window(window: ChunkWindow, static_fps: float) -> ChunkWindow | None:
    """What runs for a chunk found static: None (not sent to the model) when static_fps is 0,
    else the same span sampled at static_fps (never more frames than planned, an even count)."""
    if static_fps <= 0:
        return None
    span = window.end_s - window.start_s
    n = max(TEMPORAL_PATCH, round(span * static_fps))
    n += n % TEMPORAL_PATCH
    if n >= len(window.sample_times):
        return window
    return ChunkWindow(
        window.index,
        window.start_s,
        window.end_s,
        evenly_spaced(window.start_s, window.end_s, n),
        window.width,
        window.height,
    )
