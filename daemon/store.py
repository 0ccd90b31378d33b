"""The store: SQLModel tables and every session opened on the engine (daemon/db.py).

The database is the source of truth and the queue: recordings, their chunks, the events found and
the outbox of notifications for plugins. Each chunk's events commit together with the chunk's
status (and its outbox rows) in one transaction, so a crash at any point loses nothing and never
stores a chunk's events twice.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy import JSON, Column, Index, UniqueConstraint, case, func, text
from sqlalchemy import select as sa_select
from sqlmodel import Field, Session, SQLModel, col, delete, select, update

from daemon import listing
from daemon.db import open_engine, read_only
from daemon.engine.events import Candidate
from daemon.models import ChunkInfo, ChunkWindow, EventInfo, RecordingInfo, StaticSpan

if TYPE_CHECKING:
    from daemon.search import SearchHit

log = structlog.get_logger(__name__)

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
    # `framewatch events` reads in this order (daemon/listing.py): no sort (revision 0003).
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


class Delivery(SQLModel, table=True):
    """Outbox: one notification for one plugin, written with the facts it announces."""

    id: int | None = Field(default=None, primary_key=True)
    plugin: str = Field(index=True)
    hook: str
    recording_id: int = Field(foreign_key="recording.id", index=True)
    chunk_index: int | None = None
    attempts: int = 0
    next_attempt_at: float = Field(default_factory=time.time, index=True)
    last_error: str | None = None
    delivered_at: float | None = Field(default=None, index=True)
    dead: bool = False
    created_at: float = Field(default_factory=time.time)


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


@dataclass(frozen=True, slots=True)
class DeliveryInfo:
    """One claimed outbox row. `lease` is the next_attempt_at the claim wrote: the token that
    proves the row is still ours (see `renew_delivery`)."""

    id: int
    plugin: str
    hook: str
    recording_id: int
    chunk_index: int | None
    attempts: int
    created_at: float
    lease: float
    last_error: str | None = None


def process_owner() -> str:
    """Who holds a chunk lease: host and pid, so a dead local owner can be recognised at once."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _owner_is_dead(owner: str | None) -> bool:
    if not owner or ":" not in owner:
        return False
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _recording_info(r: Recording) -> RecordingInfo:
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


def _chunk_info(c: Chunk, total: int) -> ChunkInfo:
    return ChunkInfo(
        recording_id=c.recording_id,
        index=c.index,
        start_s=c.start_s,
        end_s=c.end_s,
        frames=c.frames,
        status=c.status,
        chunks_total=total,
    )


def merge_static_spans(notes: Sequence[tuple[float, float, dict[str, Any] | None]]) -> list[StaticSpan]:
    """Chunks' (start_s, end_s, provenance["static"]) in chunk order -> runs of consecutive static
    chunks with one action, each as one span (its largest measured change)."""
    spans: list[StaticSpan] = []
    run: list[tuple[float, float, dict[str, Any]]] = []

    def close() -> None:
        if run:
            spans.append(StaticSpan(
                start_s=run[0][0], end_s=run[-1][1], action=run[0][2]["action"],
                peak_change=max(float(n.get("peak_change", 0.0)) for _, _, n in run),
                threshold=float(run[0][2].get("threshold", 0.0)), chunks=len(run),
            ))
            run.clear()

    for start, end, note in notes:
        if note is None or (run and note.get("action") != run[0][2]["action"]):
            close()
        if note is not None:
            run.append((start, end, note))
    close()
    return spans


def _event_info(e: Event) -> EventInfo:
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


def _chunk_row(s: Session, recording_id: int, index: int, *, lock: bool = False) -> Chunk:
    """One chunk's row (KeyError when there is none); `lock` holds it to the end of the
    transaction (FOR UPDATE on PostgreSQL; SQLite's BEGIN IMMEDIATE already serialises)."""
    q = select(Chunk).where(Chunk.recording_id == recording_id, Chunk.index == index)
    c = s.exec(q.with_for_update() if lock else q).first()
    if c is None:
        raise KeyError((recording_id, index))
    return c


def _lease(s: Session, c: Chunk, owner: str, lease_s: float) -> ChunkInfo:
    """Make a locked chunk row `running` for `owner` until the lease ends (one more attempt)."""
    now = time.time()
    c.status, c.owner, c.lease_until, c.started_at = "running", owner, now + lease_s, now
    c.attempts += 1
    s.add(c)
    total = s.exec(select(func.count()).where(Chunk.recording_id == c.recording_id)).one()
    return _chunk_info(c, total)


class Store:
    """All reads and writes of framewatch's state. Methods return frozen objects, never rows."""

    def __init__(self, url: str):
        self.url = url
        # Alembic, not create_all: an existing database is upgraded too (one query when current).
        self.engine = open_engine(url)

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One transaction: committed on success, rolled back on error."""
        with Session(self.engine, expire_on_commit=False) as s:
            with s.begin():
                yield s

    # -- recordings ---------------------------------------------------------------------------

    def register(
        self,
        path: str,
        fingerprint: str,
        size: int,
        mtime: float,
        profile: str | None = None,
        prompt: str | None = None,
    ) -> tuple[RecordingInfo, bool]:
        """Record that these bytes exist at `path`. Returns the recording and whether it is new.

        The same bytes seen under another path are the same recording (one more path row). Several
        boxes may see one file at once: the unique fingerprint and `INSERT ... ON CONFLICT DO
        NOTHING` make exactly one of them the creator (the one that plans and enqueues it)."""
        now = time.time()
        with self.session() as s:
            row = Recording(fingerprint=fingerprint, path=path, size=size, profile=profile, prompt=prompt)
            values = row.model_dump(exclude={"id"})
            new_id = s.exec(  # type: ignore[call-overload]
                self._insert(Recording)
                .values(**values)
                .on_conflict_do_nothing(index_elements=["fingerprint"])
                .returning(Recording.id)  # type: ignore[arg-type]
            ).scalar()
            created = new_id is not None
            rec = s.exec(select(Recording).where(Recording.fingerprint == fingerprint)).one()
            assert rec.id is not None
            # An upsert: two boxes recording the same path at once must not collide on its key.
            alias = {"path": path, "recording_id": rec.id, "size": size, "mtime": mtime, "seen_at": now}
            s.exec(  # type: ignore[call-overload]
                self._insert(RecordingPath)
                .values(**alias)
                .on_conflict_do_update(index_elements=["path"], set_={k: v for k, v in alias.items() if k != "path"})
            )
            return _recording_info(rec), created

    def _insert(self, table: type[SQLModel]) -> Any:
        """The dialect's INSERT, which knows ON CONFLICT (SQLite and PostgreSQL alike)."""
        if self.engine.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        return insert(table)

    def recording(self, recording_id: int) -> RecordingInfo:
        with self.session() as s:
            rec = s.get(Recording, recording_id)
            if rec is None:
                raise KeyError(recording_id)
            return _recording_info(rec)

    def find_recording(self, path: str) -> RecordingInfo | None:
        """The recording last seen at `path` (by any of its names)."""
        with self.session() as s:
            found = listing.recording_id_at(s.connection(), path)
            rec = s.get(Recording, found) if found is not None else None
            return _recording_info(rec) if rec else None

    def set_status(
        self,
        recording_id: int,
        status: str,
        reason: str | None = None,
        *,
        duration_s: float | None = None,
        settings: dict[str, Any] | None = None,
        notify: Sequence[tuple[str, str]] = (),
    ) -> RecordingInfo:
        """Move a recording to `status`; `notify` (plugin, hook) pairs go into the outbox in the
        same transaction."""
        if status not in RECORDING_STATES:
            raise ValueError(status)
        with self.session() as s:
            rec = s.get(Recording, recording_id)
            if rec is None:
                raise KeyError(recording_id)
            rec.status, rec.reason, rec.updated_at = status, reason, time.time()
            if duration_s is not None:
                rec.duration_s = duration_s
            if settings is not None:
                rec.settings = dict(settings)
            for plugin, hook in notify:
                s.add(Delivery(plugin=plugin, hook=hook, recording_id=recording_id))
            s.add(rec)
            return _recording_info(rec)

    def recordings(self) -> list[tuple[RecordingInfo, int, int]]:
        """Every recording with (chunks done, chunks total), newest first."""
        with self.session() as s:
            done = (
                select(Chunk.recording_id, func.count().label("n"))
                .where(Chunk.status == "done")
                .group_by(Chunk.recording_id)
                .subquery()
            )
            rows = s.exec(
                select(Recording, done.c.n)
                .join(done, done.c.recording_id == Recording.id, isouter=True)
                .order_by(Recording.id.desc())  # type: ignore[union-attr]
            ).all()
            return [(_recording_info(r), n or 0, r.chunks_total) for r, n in rows]

    # -- chunks -------------------------------------------------------------------------------

    def plan(self, recording_id: int, windows: Sequence[ChunkWindow]) -> list[ChunkInfo]:
        """Create the chunk rows of a recording unless they exist (a resumed run keeps its plan)."""
        with self.session() as s:
            # The recording's row lock serialises planners on several boxes (PostgreSQL); SQLite's
            # immediate transactions already do.
            s.exec(select(Recording.id).where(Recording.id == recording_id).with_for_update())
            existing = s.exec(
                select(Chunk).where(Chunk.recording_id == recording_id).order_by(Chunk.index)
            ).all()
            if not existing:
                existing = []
                for w in windows:
                    c = Chunk(
                        recording_id=recording_id,
                        index=w.index,
                        start_s=w.start_s,
                        end_s=w.end_s,
                        frames=len(w.sample_times),
                        width=w.width,
                        height=w.height,
                    )
                    s.add(c)
                    existing.append(c)
                rec = s.get(Recording, recording_id)
                assert rec is not None
                rec.chunks_total = len(windows)
                s.add(rec)
                s.flush()
            total = len(existing)
            return [_chunk_info(c, total) for c in existing]

    def chunks(self, recording_id: int) -> list[Chunk]:
        with self.session() as s:
            return list(
                s.exec(select(Chunk).where(Chunk.recording_id == recording_id).order_by(Chunk.index)).all()
            )

    def requeue_failed(self, recording_id: int) -> int:
        """Put a recording's failed chunks back to `pending` (a person asked to analyse it again)."""
        with self.session() as s:
            rows = s.exec(select(Chunk).where(Chunk.recording_id == recording_id, Chunk.status == "failed")).all()
            for c in rows:
                c.status = "pending"
                s.add(c)
            return len(rows)

    def claim(self, recording_id: int, owner: str, lease_s: float) -> ChunkInfo | None:
        """Take the first pending chunk of a recording: it becomes `running`, leased to `owner`."""
        with self.session() as s:
            c = s.exec(
                select(Chunk)
                .where(Chunk.recording_id == recording_id, Chunk.status == "pending")
                .order_by(Chunk.index)
                .limit(1)
                .with_for_update(skip_locked=True)
            ).first()
            if c is None:
                return None
            return _lease(s, c, owner, lease_s)

    def reap(self, lease_grace_s: float = 0.0) -> int:
        """Return to `pending` every chunk left `running` by a dead local process or whose lease
        ran out. Run at start-up and periodically."""
        now = time.time()
        n = 0
        with self.session() as s:
            for c in s.exec(select(Chunk).where(Chunk.status == "running")).all():
                if _owner_is_dead(c.owner) or (c.lease_until or 0) + lease_grace_s < now:
                    c.status, c.owner, c.lease_until = "pending", None, None
                    s.add(c)
                    n += 1
        if n:
            log.info("chunks_reaped", count=n)
        return n

    def neighbour_events(self, recording_id: int, index: int) -> list[tuple[str, float, float]]:
        """(label, start, end) of the events stored for the chunks just before and after `index`."""
        with self.session() as s:
            rows = s.exec(
                select(Event.label, Event.start_s, Event.end_s).where(
                    Event.recording_id == recording_id,
                    Event.chunk_index.in_([index - 1, index + 1]),  # type: ignore[attr-defined]
                )
            ).all()
            return [(lbl, st, en) for lbl, st, en in rows]

    def commit_chunk(
        self,
        recording_id: int,
        index: int,
        owner: str,
        events: Sequence[Candidate],
        provenance: dict[str, Any],
        *,
        notify: Sequence[str] = (),
    ) -> list[EventInfo] | None:
        """Store a chunk's events and mark it done, in one transaction, replacing any events a
        previous run stored for it. Outbox rows for `notify` plugins (hook events_found) go in
        the same transaction. Returns None when the chunk is no longer ours (lease taken over)."""
        with self.session() as s:
            # Locked: two boxes that computed the same chunk commit one after the other, and the
            # second sees it done (events stored once, one outbox row per plugin).
            c = _chunk_row(s, recording_id, index, lock=True)
            if c.status == "done" or (c.owner not in (None, owner)):
                log.warning("chunk_commit_skipped", recording_id=recording_id, chunk=index, owner=c.owner)
                return None
            s.exec(delete(Event).where(Event.chunk_id == c.id))  # type: ignore[arg-type]
            rows = [
                Event(
                    recording_id=recording_id,
                    chunk_id=c.id,  # type: ignore[arg-type]
                    chunk_index=index,
                    start_s=e.start_s,
                    end_s=e.end_s,
                    label=e.label,
                    description=e.description,
                    confidence=e.confidence,
                    evidence_s=e.evidence_s,
                    model=str(provenance.get("model", "")),
                    prompt_hash=str(provenance.get("prompt_hash", "")),
                    settings={k: provenance[k] for k in ("sampling", "extra") if k in provenance}
                    | ({"extra": e.extra} if e.extra else {}),
                )
                for e in events
            ]
            s.add_all(rows)
            c.status, c.error, c.owner, c.lease_until = "done", None, None, None
            c.finished_at, c.provenance = time.time(), dict(provenance)
            s.add(c)
            for plugin in notify:
                s.add(Delivery(plugin=plugin, hook="events_found", recording_id=recording_id, chunk_index=index))
            s.flush()
            return [_event_info(r) for r in rows]

    def fail_chunk(self, recording_id: int, index: int, owner: str, error: str) -> None:
        with self.session() as s:
            c = _chunk_row(s, recording_id, index)
            if c.owner not in (None, owner):
                return
            c.status, c.error, c.owner, c.lease_until = "failed", error[:2000], None, None
            c.finished_at = time.time()
            s.add(c)

    def release_chunk(self, recording_id: int, index: int, owner: str) -> None:
        """Give a claimed chunk back untouched (shutdown in the middle of it)."""
        with self.session() as s:
            c = _chunk_row(s, recording_id, index)
            if c.status == "running" and c.owner == owner:
                c.status, c.owner, c.lease_until = "pending", None, None
                c.attempts = max(0, c.attempts - 1)
                s.add(c)

    # -- work queue (several boxes; daemon/queue.py) ---------------------------------------------

    def claim_chunk(self, recording_id: int, index: int, owner: str, lease_s: float) -> ChunkInfo | None:
        """Take the chunk the work queue handed to `owner`, whatever its state, unless it is done
        (None: a redelivered chunk that already committed is acknowledged, not recomputed).

        The queue decides who holds a chunk; a previous owner lost it (dead, or its lease ran
        out), so its late commit is refused by `commit_chunk`."""
        with self.session() as s:
            c = _chunk_row(s, recording_id, index, lock=True)
            if c.status == "done":
                return None
            return _lease(s, c, owner, lease_s)

    def start_analysis(self, recording_id: int, duration_s: float, settings: dict[str, Any]) -> bool:
        """queued -> analyzing, only from queued: True for the one box that made the move (and so
        enqueues the recording's chunks), False for every other."""
        with self.session() as s:
            res = s.exec(
                update(Recording)
                .where(col(Recording.id) == recording_id, col(Recording.status) == "queued")
                .values(status="analyzing", duration_s=duration_s, settings=dict(settings), updated_at=time.time())
            )
            return bool(res.rowcount == 1)  # type: ignore[attr-defined]

    def retry_chunk(self, recording_id: int, index: int, owner: str, error: str) -> None:
        """A queued chunk failed in a way a retry may cure: back to `pending` with the error kept,
        so the recording is not settled while the queue redelivers it."""
        with self.session() as s:
            c = _chunk_row(s, recording_id, index)
            if c.status != "done" and c.owner in (None, owner):
                c.status, c.error, c.owner, c.lease_until = "pending", error[:2000], None, None
                s.add(c)

    def fail_chunk_now(self, recording_id: int, index: int, reason: str) -> None:
        """Fail a chunk whoever holds it, unless it is done (the queue gave up on it)."""
        with self.session() as s:
            c = _chunk_row(s, recording_id, index, lock=True)
            if c.status != "done":
                c.status, c.error, c.owner, c.lease_until = "failed", reason[:2000], None, None
                c.finished_at = time.time()
                s.add(c)

    def unfinished_chunks(self) -> list[tuple[int, int]]:
        """(recording id, chunk index) of every pending or running chunk of a recording still being
        analysed: what the work queue must hold (it is rebuilt from this after losing its data)."""
        with self.session() as s:
            rows = s.exec(
                select(Chunk.recording_id, Chunk.index)
                .join(Recording, Recording.id == Chunk.recording_id)  # type: ignore[arg-type]
                .where(
                    col(Chunk.status).in_(("pending", "running")),
                    col(Recording.status).in_(("queued", "analyzing")),
                )
                .order_by(col(Chunk.recording_id), col(Chunk.index))
            ).all()
            return [(r, i) for r, i in rows]

    def settle(
        self, recording_id: int, finished: Sequence[str] = (), failed: Sequence[str] = ()
    ) -> RecordingInfo:
        """Once no chunk is pending or running, move the recording to done (or failed, naming the
        first failed chunk) with its outbox rows for `finished` / `failed` plugins. Under the
        recording's row lock, so when the last chunks end on two boxes at once exactly one of them
        settles it and plugins hear of it once."""
        with self.session() as s:
            rec = s.exec(select(Recording).where(Recording.id == recording_id).with_for_update()).first()
            if rec is None:
                raise KeyError(recording_id)
            if rec.status not in ("queued", "analyzing"):
                return _recording_info(rec)
            chunks = s.exec(
                select(Chunk).where(Chunk.recording_id == recording_id).order_by(col(Chunk.index))
            ).all()
            if not chunks or any(c.status in ("pending", "running") for c in chunks):
                return _recording_info(rec)
            bad = [c for c in chunks if c.status == "failed"]
            if bad:
                reason = f"{len(bad)} of {len(chunks)} chunks failed; chunk {bad[0].index}: {bad[0].error}"
                rec.status, rec.reason, hook, plugins = "failed", reason, "recording_failed", failed
            else:
                rec.status, rec.reason, hook, plugins = "done", None, "recording_finished", finished
            rec.updated_at = time.time()
            s.add(rec)
            for plugin in plugins:
                s.add(Delivery(plugin=plugin, hook=hook, recording_id=recording_id))
            return _recording_info(rec)

    # -- queue (framewatch run) ----------------------------------------------------------------

    def due_recordings(self, now: float | None = None) -> list[int]:
        """Recordings with work left (queued or analyzing) whose retry time has come, oldest first."""
        now = time.time() if now is None else now
        with self.session() as s:
            return list(
                s.exec(
                    select(Recording.id)
                    .where(
                        col(Recording.status).in_(("queued", "analyzing")),
                        (col(Recording.next_attempt_at).is_(None)) | (col(Recording.next_attempt_at) <= now),
                    )
                    .order_by(col(Recording.id))
                ).all()
            )

    def set_path(self, recording_id: int, path: str) -> None:
        """The recording's bytes now live at `path` (renamed or moved while it waited)."""
        with self.session() as s:
            rec = s.get(Recording, recording_id)
            if rec is not None and rec.path != path:
                rec.path, rec.updated_at = path, time.time()
                s.add(rec)

    def path_index(self) -> dict[str, tuple[int, float]]:
        """(size, mtime) each known path was registered with: a rescan skips files unchanged since."""
        with self.session() as s:
            rows = s.exec(select(RecordingPath.path, RecordingPath.size, RecordingPath.mtime)).all()
            return {p: (size, mtime) for p, size, mtime in rows}

    def defer(self, recording_id: int, error: str, delay_s: float) -> RecordingInfo:
        """An unexpected error while processing a recording: count the attempt and hold the
        recording back for `delay_s` (the caller fails it once attempts run out)."""
        with self.session() as s:
            rec = s.get(Recording, recording_id)
            if rec is None:
                raise KeyError(recording_id)
            rec.attempts += 1
            rec.next_attempt_at = time.time() + delay_s
            rec.reason, rec.updated_at = f"attempt {rec.attempts} failed: {error}"[:2000], time.time()
            s.add(rec)
            return _recording_info(rec)

    def retry_failed_chunks(self, max_attempts: int, backoff_s: float, now: float | None = None) -> list[int]:
        """Put failed chunks with attempts left back to `pending` once their backoff
        (backoff_s * 2^(attempts-1) after the failure) has passed, and their recordings back in
        the queue. Returns the recordings re-queued."""
        now = time.time() if now is None else now
        requeued: set[int] = set()
        with self.session() as s:
            failed = s.exec(
                select(Chunk).where(Chunk.status == "failed", Chunk.attempts < max_attempts)
            ).all()
            for c in failed:
                delay = backoff_s * 2 ** max(0, c.attempts - 1)
                if (c.finished_at or 0) + delay > now:
                    continue
                rec = s.get(Recording, c.recording_id)
                if rec is None or rec.status not in ("failed", "analyzing", "queued"):
                    continue
                c.status = "pending"
                s.add(c)
                if rec.status == "failed":
                    rec.status, rec.reason, rec.updated_at = "queued", None, now
                    s.add(rec)
                requeued.add(rec.id)  # type: ignore[arg-type]
        if requeued:
            log.info("chunks_retried", recordings=sorted(requeued))
        return sorted(requeued)

    def abandon_exhausted(self, max_attempts: int) -> int:
        """Fail pending chunks that already used every attempt: the process died or hung in each
        of them (a released chunk gives its attempt back), so running it again would only repeat
        the crash."""
        n = 0
        with self.session() as s:
            for c in s.exec(
                select(Chunk).where(Chunk.status == "pending", Chunk.attempts >= max_attempts)
            ).all():
                c.status, c.finished_at = "failed", time.time()
                c.error = f"gave up after {c.attempts} attempts: the daemon died or hung during this chunk"
                s.add(c)
                n += 1
        if n:
            log.warning("chunks_abandoned", count=n)
        return n

    def running_chunks(self) -> list[tuple[int, int, str | None, float | None]]:
        """(recording id, chunk index, owner, started_at) of every chunk being analysed now."""
        with self.session() as s:
            rows = s.exec(
                select(Chunk.recording_id, Chunk.index, Chunk.owner, Chunk.started_at)
                .where(Chunk.status == "running")
                .order_by(col(Chunk.started_at))
            ).all()
            return [(r, i, o, t) for r, i, o, t in rows]

    # -- events -------------------------------------------------------------------------------

    def events(self, recording_id: int | None = None, chunk_index: int | None = None) -> list[EventInfo]:
        with self.session() as s:
            q = select(Event)
            if recording_id is not None:
                q = q.where(Event.recording_id == recording_id)
            if chunk_index is not None:
                q = q.where(Event.chunk_index == chunk_index)
            rows = s.exec(q.order_by(Event.recording_id, Event.start_s, Event.id)).all()  # type: ignore[arg-type]
            return [_event_info(e) for e in rows]

    def event_lines(self, recording_id: int | None = None) -> Sequence[tuple[str, float, float, str, str]]:
        """(path, start_s, end_s, label, description) of every event (or one recording's), by
        recording and time: what `framewatch events` prints (daemon/listing.py)."""
        with read_only(self.engine) as conn, conn.begin():
            return listing.event_lines(conn, recording_id)

    def events_with_paths(self, provenance: bool = True) -> list[tuple[EventInfo, str]]:
        """Every event with its recording's path, by recording and time. `provenance=False`
        leaves out the JSON settings (a listing does not print them; decoding 100,000 of them
        was a third of `framewatch events`)."""
        columns = [
            Event.id, Event.recording_id, Event.chunk_index, Event.start_s, Event.end_s, Event.label,
            Event.description, Event.confidence, Event.evidence_s, Event.model, Event.prompt_hash,
            Recording.path, *([Event.settings] if provenance else []),
        ]
        with self.session() as s:
            # Core rows, not ORM objects: building 100,000 Event objects took seconds
            # (bench/run.py, store target).
            rows = s.connection().execute(
                sa_select(*columns)
                .join(Recording, Recording.id == Event.recording_id)  # type: ignore[arg-type]
                .order_by(Event.recording_id, Event.start_s, Event.id)  # type: ignore[arg-type]
            ).all()
        return [
            (
                EventInfo(
                    id=r[0], recording_id=r[1], chunk_index=r[2], start_s=r[3], end_s=r[4], label=r[5],
                    description=r[6], confidence=r[7], evidence_s=r[8],
                    provenance={"model": r[9], "prompt_hash": r[10], **((r[12] or {}) if provenance else {})},
                ),
                r[11],
            )
            for r in rows
        ]

    def search(
        self,
        query: str,
        *,
        recording_id: int | None = None,
        since: float | None = None,
        labels: Sequence[str] = (),
        limit: int = 20,
        offset: int = 0,
    ) -> list[SearchHit]:
        """Events matching `query` (a search box's text), best first, each with its recording
        and provenance (daemon/search.py: the query syntax, and the ranked query for this store's
        dialect). `since`: a Unix time; only recordings whose file was modified then or later."""
        from daemon.search import SearchHit, SearchQuery, build

        q = SearchQuery(query, recording_id, since, tuple(labels), limit, offset)
        stmt = build(self.engine.dialect.name, q)
        if stmt is None:
            return []
        with self.session() as s:
            ranked = s.connection().execute(text(stmt.sql), stmt.params).all()
            rows = s.exec(
                select(Event, Recording.path, Recording.status)
                .join(Recording, Recording.id == Event.recording_id)  # type: ignore[arg-type]
                .where(col(Event.id).in_([r[0] for r in ranked]))
            ).all()
            found = {e.id: (e, p, st) for e, p, st in rows}
            return [
                SearchHit(_event_info(e), p, st, float(score), rank=q.offset + i + 1)
                for i, (event_id, score) in enumerate(ranked)
                for e, p, st in [found[event_id]]
            ]

    def recording_files(self, recording_id: int) -> list[tuple[str, int]]:
        """(path, size when registered) of every name a recording's bytes were seen under: its
        current path first, then the others, most recently seen first."""
        with self.session() as s:
            rec = s.get(Recording, recording_id)
            if rec is None:
                raise KeyError(recording_id)
            rows = s.exec(
                select(RecordingPath.path, RecordingPath.size)
                .where(RecordingPath.recording_id == recording_id)
                .order_by(col(RecordingPath.seen_at).desc())
            ).all()
            out = [(rec.path, rec.size)]
            return out + [(p, size) for p, size in rows if p != rec.path]

    def stats(self) -> dict[str, Any]:
        """Totals for operators (the metrics endpoint), computed from the rows at the time of
        asking, so every process reading the store reports the same.

        recordings/chunks: counts by state; video_s: seconds of video in done chunks (overlaps
        counted in each chunk: the model saw them twice); busy_s: wall time those chunks took from
        claim to commit; gpu_peak_gib: the highest measured peak of any chunk
        (provenance analyzer.peak_gib), gpu_budget_gib: the budget of the latest chunk that
        recorded one, gpu_peak_ratio: the highest peak/budget of one chunk; deliveries: as
        `delivery_counts`."""
        prov = Chunk.__table__.c.provenance  # type: ignore[attr-defined]
        peak = prov[("analyzer", "peak_gib")].as_float()
        budget = prov[("memory", "budget_gib")].as_float()
        timed = col(Chunk.started_at).is_not(None) & col(Chunk.finished_at).is_not(None)
        with self.session() as s:
            recordings = dict(
                s.exec(select(Recording.status, func.count()).group_by(Recording.status)).all()
            )
            chunks = dict(s.exec(select(Chunk.status, func.count()).group_by(Chunk.status)).all())
            video_s, timed_video_s, busy_s, gpu_peak, gpu_ratio = s.exec(
                select(
                    func.coalesce(func.sum(Chunk.end_s - Chunk.start_s), 0.0),
                    func.coalesce(func.sum(case((timed, Chunk.end_s - Chunk.start_s))), 0.0),
                    func.coalesce(func.sum(Chunk.finished_at - Chunk.started_at), 0.0),  # type: ignore[operator]
                    func.max(peak),
                    func.max(peak / func.nullif(budget, 0)),
                ).where(Chunk.status == "done")
            ).one()
            gpu_budget = s.exec(
                select(budget)
                .where(Chunk.status == "done", budget.is_not(None))
                .order_by(col(Chunk.finished_at).desc())
                .limit(1)
            ).first()
        return {
            "recordings": {st: int(recordings.get(st, 0)) for st in RECORDING_STATES},
            "chunks": {st: int(chunks.get(st, 0)) for st in CHUNK_STATES},
            "video_s": float(video_s),
            "timed_video_s": float(timed_video_s),
            "busy_s": float(busy_s),
            "gpu_peak_gib": None if gpu_peak is None else float(gpu_peak),
            "gpu_budget_gib": None if gpu_budget is None else float(gpu_budget),
            "gpu_peak_ratio": None if gpu_ratio is None else float(gpu_ratio),
            "deliveries": self.delivery_counts(),
        }

    def ping(self) -> None:
        with self.session() as s:
            s.exec(text("SELECT 1"))  # type: ignore[call-overload]

    def static_spans(self, recording_id: int) -> list[StaticSpan]:
        """The recording's static spans (merge_static_spans), by time."""
        return merge_static_spans([(c.start_s, c.end_s, c.provenance.get("static")) for c in self.chunks(recording_id)])

    def chunk_info(self, recording_id: int, index: int) -> ChunkInfo:
        with self.session() as s:
            c = _chunk_row(s, recording_id, index)
            total = s.exec(select(func.count()).where(Chunk.recording_id == recording_id)).one()
            return _chunk_info(c, total)

    # -- outbox -------------------------------------------------------------------------------

    def claim_deliveries(
        self, plugins: Sequence[str], limit: int, lease_s: float, now: float | None = None
    ) -> list[DeliveryInfo]:
        """Take up to `limit` due, undelivered, live outbox rows of `plugins`, oldest first.

        Claiming moves next_attempt_at to now + lease_s: that is the lease (no other dispatcher
        takes the rows meanwhile) and the token `renew_delivery` checks."""
        if not plugins:
            return []
        now = time.time() if now is None else now
        with self.session() as s:
            rows = s.exec(
                select(Delivery)
                .where(
                    col(Delivery.delivered_at).is_(None),
                    col(Delivery.dead).is_(False),
                    Delivery.next_attempt_at <= now,
                    col(Delivery.plugin).in_(list(plugins)),
                )
                .order_by(col(Delivery.id))
                .limit(limit)
                .with_for_update(skip_locked=True)
            ).all()
            until = now + lease_s
            out = []
            for d in rows:
                d.next_attempt_at = until
                s.add(d)
                assert d.id is not None
                out.append(
                    DeliveryInfo(
                        d.id, d.plugin, d.hook, d.recording_id, d.chunk_index, d.attempts,
                        d.created_at, until, d.last_error,
                    )
                )
            return out

    def renew_delivery(self, delivery_id: int, lease: float, until: float) -> bool:
        """Extend a claimed row's lease just before calling its plugin; False when the row is no
        longer ours (delivered, dead, or re-claimed elsewhere after our lease ran out)."""
        with self.session() as s:
            res = s.exec(
                update(Delivery)
                .where(
                    col(Delivery.id) == delivery_id,
                    col(Delivery.next_attempt_at) == lease,
                    col(Delivery.delivered_at).is_(None),
                    col(Delivery.dead).is_(False),
                )
                .values(next_attempt_at=until)
            )
            return bool(res.rowcount == 1)  # type: ignore[attr-defined]

    def delivery_done(self, delivery_id: int, now: float | None = None) -> None:
        with self.session() as s:
            d = s.get(Delivery, delivery_id)
            if d is not None:
                d.delivered_at = time.time() if now is None else now
                d.attempts += 1
                s.add(d)

    def delivery_failed(self, delivery_id: int, error: str, next_attempt_at: float | None) -> None:
        """Record a failed attempt: retried at `next_attempt_at`, or dead when that is None."""
        with self.session() as s:
            d = s.get(Delivery, delivery_id)
            if d is None:
                return
            d.attempts += 1
            d.last_error = error[:2000]
            if next_attempt_at is None:
                d.dead = True
            else:
                d.next_attempt_at = next_attempt_at
            s.add(d)

    def release_deliveries(self, ids: Sequence[int], next_attempt_at: float) -> None:
        """Give claimed rows back unattempted, due again at `next_attempt_at`."""
        if not ids:
            return
        with self.session() as s:
            s.exec(
                update(Delivery)
                .where(col(Delivery.id).in_(list(ids)), col(Delivery.delivered_at).is_(None))
                .values(next_attempt_at=next_attempt_at)
            )

    def add_deliveries(self, rows: Sequence[tuple[str, str, int, int | None]]) -> int:
        """New outbox rows (plugin, hook, recording id, chunk index), e.g. for a replay."""
        with self.session() as s:
            s.add_all(
                Delivery(plugin=p, hook=h, recording_id=r, chunk_index=c) for p, h, r, c in rows
            )
        return len(rows)

    def block_plugin(self, plugin: str, settings_hash: str, reason: str) -> int:
        """Stop delivering to `plugin` while it has these settings; its undelivered rows die with
        `reason`, in the same transaction. Returns how many died."""
        with self.session() as s:
            block = s.get(PluginBlock, plugin) or PluginBlock(
                plugin=plugin, settings_hash=settings_hash, reason=reason
            )
            block.settings_hash, block.reason, block.since = settings_hash, reason, time.time()
            s.add(block)
            res = s.exec(
                update(Delivery)
                .where(
                    col(Delivery.plugin) == plugin,
                    col(Delivery.delivered_at).is_(None),
                    col(Delivery.dead).is_(False),
                )
                .values(dead=True, last_error=reason[:2000])
            )
            return int(res.rowcount)  # type: ignore[attr-defined]

    def plugin_block(self, plugin: str) -> tuple[str, str] | None:
        """(settings hash, reason) when `plugin` is blocked, else None."""
        with self.session() as s:
            b = s.get(PluginBlock, plugin)
            return (b.settings_hash, b.reason) if b else None

    def unblock_plugin(self, plugin: str) -> bool:
        with self.session() as s:
            b = s.get(PluginBlock, plugin)
            if b is not None:
                s.delete(b)
            return b is not None

    def delivery_counts(self) -> dict[str, Any]:
        """Outbox totals, overall and per plugin: pending (not yet tried), failed (tried, will be
        retried), dead (given up), delivered."""
        state = (
            "CASE WHEN delivered_at IS NOT NULL THEN 'delivered' WHEN dead THEN 'dead' "
            "WHEN attempts > 0 THEN 'failed' ELSE 'pending' END"
        )
        with self.session() as s:
            rows = s.exec(  # type: ignore[call-overload]
                text(f"SELECT plugin, {state} AS s, COUNT(*) FROM delivery GROUP BY plugin, s")
            ).all()
        keys = ("pending", "failed", "dead", "delivered")
        out: dict[str, Any] = dict.fromkeys(keys, 0)
        plugins: dict[str, dict[str, int]] = {}
        for plugin, st, n in rows:
            out[st] += n
            plugins.setdefault(plugin, dict.fromkeys(keys, 0))[st] = n
        out["plugins"] = plugins
        return out

    # -- GPU memory calibration ---------------------------------------------------------------

    def record_calibration(self, model: str, device: str, measured_gib: float, estimated_gib: float) -> float:
        """Add one chunk's measured peak allocation against its estimate; returns the ratio plans
        now use (the largest seen: an estimate is a promise not to run out of memory)."""
        if measured_gib <= 0 or estimated_gib <= 0:
            raise ValueError("measured and estimated GiB must be positive")
        ratio = measured_gib / estimated_gib
        with self.session() as s:
            row = s.exec(
                select(Calibration).where(Calibration.model == model, Calibration.device == device)
            ).first()
            if row is None:
                row = Calibration(model=model, device=device)
            row.ratio_mean = (row.ratio_mean * row.samples + ratio) / (row.samples + 1)
            row.samples += 1
            row.ratio_max = max(row.ratio_max, ratio)
            row.last_measured_gib, row.last_estimated_gib = measured_gib, estimated_gib
            row.updated_at = time.time()
            s.add(row)
            return row.ratio_max

    def calibration(self, model: str, device: str) -> float | None:
        """The ratio to apply to estimates for `model` on `device`; None when never measured."""
        with self.session() as s:
            row = s.exec(
                select(Calibration).where(Calibration.model == model, Calibration.device == device)
            ).first()
            return row.ratio_max if row is not None and row.samples else None
