"""What a chunk commit stores beside its events: its provenance (how it was made), the alert
candidates of its rule answers, and the speech segments a neighbouring chunk has not stored
already (daemon/worker.py commits them)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import structlog

from daemon.engine.alerts import capped
from daemon.engine.pipeline import ChunkResult
from daemon.engine.prompts import rules_hash
from daemon.engine.speech import Transcriber, Transcript, merge_speech
from daemon.models import ChunkInfo, ChunkWindow, MediaInfo, RecordingInfo, RuleQuestion, Utterance

if TYPE_CHECKING:
    from daemon.config import Config
    from daemon.store import Store

log = structlog.get_logger(__name__)


def chunk_provenance(
    own: dict[str, Any],
    settings: dict[str, Any],
    window: ChunkWindow,
    result: ChunkResult,
    memory: dict[str, Any],
) -> dict[str, Any]:
    """A chunk's provenance: the analyzer's own (`own`: model, backend), the prompt hash and
    sampling settings with what was really sent (frames, size), the memory plan, the answer's
    counts and timings, and why the model was not asked (static, no frames) or which rules it
    was asked."""
    sent = result.frame_times if result.static or result.empty else window.sample_times
    provenance = {
        **own,
        "prompt_hash": settings["prompt_hash"],
        "sampling": {
            **settings["sampling"],
            "frames": len(sent),
            "width": window.width,
            "height": window.height,
        },
        "memory": memory,
        "counts": result.counts.as_dict(),
        "decode_s": round(result.decode_s, 3),
        "analyze_s": round(result.analyze_s, 3),
        "analyzer": result.analyzer_stats,
    }
    if result.empty is not None:
        provenance["no_frames"] = result.empty  # a gap in the file's frames: model not asked
    if result.static is not None:
        # Recorded, not silent: a person can see the chunk was judged static, and why.
        provenance["static"] = result.static
        provenance["skipped_static"] = result.static["action"] == "skipped"
    if result.asked:
        # Only when rules were asked: a chunk without them stores what it always stored.
        provenance["alerts"] = {
            "asked": list(result.asked),
            "hits": [h.rule for h in result.hits],
            "refused": result.refused_hits,
        }
    return provenance


def alert_candidates(
    config: Config,
    chunk: ChunkInfo,
    task: str,
    rules: tuple[RuleQuestion, ...],
    result: ChunkResult,
    own: dict[str, Any],
) -> dict[str, Any]:
    """The chunk commit's alert arguments: its hits as candidates, with their severity, the
    first answer's provenance, and which get no second look (beyond the per-chunk cap)."""
    if not result.hits:
        return {}
    severity = {r.name: r.severity for r in config.alerts}
    verifying = [h for h in result.hits if (r := config.rule(h.rule)) is not None and r.verify]
    cap = config.alerting.max_verifications_per_chunk
    _, over = capped(verifying, severity, cap)
    notes = {
        h.rule: f"one of more than {cap} candidates in chunk {chunk.index} "
        "(alerting.max_verifications_per_chunk)"
        for h in over
    }
    return {
        "hits": result.hits,
        "severity": severity,
        "alert_provenance": {
            **own,
            "prompt_hash": rules_hash(task, rules),
            "chunk": chunk.index,
            "asked": list(result.asked),
        },
        "alert_notes": notes,
    }


def speech_to_store(
    store: Store,
    transcriber: Callable[[], Transcriber],
    rec: RecordingInfo,
    media: MediaInfo,
    window: ChunkWindow,
    transcript: Transcript | None,
    left_out: int,
) -> tuple[list[Utterance], dict[str, Any]]:
    """The segments a chunk stores (without what a neighbouring chunk already stored) and its
    `speech` provenance: the recogniser, what was read, found and merged, and any note or error
    about the audio (the caller asks only when speech is on). `transcriber` gives the recogniser
    only when its provenance is needed: a file without audio never loads it."""
    if transcript is None:  # auto, and the file has no audio stream
        return [], {"note": "no audio stream" if not media.has_audio else "not transcribed"}
    kept, merged = merge_speech(
        store.chunks.neighbour_speech(rec.id, window.index),
        transcript.utterances,
        overlaps(window, store.chunks.of(rec.id)),
    )
    heard = {"asr": transcriber().provenance(), **transcript.provenance(), "merged": merged}
    if left_out:
        heard["prompt_left_out"] = left_out
    if transcript.error:
        log.warning("chunk_speech_failed", reason=transcript.error)
    return kept, heard


def overlaps(window: ChunkWindow, chunks: Sequence[ChunkInfo]) -> list[tuple[float, float]]:
    """Where `window` overlaps its neighbouring chunks (the spans a merge looks at twice)."""
    out = []
    for other in chunks:
        if other.index in (window.index - 1, window.index + 1):
            lo, hi = max(window.start_s, other.start_s), min(window.end_s, other.end_s)
            if hi >= lo:
                out.append((lo, hi))
    return out
