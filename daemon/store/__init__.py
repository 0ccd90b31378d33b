"""The store: framewatch's state in SQLite (one box) or PostgreSQL (several), and the local queue.

`Store(url)` opens the database at the newest schema revision and holds one part per kind of
caller, each in its own module (`Store(url, read_only=True)`: a store already at that revision,
never migrated, over connections that cannot write; `framewatch serve` reads through it):

- `recordings` (recordings.py): register by content, names, state, settle;
- `chunks` (chunks.py): the plan and each chunk's lifecycle, one set of verbs for every queue;
- `events` (events.py): stored events, the plain listing, full-text search (search.py) over
  events and speech;
- `speech` (speech.py): stored speech segments (written with their chunk's events);
- `outbox` (outbox.py): plugin notifications and plugin blocks;
- `alerts` (alerts.py): alert rules' candidates, their second look and outcome;
- `calibration` (calibration.py): measured GPU memory against estimates;
- `summaries` (summaries.py): each recording's summary and chapters, and what a digest covers.

Only frozen data objects (daemon.models, DeliveryInfo) leave the store; its tables (tables.py)
and sessions (session.py) stay inside. db.py and listing.py are the lean path of commands that only
read; migrations/ holds the schema's revisions.
"""

from __future__ import annotations

from typing import Any

from daemon.store.alerts import Alerts
from daemon.store.calibration import Calibrations
from daemon.store.chunks import Chunks, merge_static_spans
from daemon.store.db import ReadOnlyStoreError
from daemon.store.events import Events
from daemon.store.outbox import DeliveryInfo, Outbox
from daemon.store.recordings import Recordings
from daemon.store.session import Database
from daemon.store.speech import SpeechSegments
from daemon.store.stats import stats
from daemon.store.summaries import Summaries
from daemon.store.tables import CHUNK_STATES, RECORDING_STATES

__all__ = [
    "CHUNK_STATES",
    "RECORDING_STATES",
    "DeliveryInfo",
    "ReadOnlyStoreError",
    "Store",
    "merge_static_spans",
]


class Store:
    """All reads and writes of framewatch's state, by part; methods return frozen objects."""

    def __init__(self, url: str, *, read_only: bool = False):
        self.url = url
        self.read_only = read_only
        self.db = Database(url, read_only=read_only)
        self.recordings = Recordings(self.db)
        self.chunks = Chunks(self.db)
        self.events = Events(self.db)
        self.speech = SpeechSegments(self.db)
        self.outbox = Outbox(self.db)
        self.alerts = Alerts(self.db)
        self.calibration = Calibrations(self.db)
        self.summaries = Summaries(self.db)

    def close(self) -> None:
        self.db.close()

    def stats(self) -> dict[str, Any]:
        """Totals for the metrics endpoint (stats.py) with the outbox's counts as `deliveries`."""
        return {
            **stats(self.db),
            "deliveries": self.outbox.counts(),
            "alerts": self.alerts.counts(),
        }
