"""Reading stored speech segments: by recording or chunk, and with their recordings' paths.

Segments are written only with their chunk's events (chunks.py, `commit`); full-text search over
them runs with the events' search (search.py, events.py)."""

from __future__ import annotations

from sqlalchemy import select as sa_select
from sqlmodel import col, select

from daemon.models import SpeechSegment
from daemon.store.session import Database
from daemon.store.tables import Recording, Speech, speech_segment


class SpeechSegments:
    def __init__(self, db: Database):
        self.db = db

    def of(
        self, recording_id: int | None = None, chunk_index: int | None = None
    ) -> list[SpeechSegment]:
        """Segments (of one recording, or one chunk of it), by recording, time and id."""
        with self.db.session() as s:
            q = select(Speech)
            if recording_id is not None:
                q = q.where(Speech.recording_id == recording_id)
            if chunk_index is not None:
                q = q.where(Speech.chunk_index == chunk_index)
            rows = s.exec(
                q.order_by(col(Speech.recording_id), col(Speech.start_s), col(Speech.id))
            ).all()
            return [speech_segment(r) for r in rows]

    def with_paths(self, recording_id: int | None = None) -> list[tuple[SpeechSegment, str]]:
        """Every segment (or one recording's) with its recording's path, by recording and time."""
        q = sa_select(Speech, Recording.path).join(
            Recording, col(Recording.id) == col(Speech.recording_id)
        )
        if recording_id is not None:
            q = q.where(col(Speech.recording_id) == recording_id)
        with self.db.session() as s:
            rows = s.exec(
                q.order_by(col(Speech.recording_id), col(Speech.start_s), col(Speech.id))
            ).all()
            return [(speech_segment(r), p) for r, p in rows]
