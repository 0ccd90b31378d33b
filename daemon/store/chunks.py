"""Chunks: the plan of a recording and each chunk's lifecycle, one set of verbs for every queue.

A chunk moves `pending -> running(owner, lease) -> done | failed(attempts, error)`. Whoever hands
out work (the local store queue or the Redis stream, daemon/work/) uses the same verbs: `claim`,
`commit`, `fail` (optionally back to pending for a queue that redelivers), `release`. A chunk's
events, its speech segments, its `done` status and its outbox rows commit in one transaction,
replacing whatever a previous run stored for it, so a crash at any point loses nothing and stores
nothing twice.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import structlog
from sqlalchemy import func
from sqlmodel import Session, col, delete, select

from daemon.identity import owner_is_dead
from daemon.models import (
    Candidate,
    ChunkInfo,
    ChunkWindow,
    EventInfo,
    EventSpan,
    RuleHit,
    StaticSpan,
    Utterance,
)
from daemon.store.alerts import insert_candidates
from daemon.store.session import Database
from daemon.store.tables import (
    Chunk,
    Delivery,
    Event,
    Recording,
    Speech,
    SummaryRow,
    chunk_info,
    event_info,
)

log = structlog.get_logger(__name__)


def merge_static_spans(
    notes: Sequence[tuple[float, float, dict[str, Any] | None]],
) -> list[StaticSpan]:
    """Chunks' (start_s, end_s, provenance["static"]) in chunk order -> runs of consecutive static
    chunks with one action, each as one span (its largest measured change)."""
    spans: list[StaticSpan] = []
    run: list[tuple[float, float, dict[str, Any]]] = []

    def close() -> None:
        if run:
            spans.append(
                StaticSpan(
                    start_s=run[0][0],
                    end_s=run[-1][1],
                    action=run[0][2]["action"],
                    peak_change=max(float(n.get("peak_change", 0.0)) for _, _, n in run),
                    threshold=float(run[0][2].get("threshold", 0.0)),
                    chunks=len(run),
                )
            )
            run.clear()

    for start, end, note in notes:
        if note is None or (run and note.get("action") != run[0][2]["action"]):
            close()
        if note is not None:
            run.append((start, end, note))
    close()
    return spans


def _row(s: Session, recording_id: int, index: int, *, lock: bool = False) -> Chunk:
    """One chunk's row (KeyError when there is none); `lock` holds it to the end of the
    transaction (FOR UPDATE on PostgreSQL; SQLite's BEGIN IMMEDIATE already serialises)."""
    q = select(Chunk).where(Chunk.recording_id == recording_id, Chunk.index == index)
    c = s.exec(q.with_for_update() if lock else q).first()
    if c is None:
        raise KeyError((recording_id, index))
    return c


def _total(s: Session, recording_id: int) -> int:
    return int(s.exec(select(func.count()).where(Chunk.recording_id == recording_id)).one())


class Chunks:
    """Every read and write of chunks (and of the events a chunk commits)."""

    def __init__(self, db: Database):
        self.db = db

    # -- the plan -----------------------------------------------------------------------------

    def plan(self, recording_id: int, windows: Sequence[ChunkWindow]) -> list[ChunkInfo]:
        """Create the chunk rows of a recording unless they exist (a resumed run keeps its plan)."""
        with self.db.session() as s:
            # The recording's row lock serialises planners on several boxes (PostgreSQL); SQLite's
            # immediate transactions already do.
            s.exec(select(Recording.id).where(Recording.id == recording_id).with_for_update())
            existing = list(
                s.exec(
                    select(Chunk).where(Chunk.recording_id == recording_id).order_by(Chunk.index)
                ).all()
            )
            if not existing:
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
            return [chunk_info(c, len(existing)) for c in existing]

    def of(self, recording_id: int) -> list[ChunkInfo]:
        """A recording's chunks, by index."""
        with self.db.session() as s:
            rows = s.exec(
                select(Chunk).where(Chunk.recording_id == recording_id).order_by(Chunk.index)
            ).all()
            return [chunk_info(c, len(rows)) for c in rows]

    def get(self, recording_id: int, index: int) -> ChunkInfo:
        """One chunk (KeyError when there is none)."""
        with self.db.session() as s:
            return chunk_info(_row(s, recording_id, index), _total(s, recording_id))

    def static_spans(self, recording_id: int) -> list[StaticSpan]:
        """The recording's static spans (merge_static_spans), by time."""
        return merge_static_spans(
            [(c.start_s, c.end_s, c.provenance.get("static")) for c in self.of(recording_id)]
        )

    # -- the lifecycle ------------------------------------------------------------------------

    def claim(
        self, recording_id: int, owner: str, lease_s: float, index: int | None = None
    ) -> ChunkInfo | None:
        """Lease a chunk to `owner` (running, one more attempt).

        Without `index`: the first pending chunk of the recording (None when there is none).
        With `index`: the chunk a queue handed to `owner`, whatever its state unless done (None: a
        redelivered chunk that already committed is acknowledged, not recomputed); the queue
        decides who holds a chunk, so a previous owner's late commit is then refused."""
        with self.db.session() as s:
            if index is None:
                c = s.exec(
                    select(Chunk)
                    .where(Chunk.recording_id == recording_id, Chunk.status == "pending")
                    .order_by(Chunk.index)
                    .limit(1)
                    .with_for_update(skip_locked=True)
                ).first()
                if c is None:
                    return None
            else:
                c = _row(s, recording_id, index, lock=True)
                if c.status == "done":
                    return None
            now = time.time()
            c.status, c.owner, c.lease_until, c.started_at = "running", owner, now + lease_s, now
            c.attempts += 1
            s.add(c)
            return chunk_info(c, _total(s, recording_id))

    def neighbour_events(
        self, recording_id: int, index: int, start_s: float, end_s: float
    ) -> list[EventSpan]:
        """The events other chunks of the recording stored within [start_s, end_s] (a chunk's
        window and the merge tolerance around it), for the border merge."""
        with self.db.session() as s:
            rows = s.exec(
                select(Event.id, Event.label, Event.start_s, Event.end_s).where(
                    Event.recording_id == recording_id,
                    Event.chunk_index != index,
                    Event.end_s >= start_s,
                    Event.start_s <= end_s,
                )
            ).all()
            return [EventSpan(int(i), lbl, st, en) for i, lbl, st, en in rows]

    def neighbour_speech(self, recording_id: int, index: int) -> list[Utterance]:
        """The speech segments stored for the chunks just before and after `index`."""
        with self.db.session() as s:
            rows = s.exec(
                select(Speech).where(
                    Speech.recording_id == recording_id,
                    col(Speech.chunk_index).in_([index - 1, index + 1]),
                )
            ).all()
            return [Utterance(r.start_s, r.end_s, r.text, r.language) for r in rows]

    def commit(
        self,
        recording_id: int,
        index: int,
        owner: str,
        events: Sequence[Candidate],
        provenance: dict[str, Any],
        *,
        speech: Sequence[Utterance] = (),
        notify: Sequence[str] = (),
        hits: Sequence[RuleHit] = (),
        severity: Mapping[str, str] | None = None,
        alert_provenance: Mapping[str, Any] | None = None,
        alert_notes: Mapping[str, str] | None = None,
        widened: Mapping[int, tuple[float, float]] | None = None,
    ) -> list[EventInfo] | None:
        """Store a chunk's events and speech segments and mark it done, in one transaction,
        replacing whatever a previous run stored for it. Each segment records the recogniser
        that wrote it (`provenance["speech"]["asr"]`: model and settings). Outbox rows for
        `notify` plugins (hook events_found) go in the same transaction, and so do the alert
        candidates of `hits` (store/alerts.py), and so do the new times of the events of other
        chunks that this chunk's events `widened` (the border merge). Returns None when the
        chunk is no longer ours (lease taken over)."""
        with self.db.session() as s:
            # Locked: two boxes that computed the same chunk commit one after the other, and the
            # second sees it done (events stored once, one outbox row per plugin).
            c = _row(s, recording_id, index, lock=True)
            if c.status == "done" or (c.owner not in (None, owner)):
                log.warning(
                    "chunk_commit_skipped", recording_id=recording_id, chunk=index, owner=c.owner
                )
                return None
            s.exec(delete(Event).where(col(Event.chunk_id) == c.id))
            # The recording's summary names events by id and was made from the old ones: stale.
            s.exec(delete(SummaryRow).where(col(SummaryRow.recording_id) == recording_id))
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
            for event_id, (lo, hi) in (widened or {}).items():
                other = s.get(Event, event_id)
                if other is not None and other.recording_id == recording_id:
                    other.start_s, other.end_s = lo, hi
                    s.add(other)
            s.exec(delete(Speech).where(col(Speech.chunk_id) == c.id))
            asr = dict(provenance.get("speech", {}).get("asr", {}))
            model = str(asr.pop("model", ""))
            s.add_all(
                Speech(
                    recording_id=recording_id,
                    chunk_id=c.id,  # type: ignore[arg-type]
                    chunk_index=index,
                    start_s=u.start_s,
                    end_s=u.end_s,
                    text=u.text,
                    language=u.language,
                    model=model,
                    settings={
                        "asr": asr,
                        **({"avg_logprob": u.avg_logprob} if u.avg_logprob is not None else {}),
                        **(
                            {"no_speech_prob": u.no_speech_prob}
                            if u.no_speech_prob is not None
                            else {}
                        ),
                    },
                )
                for u in speech
            )
            c.status, c.error, c.owner, c.lease_until = "done", None, None, None
            c.finished_at, c.provenance = time.time(), dict(provenance)
            s.add(c)
            for plugin in notify:
                s.add(
                    Delivery(
                        plugin=plugin,
                        hook="events_found",
                        recording_id=recording_id,
                        chunk_index=index,
                    )
                )
            if hits:
                insert_candidates(
                    s,
                    recording_id,
                    index,
                    hits,
                    severity or {},
                    alert_provenance or {},
                    alert_notes,
                )
            s.flush()
            return [event_info(r) for r in rows]

    def fail(
        self,
        recording_id: int,
        index: int,
        reason: str,
        *,
        owner: str | None = None,
        requeue: bool = False,
    ) -> None:
        """A chunk did not complete: `failed` with `reason`, or back to `pending` with it when
        `requeue` (a shared queue redelivers it, so no box may settle the recording meanwhile).

        With `owner`, only while the chunk is still that owner's (or no one's); without, whoever
        holds it (the queue gave up on it). A done chunk stays done."""
        with self.db.session() as s:
            c = _row(s, recording_id, index, lock=True)
            if c.status == "done" or (owner is not None and c.owner not in (None, owner)):
                return
            c.status = "pending" if requeue else "failed"
            c.error, c.owner, c.lease_until = reason[:2000], None, None
            if not requeue:
                c.finished_at = time.time()
            s.add(c)

    def release(self, recording_id: int, index: int, owner: str) -> None:
        """Give a claimed chunk back untouched (shutdown in the middle of it): the attempt it used
        is given back too."""
        with self.db.session() as s:
            c = _row(s, recording_id, index)
            if c.status == "running" and c.owner == owner:
                c.status, c.owner, c.lease_until = "pending", None, None
                c.attempts = max(0, c.attempts - 1)
                s.add(c)

    def retry_failed(
        self,
        recording_id: int | None = None,
        *,
        max_attempts: int | None = None,
        backoff_s: float = 0.0,
        now: float | None = None,
    ) -> list[int]:
        """Put failed chunks back to `pending` (of one recording, or of all), and their failed
        recordings back in the queue. Only chunks with attempts left (fewer than `max_attempts`,
        when given) whose backoff (backoff_s * 2^(attempts-1) after the failure) has passed.
        Returns the recordings re-queued."""
        now = time.time() if now is None else now
        requeued: set[int] = set()
        with self.db.session() as s:
            q = select(Chunk).where(Chunk.status == "failed")
            if recording_id is not None:
                q = q.where(Chunk.recording_id == recording_id)
            if max_attempts is not None:
                q = q.where(Chunk.attempts < max_attempts)
            for c in s.exec(q).all():
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
                requeued.add(c.recording_id)
        if requeued:
            log.info("chunks_retried", recordings=sorted(requeued))
        return sorted(requeued)

    def reap(self, lease_grace_s: float = 0.0) -> int:
        """Return to `pending` every chunk left `running` by a dead local process or whose lease
        ran out. Run at start-up and periodically."""
        now = time.time()
        n = 0
        with self.db.session() as s:
            for c in s.exec(select(Chunk).where(Chunk.status == "running")).all():
                if owner_is_dead(c.owner) or (c.lease_until or 0) + lease_grace_s < now:
                    c.status, c.owner, c.lease_until = "pending", None, None
                    s.add(c)
                    n += 1
        if n:
            log.info("chunks_reaped", count=n)
        return n

    def abandon_exhausted(self, max_attempts: int) -> int:
        """Fail pending chunks that already used every attempt: the process died or hung in each
        of them (a released chunk gives its attempt back), so running it again would only repeat
        the crash."""
        n = 0
        with self.db.session() as s:
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

    # -- what is in flight --------------------------------------------------------------------

    def unfinished(self) -> list[tuple[int, int]]:
        """(recording id, chunk index) of every pending or running chunk of a recording still being
        analysed: what a work queue must hold (it is rebuilt from this after losing its data)."""
        with self.db.session() as s:
            rows = s.exec(
                select(Chunk.recording_id, Chunk.index)
                .join(Recording, col(Recording.id) == col(Chunk.recording_id))
                .where(
                    col(Chunk.status).in_(("pending", "running")),
                    col(Recording.status).in_(("queued", "analyzing")),
                )
                .order_by(col(Chunk.recording_id), col(Chunk.index))
            ).all()
            return [(r, i) for r, i in rows]

    def running(self) -> list[tuple[int, int, str | None, float | None]]:
        """(recording id, chunk index, owner, started_at) of every chunk being analysed now."""
        with self.db.session() as s:
            rows = s.exec(
                select(Chunk.recording_id, Chunk.index, Chunk.owner, Chunk.started_at)
                .where(Chunk.status == "running")
                .order_by(col(Chunk.started_at))
            ).all()
            return [(r, i, o, t) for r, i, o, t in rows]
