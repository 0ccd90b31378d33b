"""`framewatch run` under stress: 200 files at once, kill -9 and SIGTERM in the middle of a chunk,
a second signal, retries, a hung chunk and sd_notify. The analyzer is the test plugin
tests/fake_analyzer.py, installed through an entry point, so a chunk takes exactly as long as the
test wants and the daemon starts without torch."""

from __future__ import annotations

import os
import shutil
import signal
import time
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest

from daemon.store import Store
from tests.daemon_proc import (
    Daemon,
    Inbox,
    NotifySocket,
    status_json,
    unique_copies,
    wait_until,
)
from tests.media import make_video

pytestmark = pytest.mark.slow


class Setup(Inbox):
    """The inbox with its store open, to look at what the daemon did."""

    def __init__(self, root: Path):
        super().__init__(root)
        self.store = Store(self.url)

    def recording(self, path: Path) -> Any:
        rec = self.store.recordings.find(str(path))
        assert rec is not None, path
        return rec

    def status_of(self, path: Path) -> str | None:
        rec = self.store.recordings.find(str(path))
        return rec.status if rec else None

    def statuses(self, path: Path) -> list[str]:
        return [c.status for c in self.store.chunks.of(self.recording(path).id)]

    def events_per_chunk(self, path: Path) -> list[int]:
        return sorted(e.chunk_index for e in self.store.events.of(self.recording(path).id))


@pytest.fixture
def setup(tmp_path: Path) -> Any:
    s = Setup(tmp_path)
    yield s
    s.store.close()


def started_chunks(d: Daemon, recording_id: int) -> list[int]:
    return [e["chunk"] for e in d.find("chunk_started", recording_id=recording_id)]


def test_200_files_dropped_at_once_are_each_analysed_once(setup: Setup) -> None:
    d = setup.start(setup.config(fake={"refuse_names": ["not-for-us"]}))
    try:
        setup.clip("not-for-us.mp4", seconds=1.0)  # refused by the plugin's accept_recording
        d.wait_for("recording_refused")
        base = make_video(setup.root / "base.mp4", seconds=1.0, fps=2, size=(32, 32)).read_bytes()
        staged = []
        for i, data in enumerate(unique_copies(base, 200)):
            p = setup.outside / f"drop{i:03d}.mp4"
            p.write_bytes(data)
            staged.append(p)
        t0 = time.monotonic()
        for i, p in enumerate(staged):
            if i % 2:
                os.rename(p, setup.inbox / p.name)
            else:
                shutil.copyfile(p, setup.inbox / p.name)
        wait_until(
            lambda: sum(r.status == "done" for r, _, _ in setup.store.recordings.list()) == 200,
            120,
            0.5,
            "200 done",
        )
        took = time.monotonic() - t0
        recs = setup.store.recordings.list()
        assert len(recs) == 200 and {os.path.basename(r.path) for r, _, _ in recs} == {
            p.name for p in staged
        }
        for rec, done, total in recs:
            assert done == total == 1 and started_chunks(d, rec.id) == [0]
        assert len(setup.store.events.of()) == 200  # one event per chunk, none stored twice
        assert len(d.find("recording_queued")) == 200
        print(f"200 files: all analysed {took:.1f} s after the drop")
    finally:
        assert d.stop() == 0


def test_kill_9_mid_chunk_resumes_at_the_unfinished_chunk(setup: Setup) -> None:
    notify = NotifySocket()
    config = setup.config(fake={"sleep_s": 1.0})
    try:
        d1 = setup.start(config, notify.env(watchdog_s=1.0))
        clip = setup.clip("three.mp4")
        d1.wait_for("chunk_started", chunk=1)
        # The daemon logs chunk_started, then sends STATUS=: wait for the datagram (the chunk
        # sleeps 1 s, so this is still mid-chunk). Killing on the log line alone lost it once.
        wait_until(
            lambda: "STATUS=three.mp4 chunk 2/3" in notify.starting("STATUS="),
            10,
            what="STATUS= chunk 2/3",
        )
        d1.signal(signal.SIGKILL)
        d1.wait_exit(10)
        assert setup.statuses(clip) == ["done", "running", "pending"]
        current = status_json(config)["current"]
        assert (current["path"], current["chunk"], current["chunks_done"]) == (str(clip), 1, 1)
        assert "READY=1" in [m for _, m in notify.messages]
        assert notify.times("WATCHDOG=1")

        d2 = setup.start(config)
        rec = setup.recording(clip)
        assert d2.find("chunks_reaped", count=1)
        d2.wait_for("recording_finished", recording_id=rec.id)
        assert started_chunks(d2, rec.id) == [1, 2]  # chunk 0 was done: not run again
        assert setup.statuses(clip) == ["done", "done", "done"]
        assert setup.events_per_chunk(clip) == [0, 1, 2]
        assert d2.stop() == 0
    finally:
        notify.close()


def test_sigterm_mid_chunk_finishes_it_exits_0_and_the_rest_runs_after_restart(
    setup: Setup,
) -> None:
    config = setup.config(fake={"sleep_s": 1.0})
    d1 = setup.start(config)
    clip = setup.clip("three.mp4")
    d1.wait_for("chunk_started", chunk=1)
    t0 = time.monotonic()
    d1.signal(signal.SIGTERM)
    assert d1.wait_exit(30) == 0
    assert time.monotonic() - t0 < 5
    assert setup.statuses(clip) == ["done", "done", "pending"]  # the chunk on the model finished
    rec = setup.recording(clip)
    assert started_chunks(d1, rec.id) == [0, 1]

    later = setup.clip("while-stopped.mp4", seconds=1.0)
    d2 = setup.start(config)
    d2.wait_for("recording_finished", recording_id=rec.id)
    wait_until(lambda: setup.statuses(later) == ["done"], 30, what="the file dropped while stopped")
    assert started_chunks(d2, rec.id) == [2]
    assert setup.events_per_chunk(clip) == [0, 1, 2]
    assert d2.stop() == 0


def test_a_chunk_past_stop_timeout_is_released_and_a_second_signal_exits_at_once(
    setup: Setup,
) -> None:
    slow = setup.config(fake={"sleep_s": 30.0}, stop_timeout_s=0.5)
    d1 = setup.start(slow)
    clip = setup.clip("one.mp4", seconds=1.0)
    d1.wait_for("chunk_started", chunk=0)
    t0 = time.monotonic()
    d1.signal(signal.SIGTERM)
    assert d1.wait_exit(30) == 0
    assert time.monotonic() - t0 < 5  # not the 30 s the chunk would take
    assert d1.find("chunk_released", chunk=0)
    rec = setup.recording(clip)
    row = setup.store.chunks.of(rec.id)[0]
    assert (row.status, row.attempts) == ("pending", 0)  # handed back, attempt not counted

    d2 = setup.start(slow)
    d2.wait_for("chunk_started", chunk=0, recording_id=rec.id)
    t0 = time.monotonic()
    d2.signal(signal.SIGTERM)
    d2.wait_for(
        "daemon_stopping", timeout=5
    )  # the first one was handled: now waiting for the chunk
    d2.signal(signal.SIGTERM)
    assert d2.wait_exit(10) == 4  # EXIT_FORCED
    assert time.monotonic() - t0 < 3
    assert setup.statuses(clip) == ["running"]  # left to the next start's reaper

    d3 = setup.start(setup.config("fast.toml", fake={"sleep_s": 0.1}))
    d3.wait_for("recording_finished", recording_id=rec.id)
    assert started_chunks(d3, rec.id) == [0]
    assert setup.events_per_chunk(clip) == [0]
    assert d3.stop() == 0


def test_failed_chunks_are_retried_with_backoff_until_attempts_run_out(setup: Setup) -> None:
    marker = setup.root / "transient-fault"
    marker.touch()
    config = setup.config(
        fake={"fail_names": ["doomed"], "fail_if_exists": str(marker)},
        max_attempts=2,
        retry_backoff_s=1.5,
    )
    d = setup.start(config)
    try:
        flaky = setup.clip("flaky.mp4", seconds=1.0)
        doomed = setup.clip("doomed.mp4", seconds=1.0)
        wait_until(lambda: setup.status_of(flaky) == "failed", 30, what="flaky failed once")
        marker.unlink()
        wait_until(lambda: setup.status_of(flaky) == "done", 30, what="flaky retried")
        wait_until(lambda: setup.status_of(doomed) == "failed", 30, what="doomed failed")
        wait_until(
            lambda: len(d.find("chunk_started", recording_id=setup.recording(doomed).id)) == 2, 30
        )
        time.sleep(2.0)  # a third try (there must be none) would be due 3 s after the second
        rec = setup.recording(doomed)
        assert rec.status == "failed" and "fake analyzer refuses doomed.mp4" in (rec.reason or "")
        assert len(d.find("chunk_started", recording_id=rec.id)) == 2
        assert setup.store.chunks.of(rec.id)[0].attempts == 2
    finally:
        assert d.stop() == 0


def test_a_hung_chunk_stops_feeding_the_watchdog(setup: Setup) -> None:
    notify = NotifySocket()
    config = setup.config(fake={"sleep_s": 2.5}, chunk_timeout_s=0.8)
    try:
        d = setup.start(config, notify.env(watchdog_s=0.4))  # pinged every 0.2 s while healthy
        clip = setup.clip("hang.mp4", seconds=1.0)
        d.wait_for("chunk_hung", timeout=30)
        d.wait_for("recording_finished", timeout=30)
        pings = notify.times("WATCHDOG=1")
        gaps = [b - a for a, b in pairwise(pings)]
        # Fed while idle and for the chunk's first 0.8 s, then silent until the chunk ended.
        assert max(gaps) > 1.3 and sorted(gaps)[len(gaps) // 2] < 0.5
        assert setup.statuses(clip) == ["done"]
        assert d.stop() == 0
    finally:
        notify.close()
