"""The store's tables (SQLModel) and the mappers that turn their rows into frozen data objects.

Rows never leave the store package: every part of the store hands back `daemon.models` objects
(or the frozen ones defined next to the part that owns them). Alembic's environment registers
these tables (daemon/store/migrations/env.py).
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import JSON, Column, Index, LargeBinary, UniqueConstraint
from sqlmodel import Field, SQLModel

from daemon.models import (
    AlertInfo,
    Chapter,
    ChunkInfo,
    EventInfo,
    RecordingInfo,
    SpeechSegment,
    Summary,
)

RECORDING_STATES = ("queued", "analyzing", "done", "failed", "skipped")
CHUNK_STATES = ("pending", "running", "done", "failed")


class Recording(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    fingerprint: str = Field(index=True, unique=True)
    path: str
    size: int
    status: str = Field(default="queued", index=True)
    reason: str | None = None
    duration_s: float | None = None
    profile: str | None = None
    prompt: str | None = None
    chunks_total: int = 0
    attempts: int = 0
    next_attempt_at: float | None = None
    created_at: float = Field(default_factory=time.time)
    updated_at: float = Field(default_factory=time.time)
    settings: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


class RecordingPath(SQLModel, table=True):
    """Every path a recording's bytes were seen under; the same bytes under a new name add a row here."""

    __tablename__ = "recording_path"
    path: str = Field(primary_key=True)
    recording_id: int = Field(foreign_key="recording.id", index=True)
    size: int
    mtime: float
    seen_at: float = Field(default_factory=time.time)
    # identity.file_key of the file registered here ("dev:ino"); None for rows from before 0004.
    file_key: str | None = None


class Chunk(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("recording_id", "index"),)
    id: int | None = Field(default=None, primary_key=True)
    recording_id: int = Field(foreign_key="recording.id", index=True)
    index: int
    start_s: float
    end_s: float
    frames: int
    width: int
    height: int
    status: str = Field(default="pending", index=True)
    attempts: int = 0
    error: str | None = None
    owner: str | None = None
    lease_until: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    provenance: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


class Event(SQLModel, table=True):
    # `framewatch events` reads in this order (listing.py): no sort (revision 0003).
    __table_args__ = (Index("ix_event_listing", "recording_id", "start_s", "id"),)
    id: int | None = Field(default=None, primary_key=True)
    recording_id: int = Field(foreign_key="recording.id", index=True)
    chunk_id: int = Field(foreign_key="chunk.id", index=True)
    chunk_index: int
    start_s: float = Field(index=True)
    end_s: float
    label: str
    description: str
    confidence: float | None = None
    evidence_s: float | None = None
    model: str
    prompt_hash: str
    settings: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


class Speech(SQLModel, table=True):
    """What was said from start_s to end_s, stored with its chunk's events (revision 0006); the
    listing index is the events' one, for the same reading order."""

    __table_args__ = (Index("ix_speech_listing", "recording_id", "start_s", "id"),)
    id: int | None = Field(default=None, primary_key=True)
    recording_id: int = Field(foreign_key="recording.id", index=True)
    chunk_id: int = Field(foreign_key="chunk.id", index=True)
    chunk_index: int
    start_s: float
    end_s: float
    text: str
    language: str | None = None
    model: str
    # The recogniser's settings and the segment's scores (avg_logprob, no_speech_prob).
    settings: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


class SummaryRow(SQLModel, table=True):
    """A recording's summary (revision 0007): one row per recording, replaced whole when made
    again, dropped when its events change (chunks.py, `commit`)."""

    __tablename__ = "summary"
    recording_id: int = Field(foreign_key="recording.id", primary_key=True)
    title: str
    text: str
    chapters: list[Any] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    key_events: list[Any] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    provenance: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    made_at: float = Field(default_factory=time.time)


class Delivery(SQLModel, table=True):
    """Outbox: one notification for one plugin, written with the facts it announces."""

    id: int | None = Field(default=None, primary_key=True)
    plugin: str = Field(index=True)
    hook: str
    recording_id: int = Field(foreign_key="recording.id", index=True)
    chunk_index: int | None = None
    # The alert an alert_fired row announces (revision 0005).
    alert_id: int | None = Field(default=None, foreign_key="alert.id", index=True)
    attempts: int = 0
    next_attempt_at: float = Field(default_factory=time.time, index=True)
    last_error: str | None = None
    delivered_at: float | None = Field(default=None, index=True)
    dead: bool = False
    created_at: float = Field(default_factory=time.time)


class Alert(SQLModel, table=True):
    """An alert rule's candidate from a chunk's answer and its outcome (revision 0005).

    `state` candidate -> confirmed | rejected | unverified | suppressed; a candidate is claimed
    for its second look like a chunk (owner, lease_until), so several boxes never verify one
    twice and one left by a dead process is verified again."""

    __table_args__ = (Index("ix_alert_recording_rule", "recording_id", "rule", "start_s"),)
    id: int | None = Field(default=None, primary_key=True)
    recording_id: int = Field(foreign_key="recording.id", index=True)
    chunk_index: int
    rule: str
    severity: str
    state: str = Field(default="candidate", index=True)
    reason: str | None = None
    fired: bool = False
    start_s: float
    end_s: float
    why: str = ""
    owner: str | None = None
    lease_until: float | None = None
    attempts: int = 0
    verification: dict[str, Any] = Field(
        default_factory=dict, sa_column=Column(JSON, nullable=False)
    )
    provenance: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    thumbnail: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))
    thumbnail_s: float | None = None
    created_at: float = Field(default_factory=time.time)
    decided_at: float | None = None


class PluginBlock(SQLModel, table=True):
    """A plugin whose destination said it is gone for good (HTTP 410), with the settings it had:
    its notifications are not attempted until those settings change or a replay lifts the block."""

    __tablename__ = "plugin_block"
    plugin: str = Field(primary_key=True)
    settings_hash: str
    reason: str
    since: float = Field(default_factory=time.time)


class Calibration(SQLModel, table=True):
    """Measured over estimated peak GPU allocation for one model setting on one kind of GPU:
    later plans multiply their estimate by `ratio_max` (see engine/budget.py)."""

    __table_args__ = (UniqueConstraint("model", "device"),)
    id: int | None = Field(default=None, primary_key=True)
    model: str  # budget.calibration_key: model name, dtype, quantization
    device: str  # the GPU's name, e.g. "NVIDIA H100 80GB HBM3"
    samples: int = 0
    ratio_mean: float = 1.0
    ratio_max: float = 0.0
    last_measured_gib: float | None = None
    last_estimated_gib: float | None = None
    updated_at: float = Field(default_factory=time.time)


# -- mappers: rows to frozen objects ---------------------------------------------------------------


def recording_info(r: Recording) -> RecordingInfo:
    assert r.id is not None
    return RecordingInfo(
        id=r.id,
        path=r.path,
        fingerprint=r.fingerprint,
        status=r.status,
        reason=r.reason,
        duration_s=r.duration_s,
        profile=r.profile,
        model=r.settings.get("model"),
        settings=dict(r.settings),
        attempts=r.attempts,
    )


def chunk_info(c: Chunk, total: int) -> ChunkInfo:
    return ChunkInfo(
        recording_id=c.recording_id,
        index=c.index,
        start_s=c.start_s,
        end_s=c.end_s,
        frames=c.frames,
        status=c.status,
        chunks_total=total,
        width=c.width,
        height=c.height,
        attempts=c.attempts,
        error=c.error,
        owner=c.owner,
        started_at=c.started_at,
        finished_at=c.finished_at,
        provenance=dict(c.provenance),
    )


def event_info(e: Event) -> EventInfo:
    return EventInfo(
        id=e.id,
        recording_id=e.recording_id,
        chunk_index=e.chunk_index,
        start_s=e.start_s,
        end_s=e.end_s,
        label=e.label,
        description=e.description,
        confidence=e.confidence,
        evidence_s=e.evidence_s,
        provenance={"model": e.model, "prompt_hash": e.prompt_hash, **e.settings},
    )


def alert_info(a: Alert, *, thumbnail: bool = True) -> AlertInfo:
    assert a.id is not None
    return AlertInfo(
        id=a.id,
        recording_id=a.recording_id,
        chunk_index=a.chunk_index,
        rule=a.rule,
        severity=a.severity,
        state=a.state,
        start_s=a.start_s,
        end_s=a.end_s,
        why=a.why,
        reason=a.reason,
        fired=a.fired,
        verification=dict(a.verification),
        provenance=dict(a.provenance),
        thumbnail=a.thumbnail if thumbnail else None,
        thumbnail_s=a.thumbnail_s,
        created_at=a.created_at,
        decided_at=a.decided_at,
    )


def speech_segment(r: Speech) -> SpeechSegment:
    return SpeechSegment(
        id=r.id,
        recording_id=r.recording_id,
        chunk_index=r.chunk_index,
        start_s=r.start_s,
        end_s=r.end_s,
        text=r.text,
        language=r.language,
        provenance={"model": r.model, **r.settings},
    )


def summary_of(r: SummaryRow) -> Summary:
    return Summary(
        recording_id=r.recording_id,
        title=r.title,
        text=r.text,
        chapters=tuple(
            Chapter(float(c["start_s"]), float(c["end_s"]), str(c["title"])) for c in r.chapters
        ),
        key_events=tuple(int(i) for i in r.key_events),
        provenance={**r.provenance, "made_at": r.made_at},
    )
