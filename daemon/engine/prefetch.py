"""Prefetch: prepare (decode and sample) the next chunk on a thread while the current one is on
the model, so a recording takes about max(decode, inference) instead of their sum."""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Generic, TypeVar

import structlog

if TYPE_CHECKING:
    from collections.abc import Callable, Hashable

log = structlog.get_logger(__name__)

T = TypeVar("T")


class Prefetcher(Generic[T]):
    """At most `depth` preparations ahead, on one thread, keyed by what they prepare.

    `submit(key, fn)` starts `fn()` unless `key` is already there or `depth` are pending;
    `take(key)` hands back its result (waiting for it, re-raising what it raised) or None when
    nothing was prepared for that key. A prepared result is used at most once; results for other
    keys are dropped at `take`, so memory holds at most `depth` chunks beside the current one.
    Decoding releases the GIL inside FFmpeg, so the thread overlaps inference for real.
    """

    def __init__(self, depth: int = 1) -> None:
        if depth < 1:
            raise ValueError("depth must be at least 1")
        self._depth = depth
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefetch")
        self._pending: dict[Hashable, Future[T]] = {}
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def submit(self, key: Hashable, fn: Callable[[], T]) -> bool:
        """Start preparing `key`; False when it is already pending or the queue is full."""
        with self._lock:
            if key in self._pending or len(self._pending) >= self._depth:
                return False
            self._pending[key] = self._pool.submit(fn)
            return True

    def take(self, key: Hashable) -> T | None:
        """The result prepared for `key`, or None; every other pending result is dropped."""
        with self._lock:
            future = self._pending.pop(key, None)
            others = list(self._pending.values())
            self._pending.clear()
        for other in others:
            # A chunk claimed elsewhere (another box, a retry) or a changed window: not needed.
            other.cancel()
        if future is None:
            self.misses += 1
            return None
        self.hits += 1
        return future.result()

    @property
    def pending(self) -> int:
        """Preparations submitted and not yet taken (each holds a chunk's frames once done)."""
        with self._lock:
            return len(self._pending)

    def close(self) -> None:
        """Drop what is pending and join the thread."""
        with self._lock:
            pending = list(self._pending.values())
            self._pending.clear()
        for future in pending:
            future.cancel()
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> Prefetcher[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
