"""Recordings' summaries (revision 0007): one per recording, replaced whole when made again.

A summary names events by id and is made from them, so a chunk commit that replaces a chunk's
events drops the recording's summary in the same transaction (chunks.py, `commit`); the worker
makes a new one before the recording settles again. `finished` lists what a digest covers: the
recordings that became done in a period, with their summaries.
"""

from __future__ import annotations

import os
import time

from sqlalchemy import select as sa_select
from sqlmodel import col, delete

from daemon.models import RecordingInfo, Summary
from daemon.store.session import Database
from daemon.store.tables import Recording, SummaryRow, recording_info, summary_of


class Summaries:
    def __init__(self, db: Database):
        self.db = db

    def get(self, recording_id: int) -> Summary | None:
        """The recording's summary, or None (never made, off, failed, or its events changed)."""
        with self.db.session() as s:
            row = s.get(SummaryRow, recording_id)
            return summary_of(row) if row is not None else None

    def put(self, summary: Summary) -> Summary:
        """Store a recording's summary, replacing any earlier one in the same transaction (a
        reader sees the old one or the new one, never none or half). Raises KeyError when the
        recording is not in the store."""
        made_at = time.time()
        provenance = {k: v for k, v in summary.provenance.items() if k != "made_at"}
        with self.db.session() as s:
            if s.get(Recording, summary.recording_id) is None:
                raise KeyError(summary.recording_id)
            s.exec(delete(SummaryRow).where(col(SummaryRow.recording_id) == summary.recording_id))
            row = SummaryRow(
                recording_id=summary.recording_id,
                title=summary.title,
                text=summary.text,
                chapters=[
                    {"start_s": c.start_s, "end_s": c.end_s, "title": c.title}
                    for c in summary.chapters
                ],
                key_events=list(summary.key_events),
                provenance=provenance,
                made_at=made_at,
            )
            s.add(row)
            s.flush()
            return summary_of(row)

    def delete(self, recording_id: int) -> bool:
        """Drop the recording's summary; True when there was one."""
        with self.db.session() as s:
            res = s.exec(delete(SummaryRow).where(col(SummaryRow.recording_id) == recording_id))
            return bool(res.rowcount)  # type: ignore[attr-defined]

    def finished(
        self, since: float, until: float | None = None, folder: str | None = None
    ) -> list[tuple[RecordingInfo, float, Summary | None]]:
        """Recordings that are done and settled (last changed) in [since, until), optionally only
        those under `folder`, oldest first, each with when it settled and its summary (None when
        there is none)."""
        q = (
            sa_select(Recording, SummaryRow)
            .outerjoin(SummaryRow, col(SummaryRow.recording_id) == col(Recording.id))
            .where(col(Recording.status) == "done", col(Recording.updated_at) >= since)
        )
        if until is not None:
            q = q.where(col(Recording.updated_at) < until)
        with self.db.session() as s:
            rows = s.exec(q.order_by(col(Recording.updated_at), col(Recording.id))).all()
            out = [
                (recording_info(r), float(r.updated_at), summary_of(m) if m is not None else None)
                for r, m in rows
            ]
        if folder is not None:
            root = os.path.join(os.path.abspath(folder), "")
            out = [o for o in out if os.path.abspath(o[0].path).startswith(root)]
        return out


__all__ = ["Summaries"]
