"""Redis Streams for several boxes: chunk messages on one stream, read through one consumer group.

A message is (recording id, chunk index); the store stays the source of truth and the stream only
says who works on what. A consumer (one per process) reads a message with XREADGROUP and keeps
its lease with a LeaseKeeper (XCLAIM JUSTID on its own message resets the idle time without
counting a delivery), so a long chunk on a live box is never taken; a dead box's message goes idle
and XAUTOCLAIM hands it to another consumer after `lease_s`. XACK (and XDEL) only after the
chunk's events committed. The delivery count (XPENDING) bounds retries: past `max_deliveries` the
message goes to the dead-letter stream.

A hash maps each queued chunk to its message id, written in the same Lua script as the XADD, so a
chunk is in the stream once however often it is enqueued (several watchers, a rebuild after Redis
lost its data, a restart).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Self

import structlog

from daemon.identity import owner_id

log = structlog.get_logger(__name__)

GROUP = "workers"

# KEYS: stream, queued hash. ARGV: member, recording id, chunk index.
_ENQUEUE = """
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then return false end
local id = redis.call('XADD', KEYS[1], '*', 'recording', ARGV[2], 'chunk', ARGV[3])
redis.call('HSET', KEYS[2], ARGV[1], id)
return id
"""

# KEYS: stream, queued hash. ARGV: group, message id, member. Only the hash entry that names this
# very message is removed: a newer message for the same chunk (after a rebuild) stays queued.
_ACK = """
local n = redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
if redis.call('HGET', KEYS[2], ARGV[3]) == ARGV[2] then redis.call('HDEL', KEYS[2], ARGV[3]) end
return n
"""

# KEYS: stream, queued hash, dead stream. ARGV: group, message id, member, recording, chunk,
# deliveries, reason.
_DEAD = """
redis.call('XADD', KEYS[3], '*', 'recording', ARGV[4], 'chunk', ARGV[5], 'deliveries', ARGV[6],
           'reason', ARGV[7], 'message', ARGV[2])
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
if redis.call('HGET', KEYS[2], ARGV[3]) == ARGV[2] then redis.call('HDEL', KEYS[2], ARGV[3]) end
return 1
"""

# KEYS: stream. ARGV: group, consumer, message id, idle ms to set. Keeps (or ends) the lease only
# while the message is still this consumer's: a lease keeper must never take a message back from the
# worker it was handed to after our lease ran out.
_TOUCH = """
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
if #p == 0 or p[1][2] ~= ARGV[2] then return 0 end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3], 'IDLE', ARGV[4], 'JUSTID')
return 1
"""


class QueueUnavailable(Exception):
    """Redis cannot be reached now; back off and try again (nothing is lost: the store knows)."""


@dataclass(frozen=True, slots=True)
class Message:
    """One chunk handed to this consumer; `deliveries` counts this one."""

    message_id: str
    recording_id: int
    index: int
    deliveries: int

    @property
    def member(self) -> str:
        return member(self.recording_id, self.index)


def member(recording_id: int, index: int) -> str:
    return f"{recording_id}:{index}"


class RedisQueue:
    """Chunk jobs on the stream `<prefix>chunks`, dead letters on `<prefix>dead`."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "framewatch:",
        lease_s: float = 600.0,
        max_deliveries: int = 3,
        consumer: str | None = None,
    ):
        import redis

        self.url = url
        self.prefix = prefix
        self.stream = f"{prefix}chunks"
        self.dead = f"{prefix}dead"
        self.queued = f"{prefix}queued"
        self.lease_s = lease_s
        self.max_deliveries = max_deliveries
        # This process in the consumer group (a restarted process is a new consumer).
        self.consumer = consumer or owner_id()
        # Reads block for at most a second, so the socket timeout only catches a dead server.
        self.r = redis.Redis.from_url(
            url,
            decode_responses=True,
            socket_timeout=10,
            socket_connect_timeout=3,
            health_check_interval=15,
        )
        self._enqueue = self.r.register_script(_ENQUEUE)
        self._ack = self.r.register_script(_ACK)
        self._dead = self.r.register_script(_DEAD)
        self._touch = self.r.register_script(_TOUCH)
        self._cursor = "0-0"  # XAUTOCLAIM scan position through the pending entries

    def close(self) -> None:
        self.r.close()

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        import redis

        try:
            return fn(*args, **kwargs)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise QueueUnavailable(f"{type(exc).__name__}: {exc}") from None

    def ensure_group(self) -> bool:
        """Create the stream and its consumer group unless they exist; True when created (Redis
        was new or lost its data: the caller rebuilds the queue from the store)."""
        import redis

        try:
            # From the stream's start ("0"), so jobs added before the group existed are read too.
            self._call(self.r.xgroup_create, self.stream, GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" in str(exc):
                return False
            raise
        log.info("queue_group_created", stream=self.stream)
        return True

    # -- producer -------------------------------------------------------------------------------

    def enqueue(self, recording_id: int, index: int) -> bool:
        """Add one chunk job unless that chunk is already queued; True when added."""
        mid = self._call(
            self._enqueue,
            keys=[self.stream, self.queued],
            args=[member(recording_id, index), recording_id, index],
        )
        return mid is not None

    def enqueue_many(self, chunks: Iterable[tuple[int, int]]) -> int:
        return sum(self.enqueue(r, i) for r, i in chunks)

    # -- consumer -------------------------------------------------------------------------------

    def take(self, block_ms: int = 1000) -> Message | None:
        """The next message for this consumer: first one whose holder stopped keeping its lease for
        `lease_s` (dead worker), else a new one (waiting up to `block_ms`). None when idle.

        Raises QueueUnavailable while Redis is down; a missing group (Redis restarted empty)
        raises redis.ResponseError NOGROUP, which the caller answers with ensure_group + rebuild."""
        stale = self._autoclaim()
        if stale is not None:
            return stale
        got = self._call(
            self.r.xreadgroup, GROUP, self.consumer, {self.stream: ">"}, count=1, block=block_ms
        )
        for _stream, messages in got or []:
            for mid, fields in messages:
                return Message(mid, int(fields["recording"]), int(fields["chunk"]), 1)
        return None

    def _autoclaim(self) -> Message | None:
        lease_ms = int(self.lease_s * 1000)
        res = self._call(
            self.r.xautoclaim,
            self.stream,
            GROUP,
            self.consumer,
            lease_ms,
            start_id=self._cursor,
            count=1,
        )
        nxt, messages = res[0], res[1]
        self._cursor = nxt
        for mid, fields in messages:
            if not fields:  # deleted from the stream but still pending: nothing to do
                continue
            pending = self._call(self.r.xpending_range, self.stream, GROUP, mid, mid, 1)
            deliveries = int(pending[0]["times_delivered"]) if pending else 1
            log.info(
                "queue_job_taken_over",
                message=mid,
                deliveries=deliveries,
                recording_id=int(fields["recording"]),
                chunk=int(fields["chunk"]),
            )
            return Message(mid, int(fields["recording"]), int(fields["chunk"]), deliveries)
        return None

    def touch(self, job: Message) -> bool:
        """Keep the lease: reset the message's idle time so no one takes it; False if it is no longer ours."""
        return bool(
            self._call(
                self._touch, keys=[self.stream], args=[GROUP, self.consumer, job.message_id, 0]
            )
        )

    def retry_soon(self, job: Message) -> bool:
        """Give the job up for a prompt redelivery (a failure a retry may cure): its idle time is
        set to the lease, so the next XAUTOCLAIM by any worker takes it and counts a delivery."""
        idle = int(self.lease_s * 1000) + 1
        return bool(
            self._call(
                self._touch, keys=[self.stream], args=[GROUP, self.consumer, job.message_id, idle]
            )
        )

    def ack(self, job: Message) -> None:
        """The chunk's outcome is in the store: the job is finished."""
        self._call(
            self._ack, keys=[self.stream, self.queued], args=[GROUP, job.message_id, job.member]
        )

    def dead_letter(self, job: Message, reason: str) -> None:
        """Move the job to the dead-letter stream (with why) and finish it here."""
        self._call(
            self._dead,
            keys=[self.stream, self.queued, self.dead],
            args=[
                GROUP,
                job.message_id,
                job.member,
                job.recording_id,
                job.index,
                job.deliveries,
                reason[:2000],
            ],
        )
        log.warning(
            "queue_dead_letter",
            recording_id=job.recording_id,
            chunk=job.index,
            deliveries=job.deliveries,
            reason=reason,
        )

    # -- inspection -----------------------------------------------------------------------------

    def dead_letters(self) -> list[dict[str, str]]:
        return [dict(f, id=mid) for mid, f in self._call(self.r.xrange, self.dead)]

    def pending_count(self) -> int:
        info = self._call(self.r.xpending, self.stream, GROUP)
        return int(info["pending"])

    def length(self) -> int:
        return int(self._call(self.r.xlen, self.stream))


class LeaseKeeper:
    """Keeps a message's lease from its own thread while the chunk runs (the GPU call does not
    return until it is done), every lease/4 seconds. Redis being away is logged and retried; once
    the message is found to be someone else's, `lost` is set and the keeping stops."""

    def __init__(
        self,
        queue: RedisQueue,
        job: Message,
        interval_s: float | None = None,
        lost: threading.Event | None = None,
    ):
        self.queue = queue
        self.job = job
        self.interval_s = interval_s if interval_s is not None else max(0.2, queue.lease_s / 4)
        self.lost = lost if lost is not None else threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="framewatch-lease", daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        import redis

        while not self._stop.wait(self.interval_s):
            try:
                if not self.queue.touch(self.job):
                    log.warning(
                        "queue_lease_lost", recording_id=self.job.recording_id, chunk=self.job.index
                    )
                    self.lost.set()
                    return
            except (QueueUnavailable, redis.RedisError) as exc:
                log.warning("queue_lease_renewal_failed", error=str(exc))


def backoff(attempt: int, base_s: float = 0.5, cap_s: float = 5.0) -> float:
    """Wait before the next try at an unreachable Redis: doubling, capped (a restart takes seconds)."""
    return float(min(cap_s, base_s * 2 ** max(0, attempt - 1)))
