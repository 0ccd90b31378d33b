"""The worker loop of several boxes: chunk jobs come from the shared Redis queue, not the store.

Every box runs this loop (`framewatch run` also produces: it plans the recordings its watcher
queued and enqueues their chunks; `framewatch worker` only consumes). The store stays the truth:
a chunk is committed there before its job is acknowledged, a redelivered chunk that already
committed is acknowledged without running, and the queue is rebuilt from the store's unfinished
chunks at start, periodically, and whenever Redis comes back without its data.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

import redis
import structlog

from daemon.gpu import CudaFault, GpuLeaseBusy
from daemon.queue import Heartbeat, Job, QueueUnavailable, RedisQueue, backoff
from daemon.scheduler import Current, WorkerLoop

if TYPE_CHECKING:
    from daemon.config import Config
    from daemon.store import Store
    from daemon.worker import Worker

log = structlog.get_logger(__name__)


def make_queue(config: Config) -> RedisQueue:
    q = config.queue
    assert q.url is not None  # the config refuses backend redis without a url
    return RedisQueue(q.url, prefix=q.prefix, lease_s=q.lease_seconds, max_deliveries=q.max_deliveries)


class QueueLoop(WorkerLoop):
    """WorkerLoop whose work comes from the Redis stream: one job per pass, leased by heartbeat."""

    def __init__(
        self,
        worker: Worker,
        store: Store,
        config: Config,
        stop: threading.Event,
        *,
        queue: RedisQueue | None = None,
        produce: bool = True,
    ):
        super().__init__(worker, store, config, stop)
        self.queue = queue or make_queue(config)
        self.produce = produce
        worker.retry_by_queue = True
        self._rebuild_due = True
        self._produce_due = produce
        self._outage = 0  # consecutive failed tries at Redis
        self._last_rebuild = 0.0

    def wake(self) -> None:
        self._produce_due = self.produce
        super().wake()

    def rebuild_soon(self) -> None:
        """Re-enqueue the store's unfinished chunks at the next pass (a periodic job calls this)."""
        self._rebuild_due = True

    # -- one pass -------------------------------------------------------------------------------

    def _drain(self) -> bool:
        try:
            self._pass()
            if self._outage:
                log.info("queue_reachable_again", after_tries=self._outage)
                self._outage = 0
        except QueueUnavailable as exc:
            self._outage += 1
            delay = backoff(self._outage)
            if self._outage == 1 or self._outage % 10 == 0:
                log.warning("queue_unavailable", error=str(exc), tries=self._outage, retry_in_s=delay)
            self.stop.wait(delay)
        except redis.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            # Redis came back without our stream: rebuild it from the store before reading on.
            log.warning("queue_lost_its_data")
            self._rebuild_due = True
        return True  # take() already waited up to a second when idle: loop straight on

    def _pass(self) -> None:
        periodic = time.monotonic() - self._last_rebuild > self.config.daemon.reap_interval_s
        if self._rebuild_due or periodic:
            self._rebuild()
            # Also the safety net for recordings whose enqueueing an outage interrupted.
            self._produce_due = self._produce_due or self.produce
        if self._produce_due:
            self._produce_due = False  # cleared first: a wake-up during the pass is kept
            try:
                self._produce_all()
            except BaseException:
                self._produce_due = True
                raise
        job = self.queue.take(block_ms=1000)
        if job is not None:
            self._handle(job)

    def _rebuild(self) -> None:
        created = self.queue.ensure_group()
        added = self.queue.enqueue_many(self.store.unfinished_chunks())
        self._rebuild_due = False
        self._last_rebuild = time.monotonic()
        if added or created:
            log.info("queue_rebuilt", added=added, group_created=created)

    def _produce_all(self) -> None:
        """Plan every queued recording and enqueue its chunks; the box whose store transaction
        moves a recording from queued to analyzing is the one that enqueues it."""
        for rid in self.store.due_recordings():
            if self.stop.is_set():
                return
            with structlog.contextvars.bound_contextvars(recording_id=rid):
                try:
                    chunks = self.worker.prepare(rid)
                except (CudaFault, GpuLeaseBusy):
                    raise
                except Exception as exc:  # this recording's problem (budget, I/O): retried later
                    log.exception("recording_error")
                    self._defer(rid, f"{type(exc).__name__}: {exc}")
                    continue
                if chunks:
                    added = self.queue.enqueue_many((rid, c.index) for c in chunks if c.status != "done")
                    log.info("recording_enqueued", chunks=added)

    def _handle(self, job: Job) -> None:
        q = self.queue
        with structlog.contextvars.bound_contextvars(
            recording_id=job.recording_id, chunk=job.index, deliveries=job.deliveries
        ):
            if job.deliveries > q.max_deliveries:
                # Taken over from workers that died (or hung) in it every time: running it again
                # would only repeat that.
                self._give_up(job, f"gave up after {job.deliveries - 1} deliveries: the worker died or hung each time")
                return
            try:
                rec = self.store.recording(job.recording_id)
            except KeyError:
                q.ack(job)  # its recording is gone from the store: nothing to do
                return
            self.current = Current(rec.id, rec.path, job.index, 0, time.monotonic())
            log.info("chunk_started", path=rec.path)
            self._status(f"{rec.path} chunk {job.index + 1}")
            try:
                with Heartbeat(q, job) as hb:
                    done = self.worker.process_chunk(job.recording_id, job.index, should_stop=self.stop.is_set)
            except (CudaFault, GpuLeaseBusy):
                raise
            except Exception as exc:  # e.g. the store briefly away: let the job come back
                log.exception("chunk_error")
                self.release_current()
                self.current = None
                self._retry(job, f"{type(exc).__name__}: {exc}")
                return
            self.current = None
            if hb.lost.is_set():
                # Another box holds the job now; its outcome (or ours, if we committed first) is
                # in the store, and the job stays with that box.
                return
            if done is None or done.status == "done":
                self._chunks += 1 if done is not None else 0
                self._finish(job)
            elif done.status == "failed" and (done.permanent or job.deliveries >= q.max_deliveries):
                why = done.error or "failed"
                self._give_up(job, why if done.permanent else f"gave up after {job.deliveries} deliveries: {why}")
            else:  # failed with deliveries left, or released on stop
                self._retry(job, done.error or done.status)

    def _finish(self, job: Job) -> None:
        self._until_done(lambda: self.queue.ack(job))
        self.worker.settle(job.recording_id)

    def _give_up(self, job: Job, reason: str) -> None:
        self.store.fail_chunk_now(job.recording_id, job.index, reason)
        self._until_done(lambda: self.queue.dead_letter(job, reason))
        self.worker.settle(job.recording_id)

    def _retry(self, job: Job, error: str) -> None:
        log.info("chunk_will_be_redelivered", error=error)
        self._until_done(lambda: self.queue.retry_soon(job))

    def _until_done(self, op: object) -> None:
        """Run a queue operation that must happen (ack, dead letter), waiting out an outage. Given
        up only on stop: a job not acknowledged is redelivered and found already done."""
        tries = 0
        while True:
            try:
                op()  # type: ignore[operator]
                return
            except QueueUnavailable as exc:
                tries += 1
                if tries == 1:
                    log.warning("queue_unavailable", error=str(exc))
                if self.stop.wait(backoff(tries)):
                    return
            except redis.ResponseError as exc:
                if "NOGROUP" in str(exc):  # Redis lost the job with its data: nothing to finish
                    self._rebuild_due = True
                    return
                raise
