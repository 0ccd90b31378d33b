"""Where the next chunk comes from: one interface (source.py), two implementations, chosen here.

- local.py: the store is the queue (one box, no server);
- redis.py: a Redis stream shared by several boxes (streams.py speaks Redis Streams).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from daemon.work.source import Hold, Job, Upkeep, WorkSource

if TYPE_CHECKING:
    import threading

    from daemon.config import Config
    from daemon.store import Store
    from daemon.worker import Worker

__all__ = ["Hold", "Job", "Upkeep", "WorkSource", "open_source"]


def open_source(
    config: Config, store: Store, worker: Worker, stop: threading.Event, *, produce: bool = True
) -> WorkSource:
    """The work source queue.backend names. `produce` is False for `framewatch worker`, which
    only consumes from a shared queue (a local queue is always its own producer)."""
    if config.queue.backend == "redis":
        from daemon.work.redis import RedisSource

        return RedisSource(config, store, worker, stop, produce=produce)
    from daemon.work.local import LocalSource

    return LocalSource(config, store, worker)
