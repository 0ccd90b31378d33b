"""Reading stored events: by recording or chunk, as the plain listing of `framewatch events`,
with their recordings' paths, and ranked by full-text search together with speech segments
(search.py builds the query)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select as sa_select
from sqlalchemy import text
from sqlmodel import col, select

from daemon.models import EventInfo
from daemon.store import listing
from daemon.store.db import read_only
from daemon.store.search import SearchHit, SearchQuery, build
from daemon.store.session import Database
from daemon.store.tables import Event, Recording, Speech, event_info, speech_segment


class Events:
    def __init__(self, db: Database):
        self.db = db

    def of(
        self, recording_id: int | None = None, chunk_index: int | None = None
    ) -> list[EventInfo]:
        """Events (of one recording, or one chunk of it), by recording, time and id."""
        with self.db.session() as s:
            q = select(Event)
            if recording_id is not None:
                q = q.where(Event.recording_id == recording_id)
            if chunk_index is not None:
                q = q.where(Event.chunk_index == chunk_index)
            rows = s.exec(
                q.order_by(col(Event.recording_id), col(Event.start_s), col(Event.id))
            ).all()
            return [event_info(e) for e in rows]

    def get(self, event_id: int) -> EventInfo:
        """One stored event by id; KeyError when there is none (never stored, or replaced)."""
        with self.db.session() as s:
            row = s.get(Event, event_id)
            if row is None:
                raise KeyError(event_id)
            return event_info(row)

    def lines(
        self, recording_id: int | None = None
    ) -> Sequence[tuple[str, float, float, str, str]]:
        """(path, start_s, end_s, label, description) of every event (or one recording's), by
        recording and time: what `framewatch events` prints (listing.py)."""
        with read_only(self.db.engine) as conn, conn.begin():
            return listing.event_lines(conn, recording_id)

    def with_paths(self, provenance: bool = True) -> list[tuple[EventInfo, str]]:
        """Every event with its recording's path, by recording and time. `provenance=False`
        leaves out the JSON settings (a listing does not print them)."""
        columns = [
            Event.id,
            Event.recording_id,
            Event.chunk_index,
            Event.start_s,
            Event.end_s,
            Event.label,
            Event.description,
            Event.confidence,
            Event.evidence_s,
            Event.model,
            Event.prompt_hash,
            Recording.path,
            *([Event.settings] if provenance else []),
        ]
        with self.db.session() as s:
            # Core rows, not ORM objects: building an Event object per row is what made large
            # listings slow (bench/RESULTS.md, store).
            rows = (
                s.connection()
                .execute(
                    sa_select(*columns)
                    .join(Recording, col(Recording.id) == col(Event.recording_id))
                    .order_by(col(Event.recording_id), col(Event.start_s), col(Event.id))
                )
                .all()
            )
        return [
            (
                EventInfo(
                    id=r[0],
                    recording_id=r[1],
                    chunk_index=r[2],
                    start_s=r[3],
                    end_s=r[4],
                    label=r[5],
                    description=r[6],
                    confidence=r[7],
                    evidence_s=r[8],
                    provenance={
                        "model": r[9],
                        "prompt_hash": r[10],
                        **((r[12] or {}) if provenance else {}),
                    },
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
        """Events and speech segments matching `query` (a search box's text), best first, each
        with its recording and provenance (search.py: the query syntax, and the ranked query
        for this store's dialect). `since`: a Unix time; only recordings whose file was
        modified then or later. `labels` leave speech out (it has none)."""
        q = SearchQuery(query, recording_id, since, tuple(labels), limit, offset)
        stmt = build(self.db.dialect, q)
        if stmt is None:
            return []
        with self.db.session() as s:
            ranked = s.connection().execute(text(stmt.sql), stmt.params).all()
            wanted = {kind: [r[1] for r in ranked if r[0] == kind] for kind in ("event", "speech")}
            found: dict[tuple[str, int], Any] = {}
            if wanted["event"]:
                rows: Any = s.exec(
                    select(Event, Recording.path, Recording.status)
                    .join(Recording, col(Recording.id) == col(Event.recording_id))
                    .where(col(Event.id).in_(wanted["event"]))
                ).all()
                found |= {("event", e.id): (event_info(e), None, p, st) for e, p, st in rows}
            if wanted["speech"]:
                rows = s.exec(
                    select(Speech, Recording.path, Recording.status)
                    .join(Recording, col(Recording.id) == col(Speech.recording_id))
                    .where(col(Speech.id).in_(wanted["speech"]))
                ).all()
                found |= {("speech", r.id): (None, speech_segment(r), p, st) for r, p, st in rows}
            return [
                SearchHit(event, path, status, float(score), q.offset + i + 1, speech)
                for i, (kind, item_id, score, *_) in enumerate(ranked)
                for event, speech, path, status in [found[(kind, item_id)]]
            ]
