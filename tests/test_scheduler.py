"""ChunkLoop.healthy, which decides whether the systemd watchdog is fed: preparing a recording
(inside the work source's take: probe and plan) counts like a chunk, so one stuck past
daemon.chunk_timeout_s stops the pings (issue 14: a stuck intake or worker must show)."""

from __future__ import annotations

import threading
import time
from typing import Any

from daemon.config import parse_config
from daemon.scheduler import ChunkLoop


class BlockingSource:
    """A work source whose take blocks until released: it stands in for a probe on a hung
    network mount, which a test cannot make (a FIFO no longer blocks anything)."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.takes = 0

    def start(self) -> None: ...

    def take(self, _should_stop: Any) -> None:
        self.takes += 1
        if self.takes == 1:
            self.entered.set()
            self.release.wait(30)

    def idle(self) -> None:
        time.sleep(0.01)

    def wake(self) -> None: ...

    def close(self) -> None: ...


class Worker:
    def verify_due(self, should_stop: Any = None) -> int:
        return 0


def test_a_take_stuck_past_chunk_timeout_makes_the_loop_unhealthy() -> None:
    source, stop = BlockingSource(), threading.Event()
    config = parse_config({"daemon": {"chunk_timeout_s": 60}})
    loop = ChunkLoop(Worker(), source, config, stop)  # type: ignore[arg-type]
    loop.start()
    try:
        assert source.entered.wait(30)
        now = time.monotonic()
        assert loop.healthy(now) and loop.taking_since is not None
        assert not loop.healthy(now + 61)  # as the watchdog would see it a minute later
        source.release.set()
        deadline = time.monotonic() + 30  # a guard, not a measurement
        while loop.taking_since is not None or source.takes < 2:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert loop.alive()  # the loop went on once the take returned
    finally:
        stop.set()
        source.release.set()
        loop.join(5)
