"""The webhook plugin against a real HTTP receiver on 127.0.0.1: Standard Webhooks signatures
(checked with the `standardwebhooks` library), retries while the receiver is down, 410, 429,
redirects, timeouts, filters and secret sources."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook

from daemon.config import ConfigError
from daemon.pluginhost.dispatch import Dispatcher
from daemon.store import Store
from plugins.webhook import WebhookSettings, signing_key
from tests.outbox import HOSTILE, Clock, analysed, ev, make_config, manager
from tests.services import Receiver, free_port

SECRET = "whsec_" + base64.b64encode(b"framewatch-test-secret-32-bytes!").decode()


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def setup(tmp_path: Path, url: str, **settings: Any) -> tuple[Any, Any, Store]:
    cfg = make_config(tmp_path, {"webhook": {"url": url, "secret": SECRET, **settings}})
    pm = manager(cfg)
    return cfg, pm, Store(cfg.storage_url())


def verified(req: dict[str, Any]) -> Any:
    return Webhook(SECRET).verify(req["body"], req["headers"])


def test_down_for_the_whole_analysis_then_up_delivers_each_id_once(tmp_path: Path) -> None:
    port = free_port()
    cfg, pm, store = setup(tmp_path, f"http://127.0.0.1:{port}/hook", timeout_s=2)
    clock = Clock()
    d = Dispatcher(store, pm, cfg, clock=clock)
    # The scheduler runs the dispatcher while the recording is analysed; nobody is listening.
    for i in range(3):
        analysed(
            store,
            pm,
            tmp_path / f"v{i}.mp4",
            [[ev(1, 2, "person", HOSTILE[0])], [ev(61, 62, "car")]],
        )
        assert d.deliver_due() == 0
    counts = store.outbox.counts()
    assert counts["failed"] == 9 and counts["delivered"] == 0  # 3 x (2 chunks + finished)

    receiver = Receiver(port)
    try:
        for _ in range(6):  # several rounds of retries: none may send a message twice
            clock.advance(3600)
            d.deliver_all()
        ids = [r["headers"]["webhook-id"] for r in receiver.requests]
        assert len(ids) == len(set(ids)) == 9
        with store.db.session() as s:
            from sqlmodel import select

            from daemon.store.tables import Delivery

            expected = {f"msg_{r.id}_{r.hook}" for r in s.exec(select(Delivery)).all()}
        assert set(ids) == expected
        kinds = sorted(verified(r)["type"] for r in receiver.requests)
        assert kinds == ["events.found"] * 6 + ["recording.finished"] * 3
        found = next(
            verified(r) for r in receiver.requests if verified(r)["type"] == "events.found"
        )
        assert found["data"]["events"][0]["description"] in (HOSTILE[0], "")
        assert store.outbox.counts()["delivered"] == 9
    finally:
        receiver.close()


def test_same_webhook_id_on_every_retry_and_fresh_signature(tmp_path: Path) -> None:
    answers = iter([500, 502, 200])
    receiver = Receiver(respond=lambda req: (next(answers), {}))
    try:
        cfg, pm, store = setup(tmp_path, receiver.url)
        clock = Clock()
        d = Dispatcher(store, pm, cfg, clock=clock)
        analysed(store, pm, tmp_path / "a.mp4", [[ev(1, 2)]], finish=None)
        for _ in range(3):
            d.deliver_due()
            clock.advance(3600)
        assert len(receiver.requests) == 3
        assert len({r["headers"]["webhook-id"] for r in receiver.requests}) == 1
        for r in receiver.requests:
            verified(r)  # each attempt signed over its own timestamp
        assert store.outbox.counts()["delivered"] == 1
    finally:
        receiver.close()


def test_410_disables_the_endpoint_until_replay(tmp_path: Path) -> None:
    receiver = Receiver(respond=lambda req: (410, {}))
    try:
        cfg, pm, store = setup(tmp_path, receiver.url)
        clock = Clock()
        d = Dispatcher(store, pm, cfg, clock=clock)
        analysed(store, pm, tmp_path / "a.mp4", [[ev(1, 2)], [ev(61, 62)]])
        d.deliver_due()
        assert len(receiver.requests) == 1
        assert store.outbox.counts()["dead"] == 3
        assert store.outbox.blocked("webhook") is not None
        # New work for a gone endpoint is not attempted, also after a restart.
        analysed(store, pm, tmp_path / "b.mp4", [[ev(1, 2)]])
        Dispatcher(Store(cfg.storage_url()), pm, cfg, clock=clock).deliver_all()
        assert len(receiver.requests) == 1 and store.outbox.counts()["dead"] == 5
        # `framewatch replay --plugin webhook` lifts the block.
        receiver.respond = lambda req: (200, {})
        assert d.replay(None, "webhook") == 5
        d.deliver_all()
        assert len(receiver.requests) == 6 and store.outbox.blocked("webhook") is None
    finally:
        receiver.close()


def test_changed_settings_lift_a_410_block(tmp_path: Path, receiver: Receiver) -> None:
    cfg, pm, store = setup(tmp_path, receiver.url + "/old")
    store.outbox.block("webhook", "some-other-settings", "destination gone: 410")
    analysed(store, pm, tmp_path / "a.mp4", [[ev(1, 2)]], finish=None)
    assert Dispatcher(store, pm, cfg).deliver_due() == 1


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_is_honoured(tmp_path: Path, status: int) -> None:
    receiver = Receiver(respond=lambda req: (status, {"Retry-After": "120"}))
    try:
        cfg, pm, store = setup(tmp_path, receiver.url)
        clock = Clock()
        d = Dispatcher(store, pm, cfg, clock=clock)
        analysed(store, pm, tmp_path / "a.mp4", [[ev(1, 2)], [ev(61, 62)]])
        d.deliver_due()
        assert len(receiver.requests) == 1  # the others wait too
        clock.advance(119)
        d.deliver_due()
        assert len(receiver.requests) == 1
        receiver.respond = lambda req: (200, {})
        clock.advance(2)
        d.deliver_all()
        assert len(receiver.requests) == 4
    finally:
        receiver.close()


def test_redirects_are_not_followed(tmp_path: Path) -> None:
    receiver = Receiver(
        respond=lambda req: (
            (307, {"Location": "/elsewhere"}) if req["path"] == "/hook" else (200, {})
        )
    )
    try:
        cfg, pm, store = setup(tmp_path, receiver.url)
        analysed(store, pm, tmp_path / "a.mp4", [[ev(1, 2)]], finish=None)
        assert Dispatcher(store, pm, cfg).deliver_due() == 0
        assert [r["path"] for r in receiver.requests] == ["/hook"]
        from sqlmodel import select

        from daemon.store.tables import Delivery

        with store.db.session() as s:
            row = s.exec(select(Delivery)).one()
        assert (
            row.last_error is not None
            and "307" in row.last_error
            and "not followed" in row.last_error
        )
    finally:
        receiver.close()


def test_slow_receiver_times_out(tmp_path: Path) -> None:
    receiver = Receiver(respond=lambda req: (time.sleep(1.5), (200, {}))[1])
    try:
        cfg, pm, store = setup(tmp_path, receiver.url, timeout_s=0.3)
        analysed(store, pm, tmp_path / "a.mp4", [[ev(1, 2)]], finish=None)
        started = time.monotonic()
        assert Dispatcher(store, pm, cfg).deliver_due() == 0
        assert time.monotonic() - started < 1.4
        assert store.outbox.counts()["failed"] == 1
    finally:
        receiver.close()


def test_label_and_profile_filters(tmp_path: Path, receiver: Receiver) -> None:
    cfg, pm, store = setup(tmp_path, receiver.url, labels=["Person"], profiles=["surveillance"])
    d = Dispatcher(store, pm, cfg)
    analysed(store, pm, tmp_path / "lecture.mp4", [[ev(1, 2, "person")]], profile="lecture")
    analysed(
        store,
        pm,
        tmp_path / "cam.mp4",
        [[ev(1, 2, "person"), ev(3, 4, "cat")], [ev(61, 62, "cat")]],
        profile="surveillance",
    )
    d.deliver_all()
    bodies = [verified(r) for r in receiver.requests]
    assert [b["type"] for b in bodies] == ["events.found", "recording.finished"]
    assert [e["label"] for e in bodies[0]["data"]["events"]] == ["person"]
    assert bodies[0]["data"]["recording"]["path"].endswith("cam.mp4")
    assert store.outbox.counts()["delivered"] == 5  # filtered ones count as delivered


def test_secret_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = base64.b64decode(SECRET.removeprefix("whsec_"))
    (tmp_path / "secret").write_text(SECRET + "\n")
    assert signing_key(WebhookSettings(url="http://x/", secret_file=tmp_path / "secret")) == key  # type: ignore[arg-type]
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "webhook-secret").write_text(SECRET)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    assert signing_key(WebhookSettings(url="http://x/")) == key  # type: ignore[arg-type]
    with pytest.raises(ConfigError) as ei:
        manager(
            make_config(tmp_path, {"webhook": {"url": "http://x/", "secret": "whsec_!!notbase64"}})
        )
    assert [k for k, _, _ in ei.value.errors] == ["plugins.webhook.secret"]
    with pytest.raises(ConfigError):
        manager(
            make_config(
                tmp_path, {"webhook": {"url": "http://x/", "secret": SECRET, "secret_file": "s"}}
            )
        )


def test_unsigned_without_any_secret(tmp_path: Path, receiver: Receiver) -> None:
    cfg = make_config(tmp_path, {"webhook": {"url": receiver.url}})
    pm = manager(cfg)
    store = Store(cfg.storage_url())
    analysed(store, pm, tmp_path / "a.mp4", [[ev(1, 2)]], finish=None)
    assert Dispatcher(store, pm, cfg).deliver_due() == 1
    (req,) = receiver.requests
    assert "webhook-signature" not in req["headers"] and req["headers"]["webhook-id"].startswith(
        "msg_"
    )
    assert json.loads(req["body"])["type"] == "events.found"


def test_hook_alert_fired_once_per_alert_with_the_receiver_down_during_analysis(
    tmp_path: Path,
) -> None:
    from tests.alertdata import StandIn, run

    port = free_port()
    clock = Clock()
    plugins = {
        "webhook": {"url": f"http://127.0.0.1:{port}/hook", "secret": SECRET, "timeout_s": 2}
    }
    sa = StandIn({"fence": [(1.5, 2.5), (6.5, 7.0)], "fall": [(6.2, 7.0)]}, {"fall": False})
    rules = [
        {"name": "fence", "when": "a person climbs the fence", "cooldown_s": 0},
        {"name": "fall", "when": "someone falls"},
        {"name": "quiet", "when": "nothing", "plugins": []},  # delivered by no plugin
    ]
    store, plugin, rec, cfg = run(tmp_path, sa, rules, plugins=plugins, deliver=False)
    d = Dispatcher(store, plugin.pm, cfg, clock=clock)
    d.deliver_due()  # nobody listening while the recording is analysed
    assert store.outbox.counts()["plugins"]["webhook"]["delivered"] == 0
    fired = [a for a in store.alerts.of(rec.id) if a.fired]
    assert [(a.rule, a.state) for a in fired] == [("fence", "confirmed"), ("fence", "confirmed")]

    receiver = Receiver(port)
    try:
        for _ in range(4):  # several rounds of retries: none may send an alert twice
            clock.advance(3600)
            d.deliver_all()
        alerts = [verified(r) for r in receiver.requests if verified(r)["type"] == "alert.fired"]
        assert sorted(a["data"]["alert"]["id"] for a in alerts) == sorted(a.id for a in fired)
        ids = [r["headers"]["webhook-id"] for r in receiver.requests]
        assert len(ids) == len(set(ids))
        body = alerts[0]["data"]["alert"]
        assert {
            "id",
            "rule",
            "recording",
            "start_s",
            "end_s",
            "outcome",
            "reason",
            "thumbnail",
        } <= set(body)
        assert body["recording"] == rec.path and body["outcome"] == "confirmed"
        assert body["thumbnail"]["data_url"].startswith("data:image/jpeg;base64,")
        # `framewatch replay --alerts` re-delivers the alerts that fired, as new messages.
        config = tmp_path / "replay.toml"
        config.write_text(
            f'[storage]\nurl = "sqlite:///{tmp_path / "fw.db"}"\n'
            f'[plugins.webhook]\nurl = "http://127.0.0.1:{port}/hook"\nsecret = "{SECRET}"\n'
        )
        from daemon.cli import main

        assert main(["replay", "--alerts", rec.path, "--plugin", "webhook", "-c", str(config)]) == 0
        again = [verified(r) for r in receiver.requests if verified(r)["type"] == "alert.fired"]
        assert len(again) == 4
    finally:
        receiver.close()
