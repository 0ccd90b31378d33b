"""Frozen data objects that cross module boundaries and are handed to plugins (never ORM rows)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np


def hms(t: float) -> str:
    """HH:MM:SS of a time in seconds from a recording's start (hours are not capped at 99)."""
    s = max(0, int(t))
    return f"{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


@dataclass(frozen=True, slots=True)
class MediaInfo:
    """What `engine.probe.probe` learned about a file."""

    path: str
    duration_s: float
    width: int  # as stored, before rotation
    height: int
    fps: float  # average frame rate
    rotation: int  # display rotation in degrees, one of 0, 90, 180, 270 (clockwise to apply)
    codec: str
    frame_count: int | None = None
    variable_frame_rate: bool = False

    @property
    def display_size(self) -> tuple[int, int]:
        """(width, height) as a viewer sees the picture, after rotation."""
        if self.rotation in (90, 270):
            return self.height, self.width
        return self.width, self.height


@dataclass(frozen=True, slots=True)
class Frame:
    """One sampled frame: `t_s` is its PTS in seconds from the recording's start."""

    t_s: float
    image: np.ndarray  # H x W x 3, uint8, RGB, upright


@dataclass(frozen=True, slots=True)
class ChunkWindow:
    """One planned chunk: [start_s, end_s] of the recording, with the sample times inside it."""

    index: int
    start_s: float
    end_s: float
    sample_times: tuple[float, ...]
    width: int  # frame size sent to the model (multiples of 32)
    height: int


@dataclass(frozen=True, slots=True)
class ChunkInput:
    """What an Analyzer receives for one chunk (the `make_analyzer` contract)."""

    recording_path: str
    index: int
    start_s: float
    end_s: float
    prompt: str
    frames: tuple[Frame, ...]


@dataclass(frozen=True, slots=True)
class EventInfo:
    """One stored event; times are seconds from the recording's start."""

    id: int | None
    recording_id: int
    chunk_index: int
    start_s: float
    end_s: float
    label: str
    description: str
    confidence: float | None = None
    evidence_s: float | None = None
    provenance: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ChunkInfo:
    """One chunk of a recording as plugins see it."""

    recording_id: int
    index: int
    start_s: float
    end_s: float
    frames: int
    status: str
    chunks_total: int


@dataclass(frozen=True, slots=True)
class StaticSpan:
    """Consecutive chunks the activity pre-pass found static (`[sampling] skip_static`): nothing
    in them changed by more than `threshold`, so they were not sent to the model ("skipped") or
    were sent at the floor rate `static_fps` ("low_fps"). The span covers those chunks' windows."""

    start_s: float
    end_s: float
    action: str  # "skipped" or "low_fps"
    peak_change: float  # the largest frame-to-frame change the pre-pass measured in the span
    threshold: float
    chunks: int

    @property
    def reason(self) -> str:
        """Why, as a person reads it in a report."""
        done = "not sent to the model" if self.action == "skipped" else "sampled at the static floor rate"
        return f"no change above {self.threshold:g} (largest {self.peak_change:.4f}): {done}"


@dataclass(frozen=True, slots=True)
class RecordingInfo:
    """One recording as plugins see it."""

    id: int
    path: str
    fingerprint: str
    status: str
    reason: str | None
    duration_s: float | None
    profile: str | None = None
    model: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    attempts: int = 0  # unexpected errors while processing it so far (the daemon retries, then fails it)
