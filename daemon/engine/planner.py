"""Chunk planning: overlapping windows over a recording, sample times and frame size per chunk,
and fitting that plan to a GPU memory budget by stepping settings down."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from daemon.engine.budget import round_side, visual_tokens
from daemon.models import ChunkInfo, ChunkWindow, MediaInfo

if TYPE_CHECKING:
    from collections.abc import Iterator

    from daemon.config import Config

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
    w, h = round_side(width * scale, SIDE_MULTIPLE), round_side(height * scale, SIDE_MULTIPLE)
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
            index=i,
            start_s=start,
            end_s=end,
            sample_times=sample_times(start, end, fps),
            width=w,
            height=h,
        )
        for i, (start, end) in enumerate(plan_windows(media.duration_s, seconds, overlap_s))
    ]


def configured_plan(media: MediaInfo, config: Config) -> list[ChunkWindow]:
    """The plan exactly as configured (no memory fitting): chunking and sampling settings."""
    c = config
    return plan_chunks(
        media,
        seconds=c.chunking.seconds,
        overlap_s=c.chunking.overlap_seconds,
        fps=c.sampling.fps,
        max_side=c.sampling.max_side,
        max_pixels=c.sampling.max_pixels,
    )


# -- fitting the plan to a memory budget ------------------------------------------------------------

# Geometric steps for fps and chunk length; frame size steps by one multiple of 32.
RATE_STEP = 0.75
# At run time, after an out-of-memory error, skip to a setting with at least this share fewer
# visual tokens: an OOM says the estimate was off, and one retry per 32 pixels would be slow.
RUNTIME_STEP = 0.2


class ChunkCost(Protocol):
    """What fit_plan needs from a memory estimate (budget.Estimator is one)."""

    def fixed_gib(self) -> float: ...

    def peak_gib(self, frames: int, width: int, height: int) -> float: ...


@dataclass(frozen=True, slots=True)
class Rung:
    """One setting on the way down: longest frame side, frames per second, chunk length."""

    max_side: int
    fps: float
    seconds: float


@dataclass(frozen=True, slots=True)
class Floors:
    min_side: int
    min_fps: float
    min_seconds: float

    @classmethod
    def from_config(cls, config: Config) -> Floors:
        g = config.gpu
        return cls(g.min_side, g.min_fps, g.min_chunk_seconds)


@dataclass(frozen=True, slots=True)
class FittedPlan:
    """A plan whose every chunk fits `budget_gib`, or (fits False) why none does.

    `stepped_down` maps "max_side", "fps", "seconds" to (configured, planned) for what was lowered;
    `floor` is (frames, width, height) of the largest chunk at the last setting tried."""

    windows: tuple[ChunkWindow, ...]
    rung: Rung
    budget_gib: float
    fixed_gib: float
    peaks_gib: tuple[float, ...]
    fits: bool
    reason: str | None = None
    stepped_down: dict[str, tuple[float, float]] = field(default_factory=dict)
    floor: tuple[int, int, int] = (0, 0, 0)

    def describe(self) -> str:
        """ "max_side 640->448, fps 2->1.125" or "nothing"."""
        return describe_steps(self.stepped_down)


def describe_steps(steps: dict[str, Any]) -> str:
    return ", ".join(f"{k} {_num(a)}->{_num(b)}" for k, (a, b) in steps.items()) or "nothing"


def _num(x: float) -> str:
    return f"{x:.4g}"


def _side_floor(start: int, min_side: int) -> int:
    return min(start, max(SIDE_MULTIPLE, math.ceil(min_side / SIDE_MULTIPLE) * SIDE_MULTIPLE))


def ladder(
    start: Rung, floors: Floors, overlap_s: float = 0.0, *, seconds: bool = True
) -> Iterator[Rung]:
    """The settings to try, in order: `start`, then the frame side down to its floor, then fps,
    then (when `seconds`) the chunk length. A floor above the start value leaves that axis alone.

    The order does not depend on the budget, so a larger budget stops at the same rung or an
    earlier one: more budget never gives a chunk fewer tokens."""
    yield start
    side, fps, length = start.max_side, start.fps, start.seconds
    side_floor = _side_floor(start.max_side, floors.min_side)
    while side - SIDE_MULTIPLE >= side_floor:
        side -= SIDE_MULTIPLE
        yield Rung(side, fps, length)
    if side > side_floor:
        side = side_floor
        yield Rung(side, fps, length)
    fps_floor = min(fps, floors.min_fps)
    while fps > fps_floor:
        fps = max(fps_floor, fps * RATE_STEP)
        yield Rung(side, fps, length)
    if not seconds:
        return
    len_floor = min(length, floors.min_seconds)
    while length > len_floor:
        length = max(len_floor, length * RATE_STEP)
        if length <= overlap_s:
            return
        yield Rung(side, fps, length)


def _steps(start: Rung, rung: Rung) -> dict[str, tuple[float, float]]:
    out: dict[str, tuple[float, float]] = {}
    if rung.max_side != start.max_side:
        out["max_side"] = (start.max_side, rung.max_side)
    if rung.fps != start.fps:
        out["fps"] = (start.fps, round(rung.fps, 6))
    if rung.seconds != start.seconds:
        out["seconds"] = (start.seconds, round(rung.seconds, 6))
    return out


def fit_plan(
    media: MediaInfo, config: Config, estimate: ChunkCost, budget_gib: float
) -> FittedPlan:
    """The configured plan, stepped down (frame size, then fps, then chunk length, each to its
    floor in config.gpu) until every chunk's estimated peak fits `budget_gib`.

    Never returns a plan with a chunk over budget: when the weights alone, or the plan at the
    floors, do not fit, `fits` is False, `windows` is empty and `reason` says so."""
    c = config
    dw, dh = media.display_size
    w0, h0 = frame_size(dw, dh, c.sampling.max_side, c.sampling.max_pixels)
    # The side actually planned, so a small video does not step through sizes it never had.
    start = Rung(max(w0, h0), c.sampling.fps, c.chunking.seconds)
    fixed = estimate.fixed_gib()
    floors = Floors.from_config(c)
    if fixed >= budget_gib:
        # Report the floor plan's largest chunk, so the advice covers a whole plan, not the weights.
        *_, bottom = ladder(start, floors, c.chunking.overlap_seconds)
        at_floor = plan_chunks(
            media,
            seconds=bottom.seconds,
            overlap_s=c.chunking.overlap_seconds,
            fps=bottom.fps,
            max_side=bottom.max_side,
            max_pixels=c.sampling.max_pixels,
        )
        return FittedPlan(
            (),
            bottom,
            budget_gib,
            fixed,
            (),
            False,
            f"the model alone needs {fixed:.2f} GiB (weights and CUDA context), over the "
            f"{budget_gib:.2f} GiB budget",
            _steps(start, bottom),
            _largest(at_floor),
        )
    cache: dict[tuple[int, int, int], float] = {}
    rung, windows, peaks = start, [], []
    for rung in ladder(start, floors, c.chunking.overlap_seconds):
        windows = plan_chunks(
            media,
            seconds=rung.seconds,
            overlap_s=c.chunking.overlap_seconds,
            fps=rung.fps,
            max_side=rung.max_side,
            max_pixels=c.sampling.max_pixels,
        )
        peaks = []
        for w in windows:
            key = (len(w.sample_times), w.width, w.height)
            if key not in cache:
                cache[key] = estimate.peak_gib(*key)
            peaks.append(cache[key])
        if max(peaks, default=0.0) <= budget_gib:
            return FittedPlan(
                tuple(windows),
                rung,
                budget_gib,
                fixed,
                tuple(peaks),
                True,
                None,
                _steps(start, rung),
                _largest(windows),
            )
    return FittedPlan(
        (),
        rung,
        budget_gib,
        fixed,
        (),
        False,
        f"even at the floors ({describe_steps(_steps(start, rung))}) a chunk needs "
        f"{max(peaks):.2f} GiB, over the {budget_gib:.2f} GiB budget",
        _steps(start, rung),
        _largest(windows),
    )


def _largest(windows: list[ChunkWindow]) -> tuple[int, int, int]:
    if not windows:
        return (0, 0, 0)
    w = max(windows, key=lambda w: len(w.sample_times) * w.width * w.height)
    return (len(w.sample_times), w.width, w.height)


def window_tokens(window: ChunkWindow) -> int:
    return visual_tokens(len(window.sample_times), window.width, window.height)


def step_down_window(
    window: ChunkWindow,
    media: MediaInfo,
    floors: Floors,
    max_pixels: int | None = None,
    fits: Any = None,
) -> ChunkWindow | None:
    """A smaller version of one planned chunk (same start and end: the plan in the store and the
    overlaps stay as they are), after the ladder's frame-size then fps steps.

    With `fits` (a predicate on a window) the first smaller window it accepts (else the floor);
    without it, the first with at least RUNTIME_STEP fewer visual tokens (else the floor).
    None when nothing smaller is left."""
    span = window.end_s - window.start_s
    frames = len(window.sample_times)
    fps = frames / span if span > 0 else 1.0
    start = Rung(max(window.width, window.height), fps, span)
    dw, dh = media.display_size
    current = window_tokens(window)
    last: ChunkWindow | None = None
    for rung in ladder(start, floors, seconds=False):
        w, h = frame_size(dw, dh, rung.max_side, max_pixels)
        n = len(sample_times(window.start_s, window.end_s, rung.fps)) if rung.fps != fps else frames
        candidate = ChunkWindow(
            window.index,
            window.start_s,
            window.end_s,
            evenly_spaced(window.start_s, window.end_s, n),
            w,
            h,
        )
        tokens = window_tokens(candidate)
        if tokens >= current:
            continue
        last = candidate
        if fits is not None:
            if fits(candidate):
                return candidate
        elif tokens <= (1 - RUNTIME_STEP) * current:
            return candidate
    return last


def window_steps(before: ChunkWindow, after: ChunkWindow) -> dict[str, tuple[float, float]]:
    """What step_down_window lowered, as fit_plan reports it."""
    out: dict[str, tuple[float, float]] = {}
    if (after.width, after.height) != (before.width, before.height):
        out["max_side"] = (max(before.width, before.height), max(after.width, after.height))
    if len(after.sample_times) != len(before.sample_times):
        out["frames"] = (len(before.sample_times), len(after.sample_times))
    return out


def window_of(chunk: ChunkInfo) -> ChunkWindow:
    """A stored chunk as the window it was planned as (a resumed run samples the same frames)."""
    return ChunkWindow(
        index=chunk.index,
        start_s=chunk.start_s,
        end_s=chunk.end_s,
        sample_times=evenly_spaced(chunk.start_s, chunk.end_s, chunk.frames),
        width=chunk.width,
        height=chunk.height,
    )
