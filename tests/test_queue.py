"""daemon/queue.py against a real Redis (its own key prefix per test): dedupe, leases kept by
heartbeat, takeover after the lease, delivery counts, dead letters, and an empty restart."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis

from daemon.work.streams import LeaseKeeper, RedisQueue
from tests.services import REDIS_URL, drop_prefix, redis_available, redis_prefix


@pytest.fixture(autouse=True)
def _needs_redis() -> None:
    if not redis_available():
        pytest.fail("Redis is not running on 127.0.0.1:6379 (.ci/run starts it)")


@pytest.fixture
def prefix() -> Iterator[str]:
    p = redis_prefix()
    yield p
    drop_prefix(REDIS_URL, p)


def q(prefix: str, name: str, lease_s: float = 60.0, max_deliveries: int = 3) -> RedisQueue:
    queue = RedisQueue(
        REDIS_URL, prefix=prefix, lease_s=lease_s, max_deliveries=max_deliveries, consumer=name
    )
    queue.ensure_group()
    return queue


def test_a_chunk_is_queued_once_and_acked_away(prefix: str) -> None:
    a = q(prefix, "a")
    assert a.ensure_group() is False  # exists already
    assert a.enqueue(1, 0) and a.enqueue(1, 1)
    assert not a.enqueue(1, 0)  # a second watcher, a rebuild: same chunk, no second job
    assert a.length() == 2
    job = a.take(10)
    assert job is not None and (job.recording_id, job.index, job.deliveries) == (1, 0, 1)
    a.ack(job)
    assert a.length() == 1 and a.pending_count() == 0
    # Finished, so it may be queued again (a person asked for a re-run).
    assert a.enqueue(1, 0)


def test_dead_consumer_loses_its_job_after_the_lease_live_one_keeps_it(prefix: str) -> None:
    a, b = q(prefix, "a", lease_s=0.4), q(prefix, "b", lease_s=0.4)
    a.enqueue(7, 0)
    a.enqueue(7, 1)
    live = a.take(10)
    dead = b.take(10)
    assert live is not None and dead is not None
    c = q(prefix, "c", lease_s=0.4)
    with LeaseKeeper(a, live, interval_s=0.1) as hb:
        time.sleep(1.2)  # three leases
        got = c.take(10)
        assert got is not None and got.message_id == dead.message_id and got.deliveries == 2
        assert c.take(10) is None  # a's job is never taken while a beats
        assert not hb.lost.is_set()
    # b comes back too late: the job is c's now, and b's heartbeat says so.
    assert b.touch(dead) is False
    assert c.touch(got) is True


def test_retry_soon_counts_deliveries(prefix: str) -> None:
    a = q(prefix, "a", lease_s=30, max_deliveries=2)
    a.enqueue(3, 0)
    job = a.take(10)
    assert job is not None
    for n in (2, 3):
        assert a.retry_soon(job)
        job = a.take(10)
        assert job is not None and job.deliveries == n
    a.dead_letter(job, "boom")
    assert a.pending_count() == 0 and a.length() == 0
    (dl,) = a.dead_letters()
    assert (dl["recording"], dl["chunk"], dl["deliveries"], dl["reason"]) == ("3", "0", "3", "boom")


def test_lost_data_recreates_the_group(prefix: str) -> None:
    a = q(prefix, "a")
    a.enqueue(1, 0)
    drop_prefix(REDIS_URL, prefix)  # what a restart without persistence does
    with pytest.raises(redis.ResponseError, match="NOGROUP"):
        a.take(10)
    assert a.ensure_group() is True
    assert a.enqueue(1, 0)  # the dedupe hash went with the data: the rebuild re-adds it
