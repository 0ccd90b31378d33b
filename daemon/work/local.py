"""The local work source: the store is the queue (one box, no server).

The next job is the first pending chunk of the oldest due recording; a queued recording is probed
and planned first. A failed chunk is stored `failed` and retried after daemon.retry_backoff_s
(doubling) until daemon.max_attempts; an unexpected error defers its whole recording the same
way. Chunks left running by a dead process return to pending (reap), and chunks that used every
attempt without finishing (the process died or hung in each) fail for good.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import structlog

from daemon.gpu import CudaFault, GpuLeaseBusy
from daemon.work.source import Hold, Job, Upkeep, WorkSource

if TYPE_CHECKING:
    from daemon.config import Config
    from daemon.store import Store
    from daemon.worker import ChunkDone, Worker

log = structlog.get_logger(__name__)


class LocalSource(WorkSource):
    name = "local"

    def __init__(self, config: Config, store: Store, worker: Worker):
        self.config = config
        self.store = store
        self.worker = worker
        self._wake = threading.Event()
        self._prepared: set[int] = set()  # recordings this process has probed and planned

    def start(self) -> None:
        self.store.chunks.abandon_exhausted(self.config.daemon.max_attempts)

    def wake(self) -> None:
        self._wake.set()

    def take(
        self, should_stop: Callable[[], bool], recordings: Iterable[int] | None = None
    ) -> Job | None:
        """The first pending chunk of the oldest due recording (of `recordings`, when given)."""
        # Cleared before looking, so a wake-up that arrives while looking is not lost.
        self._wake.clear()
        for rid in self.store.recordings.due() if recordings is None else recordings:
            if should_stop():
                return None
            if self._ready(rid) and any(c.status == "pending" for c in self.store.chunks.of(rid)):
                return Job(rid)
        return None

    def idle(self) -> None:
        self._wake.wait(self.config.daemon.queue_poll_s)

    def _ready(self, rid: int) -> bool:
        """Probe and plan a recording this process has not prepared yet (a queued one, or one a
        previous process left analyzing); settle one with no chunk left to run. False when it has
        nothing to run now."""
        rec = self.store.recordings.get(rid)
        if rec.status not in ("queued", "analyzing"):
            return False
        if rec.status == "queued" or rid not in self._prepared:
            try:
                chunks = self.worker.prepare(rid)
            except (CudaFault, GpuLeaseBusy):
                raise
            except Exception as exc:  # this recording's problem (budget, I/O): retried later
                log.exception("recording_error", recording_id=rid)
                self.worker.defer(rid, f"{type(exc).__name__}: {exc}")
                return False
            if not chunks:
                return False
            self._prepared.add(rid)
        if not any(c.status in ("pending", "running") for c in self.store.chunks.of(rid)):
            self.worker.settle(rid)
            return False
        return True

    def finish(self, job: Job, done: ChunkDone | None, hold: Hold) -> None:
        if done is not None and done.status == "failed":
            # Retried by the upkeep job once its backoff has passed, while attempts are left.
            self.store.chunks.fail(
                job.recording_id, done.chunk.index, done.error or "failed", owner=self.worker.owner
            )

    def failed(self, job: Job, error: str) -> None:
        self.worker.defer(job.recording_id, error)

    # -- upkeep ---------------------------------------------------------------------------------

    def maintenance(self) -> list[Upkeep]:
        d = self.config.daemon
        return [
            Upkeep("retry", self.retry, min(60.0, max(1.0, d.retry_backoff_s / 2))),
            Upkeep("reap", self.reap, d.reap_interval_s),
        ]

    def retry(self) -> None:
        """Failed chunks with attempts left, once their backoff has passed, go back in the queue."""
        d = self.config.daemon
        if self.store.chunks.retry_failed(max_attempts=d.max_attempts, backoff_s=d.retry_backoff_s):
            self.wake()

    def reap(self) -> None:
        """Chunks whose lease ran out return to pending; those that used every attempt fail."""
        n = self.store.chunks.reap()
        self.store.chunks.abandon_exhausted(self.config.daemon.max_attempts)
        if n:
            self.wake()
