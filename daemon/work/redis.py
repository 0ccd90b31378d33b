"""The Redis work source of several boxes: chunk jobs come from the shared stream (streams.py).

Every box consumes; a box that watches folders (`framewatch run`) also produces: it plans the
recordings its watcher queued and enqueues their chunks (`framewatch worker` only consumes). The
store stays the truth: a chunk is committed there before its message is acknowledged, a
redelivered chunk that already committed is acknowledged without running, and the stream is
rebuilt from the store's unfinished chunks at start, every daemon.reap_interval_s, and whenever
Redis comes back without its data. A failed chunk is redelivered at once (to any box) and
dead-lettered after queue.max_deliveries, or at once when a retry cannot cure it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import redis
import structlog

from daemon.gpu import CudaFault, GpuLeaseBusy
from daemon.work.source import Hold, Job, WorkSource
from daemon.work.streams import LeaseKeeper, QueueUnavailable, RedisQueue, backoff

if TYPE_CHECKING:
    from daemon.config import Config
    from daemon.store import Store
    from daemon.worker import ChunkDone, Worker

log = structlog.get_logger(__name__)


def make_queue(config: Config) -> RedisQueue:
    """The stream client for the configured queue."""
    q = config.queue
    assert q.url is not None  # the config refuses backend redis without a url
    return RedisQueue(
        q.url, prefix=q.prefix, lease_s=q.lease_seconds, max_deliveries=q.max_deliveries
    )


class RedisSource(WorkSource):
    name = "redis"

    def __init__(
        self,
        config: Config,
        store: Store,
        worker: Worker,
        stop: threading.Event,
        *,
        queue: RedisQueue | None = None,
        produce: bool = True,
    ):
        self.config = config
        self.store = store
        self.worker = worker
        self.stop = stop
        self.queue = queue or make_queue(config)
        self.produce = produce
        self._rebuild_due = True
        self._produce_due = produce
        self._outage = 0  # consecutive failed tries at Redis
        self._last_rebuild = 0.0

    def wake(self) -> None:
        self._produce_due = self.produce

    def close(self) -> None:
        self.queue.close()

    # -- taking a job ---------------------------------------------------------------------------

    def take(self, should_stop: Callable[[], bool]) -> Job | None:
        """Rebuild and produce when due, then read one message (waiting up to a second for it, so
        `idle` need not wait)."""
        try:
            job = self._take()
            if self._outage:
                log.info("queue_reachable_again", after_tries=self._outage)
                self._outage = 0
            return job
        except QueueUnavailable as exc:
            self._outage += 1
            delay = backoff(self._outage)
            if self._outage == 1 or self._outage % 10 == 0:
                log.warning(
                    "queue_unavailable", error=str(exc), tries=self._outage, retry_in_s=delay
                )
            self.stop.wait(delay)
        except redis.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            # Redis came back without our stream: rebuild it from the store before reading on.
            log.warning("queue_lost_its_data")
            self._rebuild_due = True
        return None

    def _take(self) -> Job | None:
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
        message = self.queue.take(block_ms=1000)
        if message is None:
            return None
        job = Job(message.recording_id, message.index, message.deliveries, message)
        with structlog.contextvars.bound_contextvars(
            recording_id=job.recording_id, chunk=job.index, deliveries=job.deliveries
        ):
            if message.deliveries > self.queue.max_deliveries:
                # Taken over from boxes that died (or hung) in it every time: running it again
                # would only repeat that.
                self._give_up(
                    job,
                    f"gave up after {message.deliveries - 1} deliveries: the worker died or hung each time",
                )
                return None
            try:
                self.store.recordings.get(job.recording_id)
            except KeyError:
                self.queue.ack(message)  # its recording is gone from the store: nothing to do
                return None
        return job

    def _rebuild(self) -> None:
        created = self.queue.ensure_group()
        added = self.queue.enqueue_many(self.store.chunks.unfinished())
        self._rebuild_due = False
        self._last_rebuild = time.monotonic()
        if added or created:
            log.info("queue_rebuilt", added=added, group_created=created)

    def _produce_all(self) -> None:
        """Plan every queued recording and enqueue its chunks; the box whose store transaction
        moves a recording from queued to analyzing is the one that enqueues it."""
        for rid in self.store.recordings.due():
            if self.stop.is_set():
                return
            with structlog.contextvars.bound_contextvars(recording_id=rid):
                if self.store.recordings.get(rid).status != "queued":
                    continue
                try:
                    chunks = self.worker.prepare(rid)
                except (CudaFault, GpuLeaseBusy):
                    raise
                except Exception as exc:  # this recording's problem (budget, I/O): retried later
                    log.exception("recording_error")
                    self.worker.defer(rid, f"{type(exc).__name__}: {exc}")
                    continue
                if chunks:
                    added = self.queue.enqueue_many(
                        (rid, c.index) for c in chunks if c.status != "done"
                    )
                    log.info("recording_enqueued", chunks=added)

    # -- running and finishing a job ----------------------------------------------------------

    @contextmanager
    def hold(self, job: Job) -> Iterator[Hold]:
        hold = Hold()
        with LeaseKeeper(self.queue, job.token, lost=hold.lost):
            yield hold

    def finish(self, job: Job, done: ChunkDone | None, hold: Hold) -> None:
        if hold.lost.is_set():
            # Another box holds the job now; its outcome (or ours, if we committed first) is in
            # the store, and the job stays with that box.
            return
        if done is None or done.status == "done":
            self._until_done(lambda: self.queue.ack(job.token))
            self.worker.settle(job.recording_id)
        elif done.status == "failed" and (
            done.permanent or job.deliveries >= self.queue.max_deliveries
        ):
            why = done.error or "failed"
            self._give_up(
                job, why if done.permanent else f"gave up after {job.deliveries} deliveries: {why}"
            )
        elif done.status == "failed":
            # Pending meanwhile, so no box settles the recording as failed too early.
            self.store.chunks.fail(
                job.recording_id,
                done.chunk.index,
                done.error or "failed",
                owner=self.worker.owner,
                requeue=True,
            )
            self._retry(job, done.error or "failed")
        else:  # released on stop
            self._retry(job, done.status)

    def failed(self, job: Job, error: str) -> None:
        # e.g. the store briefly away: let the job come back.
        self._retry(job, error)

    def _give_up(self, job: Job, reason: str) -> None:
        assert job.index is not None
        self.store.chunks.fail(job.recording_id, job.index, reason)
        self._until_done(lambda: self.queue.dead_letter(job.token, reason))
        self.worker.settle(job.recording_id)

    def _retry(self, job: Job, error: str) -> None:
        log.info("chunk_will_be_redelivered", error=error)
        self._until_done(lambda: self.queue.retry_soon(job.token))

    def _until_done(self, op: Callable[[], object]) -> None:
        """Run a queue operation that must happen (ack, dead letter), waiting out an outage. Given
        up only on stop: a job not acknowledged is redelivered and found already done."""
        tries = 0
        while True:
            try:
                op()
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
