"""Frozen data objects that cross module boundaries and are handed to plugins (never ORM rows)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
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
    has_audio: bool = False  # an audio stream exists (speech.mode = "auto" transcribes only then)

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
class RuleQuestion:
    """One `[[alerts]]` rule as an analyzer is asked about it: did `when` happen in this chunk
    (lasting at least `min_duration_s`)? `name` is the rule's slug."""

    name: str
    when: str
    min_duration_s: float = 0.0


@dataclass(frozen=True, slots=True)
class Utterance:
    """One stretch of speech the engine transcribed, on the recording's clock, not yet stored.

    `start_s`/`end_s` come from the voice activity detector (or the model's timestamps when it is
    off); `language` is the configured or detected ISO 639-1 code."""

    start_s: float
    end_s: float
    text: str
    language: str | None = None
    avg_logprob: float | None = None
    no_speech_prob: float | None = None


@dataclass(frozen=True, slots=True)
class ChunkInput:
    """What an Analyzer receives for one chunk (the `make_analyzer` contract). `rules`: the alert
    rules that apply to this recording (empty without [[alerts]]); the prompt then asks them too,
    and an analyzer may answer each with a rule hit (README, "Your own model")."""

    recording_path: str
    index: int
    start_s: float
    end_s: float
    prompt: str
    frames: tuple[Frame, ...]
    rules: tuple[RuleQuestion, ...] = ()
    # What is said in the chunk (speech.mode on), also in `prompt`; () without a transcript.
    speech: tuple[Utterance, ...] = ()


@dataclass(frozen=True, slots=True)
class RuleHit:
    """A rule the chunk's answer says happened, checked and placed on the recording's clock: an
    alert candidate before its second look. `thumbnail` is a JPEG of the sampled frame nearest
    its start (at `thumbnail_s`)."""

    rule: str
    start_s: float
    end_s: float
    why: str
    evidence_s: float | None = None
    thumbnail: bytes | None = None
    thumbnail_s: float | None = None


@dataclass(frozen=True, slots=True)
class VerifyInput:
    """What an analyzer's `verify(request)` receives: one rule's candidate, to be confirmed or
    rejected from `frames` (sampled more densely and sharper than the chunk) of the window
    [window_start_s, window_end_s] around the candidate [start_s, end_s]. `prompt` asks the
    yes/no question; answer {"happened": bool, "reason": str}."""

    recording_path: str
    rule: str
    when: str
    min_duration_s: float
    start_s: float
    end_s: float
    window_start_s: float
    window_end_s: float
    prompt: str
    frames: tuple[Frame, ...]


@dataclass(frozen=True, slots=True)
class Candidate:
    """An event checked and placed on the recording's clock by the engine, not yet stored."""

    start_s: float
    end_s: float
    label: str
    description: str
    confidence: float | None = None
    evidence_s: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class EventSpan:
    """A stored event as the border merge sees it: its id, label and times."""

    id: int
    label: str
    start_s: float
    end_s: float


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
    # The absolute path of its picture (a JPEG under the media folder), when it has one: filled
    # for the events handed to plugins (events_found, recording_finished), None elsewhere.
    thumbnail: str | None = None


def thumbnail_path(media_dir: str | os.PathLike[str], recording_id: int, event_id: int) -> Path:
    """Where an event's thumbnail (JPEG) lives under the media directory (`Config.media_dir()`):
    `<media_dir>/<recording id>/<event id>.jpg`. The file may not exist (no frame, not made yet)."""
    return Path(media_dir) / str(int(recording_id)) / f"{int(event_id)}.jpg"


def event_json(e: EventInfo, *, provenance: bool = True) -> dict[str, Any]:
    """One event as JSON (`analyze --json`, `events --json`, search hits, the web API, webhook
    payloads): id, chunk, start_s, end_s, label, description, confidence and evidence_s when
    known, and the provenance unless `provenance` is False."""
    out: dict[str, Any] = {
        "id": e.id,
        "chunk": e.chunk_index,
        "start_s": e.start_s,
        "end_s": e.end_s,
        "label": e.label,
        "description": e.description,
    }
    if e.confidence is not None:
        out["confidence"] = e.confidence
    if e.evidence_s is not None:
        out["evidence_s"] = e.evidence_s
    if provenance:
        out["provenance"] = dict(e.provenance)
    return out


@dataclass(frozen=True, slots=True)
class SpeechSegment:
    """One stored speech segment: what was said from `start_s` to `end_s` (seconds from the
    recording's start), in `language`, with the ASR model and settings that wrote it."""

    id: int | None
    recording_id: int
    chunk_index: int
    start_s: float
    end_s: float
    text: str
    language: str | None = None
    provenance: dict[str, Any] = field(default_factory=dict)


def speech_json(s: SpeechSegment, *, provenance: bool = False) -> dict[str, Any]:
    """One speech segment as JSON (`analyze --json`'s `speech`, `events --json` and search hits,
    marked there with `"kind": "speech"`, the web API): id, chunk, start_s, end_s, text,
    language, and the provenance when `provenance` is True."""
    out: dict[str, Any] = {
        "id": s.id,
        "chunk": s.chunk_index,
        "start_s": s.start_s,
        "end_s": s.end_s,
        "text": s.text,
        "language": s.language,
    }
    if provenance:
        out["provenance"] = dict(s.provenance)
    return out


@dataclass(frozen=True, slots=True)
class ChunkInfo:
    """One chunk of a recording: its window, its state and, once analysed, its provenance."""

    recording_id: int
    index: int
    start_s: float
    end_s: float
    frames: int
    status: str  # pending, running, done, failed
    chunks_total: int
    width: int = 0  # frame size planned for the model (multiples of 32)
    height: int = 0
    attempts: int = 0
    error: str | None = None
    owner: str | None = None  # who holds it while running ("host:pid")
    started_at: float | None = None
    finished_at: float | None = None
    provenance: dict[str, Any] = field(default_factory=dict)


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
        done = (
            "not sent to the model"
            if self.action == "skipped"
            else "sampled at the static floor rate"
        )
        return f"no change above {self.threshold:g} (largest {self.peak_change:.4f}): {done}"


ALERT_STATES = ("candidate", "confirmed", "rejected", "unverified", "suppressed")


@dataclass(frozen=True, slots=True)
class AlertInfo:
    """One alert: a rule's candidate from a chunk's answer and what became of it.

    `state` moves `candidate -> confirmed | rejected | unverified(reason)` (or `suppressed`:
    within the rule's cooldown of an alert that fired). `fired` alerts are delivered, once per id.
    `why` is the chunk answer's reason; `verification` the second look (its answer, reason,
    window, frames, timing and model), empty when none ran; `reason` the outcome's reason as a
    person reads it. Times are seconds from the recording's start."""

    id: int
    recording_id: int
    chunk_index: int
    rule: str
    severity: str
    state: str
    start_s: float
    end_s: float
    why: str
    reason: str | None = None
    fired: bool = False
    verification: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    thumbnail: bytes | None = None  # JPEG
    thumbnail_s: float | None = None
    created_at: float | None = None
    decided_at: float | None = None


def alert_json(a: AlertInfo, recording: str | None = None) -> dict[str, Any]:
    """One alert as JSON (`framewatch alerts --json`, webhook and MQTT payloads): id, rule,
    recording (its path, when given), start_s, end_s, outcome, reason, thumbnail ({"t_s",
    "data_url"} of a JPEG, or null), then severity, why, fired, verification and provenance."""
    import base64

    thumb = None
    if a.thumbnail:
        thumb = {
            "t_s": a.thumbnail_s,
            "data_url": "data:image/jpeg;base64," + base64.b64encode(a.thumbnail).decode(),
        }
    return {
        "id": a.id,
        "rule": a.rule,
        "recording": recording,
        "recording_id": a.recording_id,
        "start_s": a.start_s,
        "end_s": a.end_s,
        "outcome": a.state,
        "reason": a.reason,
        "thumbnail": thumb,
        "severity": a.severity,
        "why": a.why,
        "fired": a.fired,
        "chunk": a.chunk_index,
        "verification": dict(a.verification),
        "provenance": dict(a.provenance),
    }


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
    attempts: int = (
        0  # unexpected errors while processing it so far (the daemon retries, then fails it)
    )


@dataclass(frozen=True, slots=True)
class Chapter:
    """One chapter of a recording's summary; chapters cover the recording without gaps or
    overlaps, in order (seconds from the recording's start)."""

    start_s: float
    end_s: float
    title: str


@dataclass(frozen=True, slots=True)
class Summary:
    """What a recording was about, made by a text pass over its stored events (and speech):
    a title, a few sentences, chapters, the ids of its key events, and how it was made
    (model, prompt hash, batches, corrections)."""

    recording_id: int
    title: str
    text: str
    chapters: tuple[Chapter, ...]
    key_events: tuple[int, ...]
    provenance: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SummaryInput:
    """A text-only request to an analyzer's optional `summarize` (README, "Your own model"):
    `prompt` holds a recording's stored events (or the summaries of its batches, to merge) and
    the task; the answer is a JSON object {"title", "summary", "chapters": [{"start_s", "end_s",
    "title"}], "key_events": [event ids]} within these bounds, or {"error": why}."""

    recording_path: str
    prompt: str
    max_chapters: int = 12
    max_key_events: int = 10
    title_chars: int = 80
    text_chars: int = 800
    chapter_title_chars: int = 60
    max_new_tokens: int = 768


@dataclass(frozen=True, slots=True)
class DigestInfo:
    """A digest: one Markdown file (`path`, its text `markdown`) over the recordings that were
    finished from `since` to `until` (seconds since the epoch), each with its summary (None when
    it has none), oldest first; `folder` when only one folder's recordings count."""

    path: str
    since: float
    until: float
    markdown: str
    recordings: tuple[tuple[RecordingInfo, Summary | None], ...]
    folder: str | None = None


def summary_json(s: Summary) -> dict[str, Any]:
    """A summary as JSON (`analyze --json`, `summarize --json`, the web API, digests):
    {"title", "text", "chapters": [{"start_s", "end_s", "title"}], "key_events": [ids],
    "provenance"}."""
    return {
        "title": s.title,
        "text": s.text,
        "chapters": [
            {"start_s": c.start_s, "end_s": c.end_s, "title": c.title} for c in s.chapters
        ],
        "key_events": list(s.key_events),
        "provenance": dict(s.provenance),
    }
