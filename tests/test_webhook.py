"""The webhook plugin against a real HTTP receiver on 127.0.0.1: Standard Webhooks signatures
(checked with the `standardwebhooks` library), retries while the receiver is down, 410, 429,
redirects, timeouts, filters and secret sources."""

from __future__ import annotations

import base64
import itertools
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook
from structlog.testing import capture_logs

from daemon.config import ConfigError
from daemon.pluginhost.dispatch import Dispatcher
from daemon.store import Store
from plugins.webhook import WebhookSettings, signing_key
from tests.outbox import HOSTILE, Clock, analysed, ev, make_config, manager
from tests.services import LoopbackServer, QuietHandler, Receiver, free_port

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


# -- hardening (issue 14): total deadline, URLs shown without credentials, Retry-After ------------


class Trickler(LoopbackServer):
    """A receiver that answers its first `trickle` requests a byte every `gap_s`, without end,
    until the client hangs up (or the test stops it); later requests get 204 at once."""

    def __init__(self, trickle: int = 1, gap_s: float = 0.2):
        self.stop = threading.Event()
        self.requests: list[str] = []
        self.hung_up = threading.Event()
        outer = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                outer.requests.append(self.path)
                if len(outer.requests) > trickle:
                    self.send_response(204)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                head = b"HTTP/1.1 200 OK\r\nX-Trickle: "
                try:
                    for byte in itertools.chain(head, itertools.repeat(ord("a"))):
                        if outer.stop.is_set():
                            return
                        self.wfile.write(bytes([byte]))
                        outer.stop.wait(gap_s)
                except OSError:
                    outer.hung_up.set()  # the client gave up on it

        super().__init__(Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def close(self) -> None:
        self.stop.set()
        super().close()


def _rows(store: Store) -> list[Any]:
    from sqlmodel import col, select

    from daemon.store.tables import Delivery

    with store.db.session() as s:
        return list(s.exec(select(Delivery).order_by(col(Delivery.id))).all())


def test_a_trickling_receiver_cannot_hold_the_lane(tmp_path: Path) -> None:
    """A byte every 0.2 s never trips a 1 s timeout per read; the attempt's total deadline ends
    it, and the next notification goes out in the same round. (Without the deadline the lane
    would still be trickling when the round stops waiting, and nothing would be delivered.)"""
    receiver = Trickler(trickle=1, gap_s=0.2)
    try:
        cfg, pm, store = setup(tmp_path, receiver.url, timeout_s=1)
        analysed(store, pm, tmp_path / "a.mp4", [[ev(1, 2)], [ev(61, 62)]], finish=None)
        clock = Clock()
        d = Dispatcher(store, pm, cfg, clock=clock, round_timeout_s=60)
        assert d.deliver_due() == 1
        first, second = _rows(store)
        assert first.delivered_at is None and not first.dead and first.attempts == 1
        assert first.last_error == (
            f"TimeoutError: {receiver.url}: no complete answer within timeout_s = 1 s"
        )
        assert second.delivered_at is not None
        assert receiver.hung_up.wait(30)  # the connection was closed, not left trickling
        clock.advance(3600)  # nothing lost: the timed-out one is retried, and answered now
        assert d.deliver_all() == 1 and store.outbox.counts()["delivered"] == 2
    finally:
        receiver.close()


def test_credentials_in_the_url_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as ei:
        manager(make_config(tmp_path, {"webhook": {"url": "https://alice:hunter2@example.com/h"}}))
    ((key, value, msg),) = ei.value.errors
    assert key == "plugins.webhook.url" and "user name or password" in msg
    assert value == "https://…@example.com/h" and "hunter2" not in str(ei.value)
    conf = tmp_path / "config.toml"
    conf.write_text('[plugins.webhook]\nurl = "http://bob:hunter2@127.0.0.1:9/hook?apikey=k3y"\n')
    r = _cli("config", "check", "--config", str(conf))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    (line,) = r.stderr.strip().splitlines()
    assert line.startswith("framewatch: config error:") and "plugins.webhook.url" in line
    assert "hunter2" not in line and "k3y" not in line and "bob" not in line
    assert "(got 'http://…@127.0.0.1:9/hook?…')" in line


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    root = Path(__file__).resolve().parent.parent
    return subprocess.run(
        [sys.executable, "-m", "daemon.cli", *args],
        check=False,
        capture_output=True,
        text=True,
        cwd=root,
        timeout=120,
    )


def test_the_url_query_is_never_logged_or_stored(tmp_path: Path) -> None:
    """`?apikey=...` goes to the receiver and nowhere else: not into a log line, not into the
    outbox's last_error, whatever the failure."""
    answers = iter(
        [
            (500, {}),
            (503, {"Retry-After": "20"}),
            (307, {"Location": "https://elsewhere.example/x?token=SEKRIT-2"}),
            (410, {}),
        ]
    )
    receiver = Receiver(respond=lambda req: next(answers))
    closed = free_port()
    try:
        with capture_logs() as logs:
            errors = []
            for i, url in enumerate([receiver.url, f"http://127.0.0.1:{closed}/hook"]):
                cfg, pm, store = setup(tmp_path / str(i), url + "?apikey=SEKRIT-1", timeout_s=2)
                clock = Clock()
                d = Dispatcher(store, pm, cfg, clock=clock)
                analysed(store, pm, tmp_path / f"a{i}.mp4", [[ev(1, 2)]], finish=None)
                for _ in range(4):
                    d.deliver_due()
                    errors += [r.last_error for r in _rows(store)]
                    clock.advance(3600)
        assert [r["path"] for r in receiver.requests] == ["/hook?apikey=SEKRIT-1"] * 4
        shown = {e for e in errors if e}
        assert f"OSError: {receiver.url}?… answered 500 Internal Server Error" in shown
        assert f"RetryLater: {receiver.url}?… answered 503" in shown
        assert (
            f"OSError: {receiver.url}?… answered 307 (to 'https://elsewhere.example/x?…'); "
            "not followed" in shown
        )
        assert f"destination gone: {receiver.url}?… answered 410 Gone" in shown
        assert any(e.startswith(f"OSError: http://127.0.0.1:{closed}/hook?…: ") for e in shown)
        assert "SEKRIT" not in repr(shown) and "SEKRIT" not in repr(logs)
    finally:
        receiver.close()


@pytest.mark.parametrize(
    ("retry_after", "wait_s"),
    [
        ("0", 15),  # no minimum before: retried on the next round, a busy loop
        ("7", 15),
        ("120", 120),
        ("9" * 400, 3600),  # was: an infinite delay, the row dead at once
        ("²", 30),  # a Unicode digit: was a traceback; now the backoff decides (rng below)
        ("1.5", 30),
        ("-5", 30),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 15),  # a date in the past
        ("Fri, 31 Dec 9999 23:59:59 GMT", 3600),
    ],
)
def test_retry_after_is_ascii_digits_or_a_date_within_the_backoff_range(
    tmp_path: Path, retry_after: str, wait_s: float
) -> None:
    answers = iter([(429, {"Retry-After": retry_after})])
    receiver = Receiver(respond=lambda req: next(answers, (204, {})))
    try:
        cfg, pm, store = setup(tmp_path, receiver.url)
        clock = Clock()
        # rng 0.999: the first backoff is 30 s x (0.5 + 0.999 / 2), just under 30 s
        d = Dispatcher(store, pm, cfg, clock=clock, rng=lambda: 0.999)
        analysed(store, pm, tmp_path / "a.mp4", [[ev(1, 2)]], finish=None)
        with capture_logs() as logs:
            assert d.deliver_due() == 0
        (row,) = _rows(store)
        assert row.last_error == f"RetryLater: {receiver.url} answered 429" and not row.dead
        assert not [e for e in logs if e.get("exc_info") or e["log_level"] == "error"], logs
        clock.advance(wait_s - 1)
        assert d.deliver_due() == 0 and len(receiver.requests) == 1
        clock.advance(2)
        assert d.deliver_due() == 1 and len(receiver.requests) == 2
    finally:
        receiver.close()


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


def test_hook_digest_ready_posts_a_digest_ready_event(tmp_path: Path, receiver: Receiver) -> None:
    from daemon.digest import make_digest, notify_digest
    from daemon.models import Chapter, Summary

    cfg, pm, store = setup(tmp_path, receiver.url)
    a = analysed(store, pm, tmp_path / "a.mp4", [[ev(1, 2, "door", "opens")]], finish=None)
    store.summaries.put(Summary(a.id, "Door", "It opened.", (Chapter(0, 60, "all"),), (), {}))
    store.recordings.set_status(
        a.id,
        "done",
        notify=[(p, "recording_finished") for p in pm.subscribers("recording_finished")],
    )
    b = analysed(store, pm, tmp_path / "b.mp4", [[ev(1, 2, "cat", "sits")]])
    Dispatcher(store, pm, cfg).deliver_all()
    finished = [
        verified(r) for r in receiver.requests if verified(r)["type"] == "recording.finished"
    ]
    assert [f["data"]["summary"] and f["data"]["summary"]["title"] for f in finished] == [
        "Door",
        None,
    ]

    digest = make_digest(store, cfg, time.time() - 3600, time.time() + 1)
    assert notify_digest(pm, digest) == ["webhook"]
    notify_digest(pm, digest)  # sent again: the same webhook-id
    sent = [r for r in receiver.requests if verified(r)["type"] == "digest.ready"]
    assert len(sent) == 2 and len({r["headers"]["webhook-id"] for r in sent}) == 1
    data = verified(sent[0])["data"]
    assert data["path"] == digest.path
    assert [r["recording"]["path"] for r in data["recordings"]] == [a.path, b.path]
    assert data["recordings"][0]["summary"]["chapters"] == [
        {"start_s": 0, "end_s": 60, "title": "all"}
    ]
