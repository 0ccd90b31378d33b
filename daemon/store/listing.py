"""`framewatch events`: every stored event as one plain row (path, start_s, end_s, label,
description), by recording and time, and the recording a path names.

Plain SQL on a Core connection (daemon/db.py), so listing 100,000 events imports no ORM and builds
no objects; the order is the `ix_event_listing` index's (revision 0003), so the database reads
the events in order instead of sorting them. `Store` runs the same queries (`event_lines`,
`find_recording`): there is one spelling of each.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection

# Where a path's recording is: the newest recording seen under that name (recording_path, which
# follows renames and copies), else the newest recording first registered under it.
_RECORDING_AT = text(
    "SELECT COALESCE("
    "(SELECT recording_id FROM recording_path WHERE path = :path), "
    "(SELECT id FROM recording WHERE path = :path ORDER BY id DESC LIMIT 1))"
)
_LINES = (
    "SELECT r.path, e.start_s, e.end_s, e.label, e.description "
    "FROM event AS e JOIN recording AS r ON r.id = e.recording_id "
)
_ORDER = "ORDER BY e.recording_id, e.start_s, e.id"
ALL_LINES = text(_LINES + _ORDER)
RECORDING_LINES = text(_LINES + "WHERE e.recording_id = :recording_id " + _ORDER)


def recording_id_at(conn: Connection, path: str) -> int | None:
    """The id of the recording last seen at `path` (by any of its names), or None."""
    found = conn.execute(_RECORDING_AT, {"path": path}).scalar()
    return None if found is None else int(found)


def event_lines(conn: Connection, recording_id: int | None = None) -> Sequence[Any]:
    """(path, start_s, end_s, label, description) of every event, or of one recording's, by
    recording and time: SQLAlchemy's rows as they come (tuple-like; copying 100,000 of them into
    tuples was a tenth of the command)."""
    if recording_id is None:
        return conn.execute(ALL_LINES).all()
    return conn.execute(RECORDING_LINES, {"recording_id": recording_id}).all()
