"""Recordings: registered by content, their names, their state and its changes.

A recording moves `queued -> analyzing -> done | failed(reason) | skipped(reason)`. Each change
that plugins must hear of writes its outbox rows in the same transaction.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func
from sqlmodel import Session, col, select, update

from daemon.models import RecordingInfo
from daemon.store import listing
from daemon.store.session import Database
from daemon.store.tables import (
    RECORDING_STATES,
    Alert,
    Chunk,
    Delivery,
    Recording,
    RecordingPath,
    recording_info,
)


@dataclass(frozen=True, slots=True)
class RecordingFile:
    """One name of a recording's bytes: the size and file (identity.file_key) registered there."""

    path: str
    size: int
    file_key: str | None


class Recordings:
    """Every read and write of recordings and the paths they were seen under."""

    def __init__(self, db: Database):
        self.db = db

    def register(
        self,
        path: str,
        fingerprint: str,
        size: int,
        mtime: float,
        profile: str | None = None,
        prompt: str | None = None,
        file_key: str | None = None,
    ) -> tuple[RecordingInfo, bool]:
        """Record that these bytes exist at `path`. Returns the recording and whether it is new.

        The same bytes seen under another path are the same recording (one more path row). Several
        boxes may see one file at once: the unique fingerprint and `INSERT ... ON CONFLICT DO
        NOTHING` make exactly one of them the creator (the one that plans and enqueues it)."""
        now = time.time()
        with self.db.session() as s:
            row = Recording(
                fingerprint=fingerprint, path=path, size=size, profile=profile, prompt=prompt
            )
            values = row.model_dump(exclude={"id"})
            new_id = s.exec(  # type: ignore[call-overload]
                self.db.insert(Recording)
                .values(**values)
                .on_conflict_do_nothing(index_elements=["fingerprint"])
                .returning(Recording.id)  # type: ignore[arg-type]
            ).scalar()
            created = new_id is not None
            rec = s.exec(select(Recording).where(Recording.fingerprint == fingerprint)).one()
            assert rec.id is not None
            # An upsert: two boxes recording the same path at once must not collide on its key.
            alias = {
                "path": path,
                "recording_id": rec.id,
                "size": size,
                "mtime": mtime,
                "seen_at": now,
                "file_key": file_key,
            }
            s.exec(  # type: ignore[call-overload]
                self.db.insert(RecordingPath)
                .values(**alias)
                .on_conflict_do_update(
                    index_elements=["path"], set_={k: v for k, v in alias.items() if k != "path"}
                )
            )
            return recording_info(rec), created

    def get(self, recording_id: int) -> RecordingInfo:
        """One recording (KeyError when there is none)."""
        with self.db.session() as s:
            rec = s.get(Recording, recording_id)
            if rec is None:
                raise KeyError(recording_id)
            return recording_info(rec)

    def find(self, path: str) -> RecordingInfo | None:
        """The recording last seen at `path` (by any of its names)."""
        with self.db.session() as s:
            found = listing.recording_id_at(s.connection(), path)
            rec = s.get(Recording, found) if found is not None else None
            return recording_info(rec) if rec else None

    def list(self) -> list[tuple[RecordingInfo, int, int]]:
        """Every recording with (chunks done, chunks total), newest first."""
        with self.db.session() as s:
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
            return [(recording_info(r), n or 0, r.chunks_total) for r, n in rows]

    def files(self, recording_id: int) -> list[RecordingFile]:
        """Every name a recording's bytes were seen under, with the size and file (device and
        inode) registered there: its current path first, then the others, most recently seen
        first."""
        with self.db.session() as s:
            rec = s.get(Recording, recording_id)
            if rec is None:
                raise KeyError(recording_id)
            rows = s.exec(
                select(RecordingPath.path, RecordingPath.size, RecordingPath.file_key)
                .where(RecordingPath.recording_id == recording_id)
                .order_by(col(RecordingPath.seen_at).desc())
            ).all()
            found = [RecordingFile(p, size, key) for p, size, key in rows]
            current = next(
                (f for f in found if f.path == rec.path), RecordingFile(rec.path, rec.size, None)
            )
            return [current] + [f for f in found if f.path != rec.path]

    def paths(self) -> dict[str, tuple[int, float]]:
        """(size, mtime) each known path was registered with: a rescan skips files unchanged since."""
        with self.db.session() as s:
            rows = s.exec(select(RecordingPath.path, RecordingPath.size, RecordingPath.mtime)).all()
            return {p: (size, mtime) for p, size, mtime in rows}

    def set_path(self, recording_id: int, path: str) -> None:
        """The recording's bytes now live at `path` (renamed or moved while it waited)."""
        with self.db.session() as s:
            rec = s.get(Recording, recording_id)
            if rec is not None and rec.path != path:
                rec.path, rec.updated_at = path, time.time()
                s.add(rec)

    # -- state --------------------------------------------------------------------------------

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
        with self.db.session() as s:
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
            return recording_info(rec)

    def start_analysis(
        self, recording_id: int, duration_s: float, settings: dict[str, Any]
    ) -> bool:
        """queued -> analyzing, only from queued: True for the one process that made the move
        (and so enqueues the recording's chunks), False for every other."""
        with self.db.session() as s:
            res = s.exec(
                update(Recording)
                .where(col(Recording.id) == recording_id, col(Recording.status) == "queued")
                .values(
                    status="analyzing",
                    duration_s=duration_s,
                    settings=dict(settings),
                    updated_at=time.time(),
                )
            )
            return bool(res.rowcount == 1)  # type: ignore[attr-defined]

    def outcome(self, recording_id: int) -> str | None:
        """What `settle` would make of the recording now: "done", "failed", or None while it
        has chunks to run or alert candidates to decide (or is settled already). The worker
        makes the summary of one about to be done before settling it."""
        with self.db.session() as s:
            rec = s.get(Recording, recording_id)
            if rec is None:
                raise KeyError(recording_id)
            return _outcome(s, rec)[0]

    def settle(
        self, recording_id: int, finished: Sequence[str] = (), failed: Sequence[str] = ()
    ) -> RecordingInfo:
        """Once no chunk is pending or running and no alert candidate waits for its second look,
        move the recording to done (or failed, naming the first failed chunk) with its outbox
        rows for `finished` / `failed` plugins (so a report lists every alert's outcome). Under the
        recording's row lock, so when the last chunks end on two boxes at once exactly one of them
        settles it and plugins hear of it once."""
        with self.db.session() as s:
            rec = s.exec(
                select(Recording).where(Recording.id == recording_id).with_for_update()
            ).first()
            if rec is None:
                raise KeyError(recording_id)
            outcome, chunks = _outcome(s, rec)
            if outcome is None:
                return recording_info(rec)
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
            return recording_info(rec)

    def due(self, now: float | None = None) -> list[int]:
        """Recordings with work left (queued or analyzing) whose retry time has come, oldest first."""
        now = time.time() if now is None else now
        with self.db.session() as s:
            return list(
                s.exec(
                    select(Recording.id)
                    .where(
                        col(Recording.status).in_(("queued", "analyzing")),
                        (col(Recording.next_attempt_at).is_(None))
                        | (col(Recording.next_attempt_at) <= now),
                    )
                    .order_by(col(Recording.id))
                ).all()
            )

    def defer(self, recording_id: int, error: str, delay_s: float) -> RecordingInfo:
        """An unexpected error while processing a recording: count the attempt and hold the
        recording back for `delay_s` (the caller fails it once attempts run out)."""
        with self.db.session() as s:
            rec = s.get(Recording, recording_id)
            if rec is None:
                raise KeyError(recording_id)
            rec.attempts += 1
            rec.next_attempt_at = time.time() + delay_s
            rec.reason, rec.updated_at = (
                f"attempt {rec.attempts} failed: {error}"[:2000],
                time.time(),
            )
            s.add(rec)
            return recording_info(rec)


def _outcome(s: Session, rec: Recording) -> tuple[str | None, list[Chunk]]:
    """(done | failed | None, the recording's chunks): None while chunks are pending or running
    or an alert candidate waits for its second look, or when it is settled already."""
    if rec.status not in ("queued", "analyzing"):
        return None, []
    chunks = list(
        s.exec(select(Chunk).where(Chunk.recording_id == rec.id).order_by(col(Chunk.index))).all()
    )
    if not chunks or any(c.status in ("pending", "running") for c in chunks):
        return None, chunks
    waiting = s.exec(
        select(Alert.id).where(Alert.recording_id == rec.id, Alert.state == "candidate").limit(1)
    ).first()
    if waiting is not None:
        return None, chunks
    return ("failed" if any(c.status == "failed" for c in chunks) else "done"), chunks
