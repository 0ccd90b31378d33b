"""The outbox and the dispatcher: one plugin at a time, retries with backoff, dead rows, restarts,
slow plugins, replay, and `status --json`. The store is driven directly (no model)."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import select

from daemon.cli import main
from daemon.hookspecs import RetryLater, hookimpl
from daemon.models import ChunkInfo, EventInfo, RecordingInfo
from daemon.pluginhost.dispatch import Dispatcher
from daemon.store import Store
from daemon.store.tables import Delivery
from tests.outbox import Clock, analysed, ev, make_config, manager


class Good:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    @hookimpl
    def events_found(
        self, recording: RecordingInfo, chunk: ChunkInfo, events: list[EventInfo], delivery_id: str
    ) -> None:
        self.calls.append(
            ("events_found", chunk.index, tuple(e.label for e in events), delivery_id)
        )

    @hookimpl
    def recording_finished(self, recording: RecordingInfo, events: list[EventInfo]) -> None:
        self.calls.append(("recording_finished", recording.status, len(events)))

    @hookimpl
    def recording_failed(self, recording: RecordingInfo, error: str) -> None:
        self.calls.append(("recording_failed", error))


class Flaky:
    """Raises on its first `failures` calls, then works."""

    def __init__(self, failures: int) -> None:
        self.failures, self.calls = failures, 0

    @hookimpl
    def recording_finished(self, recording: RecordingInfo) -> None:
        self.calls += 1
        if self.calls <= self.failures:
            raise ConnectionError(f"down ({self.calls})")


def rows(store: Store) -> list[Delivery]:
    with store.db.session() as s:
        return list(s.exec(select(Delivery).order_by(Delivery.id)).all())  # type: ignore[arg-type]


@pytest.fixture
def clock() -> Clock:
    return Clock()


def test_hook_events_found_per_chunk_with_that_chunks_events(tmp_path: Path, clock: Clock) -> None:
    cfg = make_config(tmp_path)
    good = Good()
    pm = manager(cfg, (good, "good"))
    store = Store(cfg.storage_url())
    analysed(
        store,
        pm,
        tmp_path / "a.mp4",
        [[ev(1, 2, "a"), ev(3, 4, "b")], [], [ev(130, 131, "c")]],
        finish=None,
    )
    assert Dispatcher(store, pm, cfg, clock=clock).deliver_due() == 3
    ids = [r.id for r in rows(store)]
    assert good.calls == [
        ("events_found", 0, ("a", "b"), str(ids[0])),
        ("events_found", 1, (), str(ids[1])),  # a chunk without events is announced too
        ("events_found", 2, ("c",), str(ids[2])),
    ]


def test_hook_recording_finished_once_with_all_events(tmp_path: Path, clock: Clock) -> None:
    cfg = make_config(tmp_path)
    good = Good()
    pm = manager(cfg, (good, "good"))
    store = Store(cfg.storage_url())
    analysed(store, pm, tmp_path / "a.mp4", [[ev(1, 2)], [ev(70, 80)]])
    d = Dispatcher(store, pm, cfg, clock=clock)
    assert d.deliver_all() == 3
    assert good.calls[-1] == ("recording_finished", "done", 2)
    assert d.deliver_all() == 0  # nothing twice


def test_hook_recording_failed_gets_the_reason(tmp_path: Path, clock: Clock) -> None:
    cfg = make_config(tmp_path)
    good = Good()
    pm = manager(cfg, (good, "good"))
    store = Store(cfg.storage_url())
    analysed(store, pm, tmp_path / "a.mp4", [], finish="failed", reason="no video stream")
    Dispatcher(store, pm, cfg, clock=clock).deliver_due()
    assert good.calls == [("recording_failed", "no video stream")]


def test_raising_plugin_leaves_others_delivered_and_is_retried(
    tmp_path: Path, clock: Clock
) -> None:
    cfg = make_config(tmp_path)
    good, flaky = Good(), Flaky(failures=2)
    # Registered after `good`, so pluggy would call it first and abort the whole call.
    pm = manager(cfg, (good, "good"), (flaky, "flaky"))
    store = Store(cfg.storage_url())
    analysed(store, pm, tmp_path / "a.mp4", [[ev(1, 2)]])
    d = Dispatcher(store, pm, cfg, clock=clock, rng=lambda: 1.0)
    assert d.deliver_due() == 2  # good: events_found + recording_finished
    assert good.calls[-1][0] == "recording_finished" and flaky.calls == 1
    (row,) = [r for r in rows(store) if r.plugin == "flaky"]
    assert (
        row.attempts == 1
        and row.last_error == "ConnectionError: down (1)"
        and row.delivered_at is None
    )
    assert row.next_attempt_at == pytest.approx(
        clock() + 30.0, abs=1
    )  # base delay, jitter factor 1
    assert d.deliver_due() == 0 and flaky.calls == 1  # not due yet
    clock.advance(31)
    assert d.deliver_due() == 0 and flaky.calls == 2
    (row,) = [r for r in rows(store) if r.plugin == "flaky"]
    assert row.next_attempt_at == pytest.approx(clock() + 60.0, abs=1)  # doubled
    clock.advance(61)
    assert d.deliver_due() == 1 and flaky.calls == 3
    assert store.outbox.counts()["delivered"] == 3
    assert len(good.calls) == 2  # the good plugin was never called again


def test_backoff_has_jitter_and_a_cap(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    d = Dispatcher(Store(cfg.storage_url()), manager(cfg), cfg, rng=lambda: 0.0)
    assert d._backoff(1) == 15.0 and d._backoff(2) == 30.0
    assert d._backoff(40) == 1800.0  # cap 3600 s, times the lowest jitter factor


def test_dead_after_max_age_with_last_error(tmp_path: Path, clock: Clock) -> None:
    cfg = make_config(tmp_path)
    pm = manager(cfg, (Flaky(failures=10**6), "flaky"))
    store = Store(cfg.storage_url())
    analysed(store, pm, tmp_path / "a.mp4", [[]])
    d = Dispatcher(store, pm, cfg, clock=clock, max_age_s=3600)
    for _ in range(30):
        d.deliver_due()
        clock.advance(3600)
    (row,) = rows(store)
    assert row.dead and row.delivered_at is None and row.last_error and "down" in row.last_error
    assert 2 <= row.attempts <= 8
    assert store.outbox.counts()["dead"] == 1


def test_retry_later_is_respected(tmp_path: Path, clock: Clock) -> None:
    class Throttled:
        calls = 0

        @hookimpl
        def events_found(self) -> None:
            Throttled.calls += 1
            raise RetryLater("429", retry_after=500)

    cfg = make_config(tmp_path)
    pm = manager(cfg, (Throttled(), "throttled"))
    store = Store(cfg.storage_url())
    analysed(store, pm, tmp_path / "a.mp4", [[], [], []], finish=None)
    d = Dispatcher(store, pm, cfg, clock=clock)
    d.deliver_due()
    assert Throttled.calls == 1  # the rest of the lane waits for the same Retry-After
    assert [r.next_attempt_at for r in rows(store)] == pytest.approx([clock() + 500] * 3, abs=1)
    assert [r.attempts for r in rows(store)] == [1, 0, 0]
    clock.advance(499)
    d.deliver_due()
    assert Throttled.calls == 1


def test_restart_between_commit_and_delivery_loses_nothing(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    first = manager(cfg, (Good(), "good"))
    store = Store(cfg.storage_url())
    analysed(store, first, tmp_path / "a.mp4", [[ev(1, 2)], [ev(61, 62)]])
    # A dispatcher claimed rows and died before calling the plugin: its lease runs out.
    store.outbox.claim(["good"], 1, lease_s=60)
    store.close()  # "restart"

    good = Good()
    again = Store(cfg.storage_url())
    pm = manager(cfg, (good, "good"))
    clock = Clock()
    d = Dispatcher(again, pm, cfg, clock=clock)
    assert d.deliver_due() == 2  # the claimed one waits for its lease
    clock.advance(61)
    assert d.deliver_due() == 1
    assert sorted(c[0] for c in good.calls) == [
        "events_found",
        "events_found",
        "recording_finished",
    ]
    assert again.outbox.counts() | {"plugins": None} == {
        "pending": 0,
        "failed": 0,
        "dead": 0,
        "delivered": 3,
        "plugins": None,
    }


def test_a_slow_plugin_blocks_no_other(tmp_path: Path) -> None:
    gate = threading.Event()

    class Slow:
        calls = 0

        @hookimpl
        def recording_finished(self) -> None:
            Slow.calls += 1
            gate.wait(10)

    cfg = make_config(tmp_path)
    good = Good()
    pm = manager(cfg, (Slow(), "slow"), (good, "good"))
    store = Store(cfg.storage_url())
    analysed(store, pm, tmp_path / "a.mp4", [[ev(1, 2)]])
    d = Dispatcher(store, pm, cfg, round_timeout_s=0.2)
    try:
        assert d.deliver_due() == 2  # good's two rows, while slow is still busy
        analysed(store, pm, tmp_path / "b.mp4", [[]])
        assert d.deliver_due() == 2  # slow is skipped while busy, good goes on
        assert Slow.calls == 1
    finally:
        gate.set()
    d._busy["slow"].join(5)
    assert d.deliver_due() == 1 and Slow.calls == 2


def test_replay_and_backfill(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    conf = tmp_path / "config.toml"
    conf.write_text(f'[storage]\nurl = "sqlite:///{tmp_path / "fw.db"}"\n')
    from daemon.config import load_config

    cfg = load_config(conf)
    store = Store(cfg.storage_url())
    for name in ("a", "b"):
        (tmp_path / f"{name}.mp4").write_bytes(b"")
        analysed(store, manager(cfg), tmp_path / f"{name}.mp4", [[ev(1, 2, "label")]])
    assert rows(store) == []  # no output plugin was enabled

    # Enable markdown_export later and back-fill it over the old recordings.
    conf.write_text(conf.read_text() + "[plugins.markdown_export]\n")
    assert main(["replay", "--all", "--plugin", "markdown_export", "--config", str(conf)]) == 0
    assert "queued 2 notifications, delivered 2" in capsys.readouterr().err
    assert (tmp_path / "a.framewatch.md").exists() and (tmp_path / "b.framewatch.md").exists()

    (tmp_path / "a.framewatch.md").unlink()
    assert main(["replay", str(tmp_path / "a.mp4"), "--config", str(conf)]) == 0
    assert (tmp_path / "a.framewatch.md").exists() and len(rows(store)) == 3
    assert main(["replay", "--all", "--config", str(conf)]) == 2  # --all needs --plugin
    assert main(["replay", "--all", "--plugin", "nope", "--config", str(conf)]) == 2


def test_status_json_shows_undelivered_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conf = tmp_path / "config.toml"
    db = tmp_path / "fw.db"
    conf.write_text(
        f'[storage]\nurl = "sqlite:///{db}"\n[plugins.markdown_export]\ndir = "reports"\n'
    )
    from daemon.config import load_config

    cfg = load_config(conf)
    store = Store(cfg.storage_url())
    analysed(store, manager(cfg), tmp_path / "a.mp4", [[ev(1, 2)]])
    capsys.readouterr()  # what the setup logged (structlog prints until the CLI configures it)
    assert main(["status", "--json", "--config", str(conf)]) == 0
    d = json.loads(capsys.readouterr().out)["deliveries"]
    assert (d["pending"], d["failed"], d["dead"], d["delivered"]) == (1, 0, 0, 0)
    assert d["plugins"]["markdown_export"]["pending"] == 1
    assert main(["status", "--config", str(conf)]) == 0
    assert "deliveries: 1 pending, 0 failed (retrying), 0 dead" in capsys.readouterr().out
