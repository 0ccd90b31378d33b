"""The work-source interface: where the next chunk comes from, and what its outcome means there.

A source hands out `Job`s; the loop (daemon/scheduler.py) runs each through `Worker.run` inside
`hold(job)` (which keeps the job's lease where the queue has one) and hands the outcome back to
`finish`, or an unexpected error to `failed`. Each source owns its retry policy: the local store
queue retries failed chunks after a backoff, the Redis stream redelivers them and dead-letters
what keeps failing. Periodic upkeep a source needs comes from `maintenance()`.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from daemon.worker import ChunkDone


@dataclass(frozen=True, slots=True)
class Job:
    """One chunk to run: `index` None means "the recording's next pending chunk" (the local
    queue); a queue that hands out chunks names it and keeps its own handle in `token`."""

    recording_id: int
    index: int | None = None
    deliveries: int = 1
    token: Any = None


class Hold:
    """A job held while it runs; `lost` is set when the queue gave it to someone else meanwhile."""

    def __init__(self) -> None:
        self.lost = threading.Event()


@dataclass(frozen=True, slots=True)
class Upkeep:
    """A periodic job a source needs (the scheduler runs it every `interval_s`)."""

    name: str
    run: Callable[[], object]
    interval_s: float


class WorkSource(ABC):
    """Where the next chunk comes from. One per process, used from the worker loop's thread
    (`wake` and the upkeep jobs from any thread)."""

    name: str

    def start(self) -> None:
        """Repair what a crash left behind before the first job (default: nothing)."""

    @abstractmethod
    def take(self, should_stop: Callable[[], bool]) -> Job | None:
        """The next job; None when there is none now."""

    def idle(self) -> None:
        """Nothing to do: wait for `wake` or a while, whichever comes first (default: return at
        once, for a source whose `take` already waits)."""

    @contextmanager
    def hold(self, job: Job) -> Iterator[Hold]:
        """Keep `job` while it runs (default: nothing to keep)."""
        yield Hold()

    @abstractmethod
    def finish(self, job: Job, done: ChunkDone | None, hold: Hold) -> None:
        """Record what became of the job's chunk (None: nothing was there to do)."""

    @abstractmethod
    def failed(self, job: Job, error: str) -> None:
        """An unexpected error while running the job (its chunk was already released)."""

    def wake(self) -> None:
        """New work may be there (a file was queued, a retry came due): look now."""

    def maintenance(self) -> list[Upkeep]:
        """Periodic jobs this source needs (default: none)."""
        return []

    def close(self) -> None:
        """Release what the source holds (connections)."""
