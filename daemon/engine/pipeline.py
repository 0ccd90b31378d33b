"""Analyse one chunk: sample its frames (and transcribe its audio), ask the analyzer with both,
turn the answer into checked events."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from daemon.engine.activity import StaticSettings, scan_window, static_window
from daemon.engine.alerts import normalize_hits, split_hits
from daemon.engine.events import Candidate, Counts, normalize
from daemon.engine.prompts import build_prompt, transcript_text
from daemon.engine.sampler import sample_frames
from daemon.models import ChunkInput, ChunkWindow, Frame, RuleHit, RuleQuestion

if TYPE_CHECKING:
    from daemon.engine.analyzer import Analyzer
    from daemon.engine.speech import Transcriber, Transcript


@dataclass(frozen=True, slots=True)
class ChunkResult:
    events: list[Candidate]
    counts: Counts
    frame_times: tuple[float, ...]
    decode_s: float
    analyze_s: float
    analyzer_stats: dict[str, Any] = field(default_factory=dict)
    # Set when the activity pre-pass found the chunk static: what it measured and what was done
    # ("skipped": not sent to the model; "low_fps": sampled at static_fps).
    static: dict[str, Any] | None = None
    # Alert rules the chunk was asked (names) and those its answer says happened.
    hits: tuple[RuleHit, ...] = ()
    asked: tuple[str, ...] = ()
    refused_hits: int = 0
    transcript: Transcript | None = None
    # Transcript lines that did not fit the prompt's speech.prompt_tokens.
    speech_left_out: int = 0
    # Why the chunk was not sent to the model although not static: no real frame in its window.
    empty: str | None = None


@dataclass(frozen=True, slots=True)
class Prepared:
    """A chunk's frames and transcript, ready for the analyzer (the part that can run ahead of
    the GPU).

    `window` is what was planned; `frames` were sampled for `used` (the same window, or fewer
    frames when found static); `frames` is empty when the chunk is skipped as static. The
    transcript (speech on) is made whether or not the chunk is static: what is said over a
    still slide is the point of a lecture."""

    path: str
    window: ChunkWindow
    used: ChunkWindow | None
    frames: tuple[Frame, ...]
    decode_s: float
    static: dict[str, Any] | None = None
    transcript: Transcript | None = None
    empty: str | None = None  # no frame of the file in the window: not sent to the model


# A sampled frame further than this from its window is not the window's: the sampler gives the
# last frame for every time after it, so a file whose timestamps claim more than its frames
# cover would otherwise send the model copies of one picture for every chunk of the gap.
FRAME_REACH_S = 1.0


def prepare_chunk(
    path: str,
    window: ChunkWindow,
    rotation: int,
    static: StaticSettings | None = None,
    hwaccel: str | None = None,
    transcriber: Transcriber | None = None,
    duration_s: float | None = None,
) -> Prepared:
    """Sample `window` (after the activity pre-pass when `static` is given), then transcribe
    its audio with `transcriber` (reading up to `duration_s`). Raises UnsupportedMedia when the
    window's video cannot be decoded; audio problems only ever end up in the transcript."""
    t0 = time.perf_counter()
    used: ChunkWindow | None = window
    note: dict[str, Any] | None = None
    if static is not None:
        activity = scan_window(path, window.start_s, window.end_s, static.scan_fps)
        if activity.is_static(static.threshold):
            used = static_window(window, static.static_fps)
            note = {
                "action": "skipped" if used is None else "low_fps",
                "peak_change": round(activity.peak, 5),
                "threshold": static.threshold,
                "scan_fps": static.scan_fps,
                "scan_frames": len(activity.times),
            }
    frames = (
        ()
        if used is None
        else tuple(
            sample_frames(
                path, used.sample_times, used.width, used.height, rotation, hwaccel=hwaccel
            )
        )
    )
    empty = None
    if frames and not any(
        window.start_s - FRAME_REACH_S <= f.t_s <= window.end_s + FRAME_REACH_S for f in frames
    ):
        near = min(frames, key=lambda f: abs(f.t_s - window.start_s)).t_s
        empty = (
            f"no frame of the file in {window.start_s:.1f}-{window.end_s:.1f} s (nearest at "
            f"{near:.1f} s): not sent to the model"
        )
        used, frames = None, ()
    decode_s = time.perf_counter() - t0
    transcript = (
        transcriber.transcribe(path, window.start_s, window.end_s, duration_s)
        if transcriber is not None
        else None
    )
    return Prepared(path, window, used, frames, decode_s, note, transcript, empty)


def analyze_prepared(
    prepared: Prepared,
    analyzer: Analyzer,
    task: str,
    max_events: int,
    rules: tuple[RuleQuestion, ...] = (),
    speech_tokens: int = 0,
) -> ChunkResult:
    """Run `analyzer` on prepared frames and their transcript (at most `speech_tokens` of it in
    the prompt) and normalise what it returns; a chunk skipped as static gives no events
    without calling it. `rules`: the alert rules asked in the same answer."""
    window = prepared.window
    said = prepared.transcript.utterances if prepared.transcript is not None else ()
    if prepared.used is None:
        return ChunkResult(
            [],
            Counts(),
            (),
            prepared.decode_s,
            0.0,
            {},
            prepared.static,
            transcript=prepared.transcript,
            empty=prepared.empty,
        )
    t1 = time.perf_counter()
    speech, left_out = transcript_text(said, speech_tokens)
    chunk = ChunkInput(
        recording_path=prepared.path,
        index=window.index,
        start_s=window.start_s,
        end_s=window.end_s,
        prompt=build_prompt(task, window.start_s, window.end_s, max_events, rules, speech),
        frames=prepared.frames,
        rules=rules,
        speech=said,
    )
    result = _finish(chunk, analyzer, prepared.decode_s, t1, prepared.static)
    return replace(result, transcript=prepared.transcript, speech_left_out=left_out)


def _finish(
    chunk: ChunkInput, analyzer: Analyzer, decode_s: float, t1: float, static: dict[str, Any] | None
) -> ChunkResult:
    raw = analyzer.analyze(chunk)
    t2 = time.perf_counter()
    frame_times = tuple(f.t_s for f in chunk.frames)
    items, found = split_hits(raw if isinstance(raw, list) else [], (r.name for r in chunk.rules))
    events, counts = normalize(items, chunk.start_s, chunk.end_s, frame_times)
    if not isinstance(raw, list):
        counts.invalid += 1
    hits, refused = normalize_hits(found, chunk.start_s, chunk.end_s, chunk.frames)
    stats = dict(getattr(analyzer, "last_stats", None) or {})
    return ChunkResult(
        events,
        counts,
        frame_times,
        decode_s,
        t2 - t1,
        stats,
        static,
        tuple(hits),
        tuple(r.name for r in chunk.rules),
        refused,
    )
