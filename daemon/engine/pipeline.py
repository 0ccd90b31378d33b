"""Analyse one chunk: sample its frames, ask the analyzer, turn the answer into checked events."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from daemon.engine.events import Candidate, Counts, normalize
from daemon.engine.prompts import build_prompt
from daemon.engine.sampler import sample_frames
from daemon.models import ChunkInput, ChunkWindow

if TYPE_CHECKING:
    from daemon.engine.backends import Analyzer


@dataclass(frozen=True, slots=True)
class ChunkResult:
    events: list[Candidate]
    counts: Counts
    frame_times: tuple[float, ...]
    decode_s: float
    analyze_s: float
    analyzer_stats: dict[str, Any] = field(default_factory=dict)


def analyze_chunk(
    path: str,
    window: ChunkWindow,
    rotation: int,
    analyzer: Analyzer,
    task: str,
    max_events: int,
) -> ChunkResult:
    """Sample `window` from `path`, run `analyzer` on it and normalise what it returns.

    Raises UnsupportedMedia when the window cannot be decoded; analyzer errors propagate."""
    t0 = time.perf_counter()
    frames = sample_frames(path, window.sample_times, window.width, window.height, rotation)
    t1 = time.perf_counter()
    chunk = ChunkInput(
        recording_path=path,
        index=window.index,
        start_s=window.start_s,
        end_s=window.end_s,
        prompt=build_prompt(task, window.start_s, window.end_s, max_events),
        frames=tuple(frames),
    )
    raw = analyzer.analyze(chunk)
    t2 = time.perf_counter()
    frame_times = tuple(f.t_s for f in frames)
    events, counts = normalize(raw if isinstance(raw, list) else [], window.start_s, window.end_s, frame_times)
    if not isinstance(raw, list):
        counts.invalid += 1
    stats = dict(getattr(analyzer, "last_stats", None) or {})
    return ChunkResult(events, counts, frame_times, t1 - t0, t2 - t1, stats)
