"""What the web plugin reads and what it answers: the store reads it needs (a Protocol, so a
read-only Store or a test double fits), the API's response models (the OpenAPI document is
generated from these), and the conversions from the public data objects."""

from __future__ import annotations

import datetime as dt
import mimetypes
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel, Field

from daemon.models import (
    AlertInfo,
    ChunkInfo,
    EventInfo,
    RecordingInfo,
    SpeechSegment,
    Summary,
    event_json,
    hms,
    speech_json,
    summary_json,
)


class _Recordings(Protocol):
    def get(self, recording_id: int) -> RecordingInfo: ...
    def list(self) -> list[tuple[RecordingInfo, int, int]]: ...
    def files(self, recording_id: int) -> list[Any]: ...


class _Chunks(Protocol):
    def of(self, recording_id: int) -> list[ChunkInfo]: ...
    def running(self) -> list[tuple[int, int, str | None, float | None]]: ...


class _Events(Protocol):
    def of(self, recording_id: int | None = None) -> list[EventInfo]: ...
    def get(self, event_id: int) -> EventInfo: ...
    def search(
        self,
        query: str,
        *,
        recording_id: int | None = None,
        since: float | None = None,
        labels: Sequence[str] = (),
        limit: int = 20,
        offset: int = 0,
    ) -> list[Any]: ...


class _Speech(Protocol):
    def of(self, recording_id: int | None = None) -> list[SpeechSegment]: ...


class _Outbox(Protocol):
    def counts(self) -> dict[str, Any]: ...


class _Alerts(Protocol):
    def of(self, recording_id: int | None = None) -> list[AlertInfo]: ...
    def get(self, alert_id: int) -> AlertInfo: ...


class _Summaries(Protocol):
    def get(self, recording_id: int) -> Summary | None: ...


class ReadStore(Protocol):
    """What the web app uses of the store (daemon.store.Store, which plugins see as `app.store`):
    reads only. Search hits carry `event` (or `speech`, for what was said), `recording_path`,
    `recording_status`, `score`, `rank` and `link`."""

    recordings: _Recordings
    chunks: _Chunks
    events: _Events
    speech: _Speech
    outbox: _Outbox
    alerts: _Alerts
    summaries: _Summaries

    def stats(self) -> dict[str, Any]: ...


# -- API models (the OpenAPI document is generated from these) ------------------------------------


class Problem(BaseModel):
    detail: str


class RecordingOut(BaseModel):
    id: int
    path: str
    name: str = Field(description="The file's name.")
    status: str = Field(description="queued, analyzing, done, failed or skipped.")
    reason: str | None = Field(description="Why it failed or was skipped.")
    duration_s: float | None
    profile: str | None
    model: str | None
    chunks_done: int
    chunks_total: int
    page: str = Field(description="URL of its timeline page.")
    video: str = Field(description="URL of its video stream (HTTP Range supported).")


class ChunkOut(BaseModel):
    index: int
    start_s: float
    end_s: float
    frames: int
    status: str
    attempts: int
    error: str | None


class ChapterOut(BaseModel):
    start_s: float = Field(description="Seconds from the recording's start.")
    end_s: float
    title: str


class SummaryOut(BaseModel):
    """A recording's summary (models.summary_json): made by a text pass over its stored events."""

    title: str
    text: str = Field(description="A few sentences on what the recording was about.")
    chapters: list[ChapterOut] = Field(
        description="In order, covering the recording without gaps or overlaps."
    )
    key_events: list[int] = Field(description="Ids of its key events.")
    provenance: dict[str, Any] = Field(
        description="How it was made: model, prompt hash, batches, corrections."
    )


class RecordingDetail(RecordingOut):
    chunks: list[ChunkOut]
    summary: SummaryOut | None = Field(
        description="Its summary and chapters, or null (none made yet, [summary] off, failed, "
        "or its events changed since)."
    )


class EventOut(BaseModel):
    id: int | None
    recording_id: int
    chunk: int
    start_s: float = Field(description="Seconds from the recording's start.")
    end_s: float
    time: str = Field(description="start_s as HH:MM:SS.")
    label: str
    description: str
    confidence: float | None
    evidence_s: float | None = Field(description="Time of the sampled frame it rests on.")
    provenance: dict[str, Any] = Field(description="Model, prompt hash and sampling settings.")
    thumbnail: str | None = Field(
        None,
        description="URL of its picture (JPEG: the frame nearest evidence_s), or null when it "
        "has none.",
    )


class AlertOut(BaseModel):
    id: int
    recording_id: int
    rule: str
    severity: str
    outcome: str = Field(
        description="candidate (waiting for its second look), confirmed, rejected, unverified "
        "or suppressed (within the rule's cooldown)."
    )
    fired: bool = Field(description="Delivered to the rule's plugins.")
    start_s: float
    end_s: float
    time: str = Field(description="start_s as HH:MM:SS.")
    reason: str | None = Field(description="Why this outcome, as a person reads it.")
    why: str = Field(description="The chunk answer's reason for the candidate.")
    thumbnail: str | None = Field(description="URL of its JPEG thumbnail, when it has one.")
    verification: dict[str, Any] = Field(description="The second look: answer, window, frames.")


class SpeechOut(BaseModel):
    id: int | None
    recording_id: int
    chunk: int
    start_s: float = Field(description="Seconds from the recording's start.")
    end_s: float
    time: str = Field(description="start_s as HH:MM:SS.")
    text: str = Field(description="What was said.")
    language: str | None = Field(description="ISO 639-1 code, configured or detected.")
    provenance: dict[str, Any] = Field(description="Speech model and its settings.")


class HitOut(EventOut):
    kind: str = Field("event", description='"event", or "speech" for what was said.')
    text: str | None = Field(
        None, description="Speech hits: what was said (also the description; label is speech)."
    )
    rank: int
    score: float = Field(description="Higher is better; comparable within one search.")
    recording: str = Field(description="The recording's path.")
    recording_status: str
    link: str = Field(description="file:// URL of the recording at the event (#t=seconds).")
    page: str = Field(description="URL of the timeline page at the event.")


class SearchOut(BaseModel):
    query: str
    hits: list[HitOut]


class CurrentChunk(BaseModel):
    recording_id: int
    chunk: int
    owner: str | None
    started_at: float | None


class DeliveryCounts(BaseModel):
    pending: int
    failed: int
    dead: int
    delivered: int


class StatusOut(BaseModel):
    recordings: dict[str, int] = Field(description="Recordings by state.")
    queue_depth: int = Field(description="Recordings waiting or being analysed.")
    chunks_done: int
    chunks_total: int
    running: list[CurrentChunk]
    deliveries: DeliveryCounts


# -- conversions ----------------------------------------------------------------------------------


def recording_out(r: RecordingInfo, done: int, total: int) -> RecordingOut:
    return RecordingOut(
        id=r.id,
        path=r.path,
        name=Path(r.path).name,
        status=r.status,
        reason=r.reason,
        duration_s=r.duration_s,
        profile=r.profile,
        model=r.model,
        chunks_done=done,
        chunks_total=total,
        page=f"/recordings/{r.id}",
        video=f"/api/recordings/{r.id}/video",
    )


def summary_out(s: Summary | None) -> SummaryOut | None:
    return SummaryOut(**summary_json(s)) if s is not None else None


def event_out(e: EventInfo, thumbnail: str | None = None) -> EventOut:
    # models.event_json leaves out unknown confidence and evidence; the API says null.
    fields = {"confidence": None, "evidence_s": None, **event_json(e)}
    return EventOut(**fields, recording_id=e.recording_id, time=hms(e.start_s), thumbnail=thumbnail)


def alert_out(a: AlertInfo) -> AlertOut:
    return AlertOut(
        id=a.id,
        recording_id=a.recording_id,
        rule=a.rule,
        severity=a.severity,
        outcome=a.state,
        fired=a.fired,
        start_s=a.start_s,
        end_s=a.end_s,
        time=hms(a.start_s),
        reason=a.reason,
        why=a.why,
        thumbnail=f"/api/alerts/{a.id}/thumbnail" if a.thumbnail else None,
        verification=dict(a.verification),
    )


def speech_out(s: SpeechSegment) -> SpeechOut:
    return SpeechOut(
        **speech_json(s, provenance=True), recording_id=s.recording_id, time=hms(s.start_s)
    )


def hit_out(h: Any, thumbnail: str | None = None) -> HitOut:
    if h.speech is not None:
        said = h.speech
        fields: dict[str, Any] = {
            **speech_out(said).model_dump(exclude={"language"}),
            "kind": "speech",
            "label": "speech",
            "description": said.text,
            "confidence": None,
            "evidence_s": None,
        }
    else:
        fields = event_out(h.event, thumbnail).model_dump()
    return HitOut(
        **fields,
        rank=h.rank,
        score=h.score,
        recording=h.recording_path,
        recording_status=h.recording_status,
        link=h.link,
        page=f"/recordings/{fields['recording_id']}#t={fields['start_s']:g}",
    )


def timestamp_of(when: dt.datetime | None) -> float | None:
    if when is None:
        return None
    try:
        return when.timestamp()  # naive: local time, as a person typing a date means it
    except (OverflowError, OSError, ValueError):
        return 0.0 if when.year < 1970 else 1e18


def media_type(path: str) -> str:
    # Only audio/video types: a recording named page.html must never render as a page here.
    guessed = mimetypes.guess_type(path)[0] or ""
    return guessed if guessed.startswith(("video/", "audio/")) else "application/octet-stream"
