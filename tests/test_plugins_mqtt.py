"""The built-in mqtt plugin against a real Mosquitto broker of the test's own (started on a free
port, stopped to play an outage) and a real paho subscriber: events, alerts and recording status
in order after an outage, availability with its last will, credentials from a file, and Home
Assistant discovery checked against the documented discovery schema."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest

import plugins.mqtt as mqtt_plugin
from daemon.config import parse_config
from daemon.pluginhost.dispatch import Dispatcher
from daemon.store import Store
from tests.alertdata import StandIn, run
from tests.outbox import Clock
from tests.services import PrivateMosquitto, Subscriber

RULES = [
    {"name": "fence", "when": "a person climbs the fence", "cooldown_s": 0},
    {"name": "fall", "when": "someone falls and stays down", "cooldown_s": 120},
]


@pytest.fixture(autouse=True)
def _clients() -> Iterator[None]:
    yield
    mqtt_plugin.close_clients()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[PrivateMosquitto]:
    b = PrivateMosquitto(tmp_path / "broker")
    yield b
    b.stop()


def deliver_until(d: Dispatcher, store: Store, clock: Clock, plugin: str, n: int) -> None:
    """Dispatcher rounds (the clock moved past every backoff) until `plugin` has `n` delivered:
    paho reconnects on its own schedule after the broker comes back."""
    end = time.monotonic() + 60
    while store.outbox.counts()["plugins"][plugin]["delivered"] < n and time.monotonic() < end:
        clock.advance(3600)
        d.deliver_all()


def test_hook_alert_fired_and_events_in_order_after_the_broker_was_down(
    tmp_path: Path, broker: PrivateMosquitto
) -> None:
    sa = StandIn({"fence": [(1.5, 2.5), (6.5, 7.0)], "fall": [(6.2, 7.0)]}, {"fall": False})
    plugins = {"mqtt": {"port": broker.port, "timeout_s": 1}}
    store, plugin, rec, cfg = run(tmp_path, sa, RULES, plugins=plugins, deliver=False)
    assert rec.status == "done"  # the broker was never there while the recording was analysed
    clock = Clock()
    d = Dispatcher(store, plugin.pm, cfg, clock=clock)
    d.deliver_due()
    counts = store.outbox.counts()["plugins"]["mqtt"]
    assert counts["delivered"] == 0 and counts["failed"] == 1  # the lane waits behind the first
    total = sum(counts.values())

    broker.start()
    sub = Subscriber(broker.port, ["framewatch/#"])
    try:
        deliver_until(d, store, clock, "mqtt", total)
        assert store.outbox.counts()["plugins"]["mqtt"]["delivered"] == total
        got = sub.wait_for(lambda m: any(t == "framewatch/recordings" for t, _, _ in m))
    finally:
        sub.close()
    topics = [t for t, _, _ in got]
    fired = [a for a in store.alerts.of(rec.id) if a.fired]
    assert len(fired) == 2
    alerts = [json.loads(p) for t, p, _ in got if t == "framewatch/alerts"]
    assert sorted(a["data"]["id"] for a in alerts) == sorted(a.id for a in fired)  # once each
    assert all(a["type"] == "alert.fired" and a["data"]["outcome"] == "confirmed" for a in alerts)
    assert {"id", "rule", "recording", "start_s", "end_s", "outcome", "reason", "thumbnail"} <= set(
        alerts[0]["data"]
    )
    assert topics.count("framewatch/alerts/fence/state") == 2
    images = [p for t, p, _ in got if t == "framewatch/alerts/fence/image"]
    assert images and all(p[:2] == b"\xff\xd8" for p in images)
    # Outbox order: each chunk's events before the recording's end.
    events = [i for i, t in enumerate(topics) if t == "framewatch/events"]
    assert len(events) == 3 and max(events) < topics.index("framewatch/recordings")
    finished = json.loads(next(p for t, p, _ in got if t == "framewatch/recordings"))
    assert finished["type"] == "recording.done" and finished["data"]["alerts_fired"] == 2


def test_refused_credentials_never_block_analysis_and_a_fixed_password_file_delivers(
    tmp_path: Path,
) -> None:
    broker = PrivateMosquitto(tmp_path / "broker", users={"fw": "right-password"})
    broker.start()
    try:
        secret = tmp_path / "mqtt-password"
        secret.write_text("wrong-password\n")
        plugins = {
            "mqtt": {
                "port": broker.port,
                "username": "fw",
                "password_file": str(secret),
                "timeout_s": 1,
            }
        }
        sa = StandIn({"fence": [(1.5, 2.5)]}, {})
        store, plugin, rec, cfg = run(
            tmp_path, sa, RULES, plugins=plugins, deliver=False,
            seconds=4.0,
        )  # fmt: skip
        clock = Clock()
        d = Dispatcher(store, plugin.pm, cfg, clock=clock)
        d.deliver_due()
        assert rec.status == "done"
        row = store.outbox.counts()["plugins"]["mqtt"]
        assert row["delivered"] == 0 and row["failed"] == 1
        with store.db.session() as s:
            from sqlmodel import select

            from daemon.store.tables import Delivery

            errors = [r.last_error for r in s.exec(select(Delivery)).all() if r.plugin == "mqtt"]
        assert any("refused" in (e or "") for e in errors), errors
        secret.write_text("right-password\n")  # rotated: read again at the next connect
        sub = Subscriber(broker.port, ["framewatch/#"], username="fw", password="right-password")
        try:
            deliver_until(d, store, clock, "mqtt", sum(row.values()))
            got = sub.wait_for(lambda m: any(t == "framewatch/alerts" for t, _, _ in m))
            assert any(t == "framewatch/alerts" for t, _, _ in got)
        finally:
            sub.close()
    finally:
        broker.stop()


# -- the daemon's connection: availability, last will, status, discovery --------------------------


class App:
    """What startup/shutdown receive: the daemon's config and store."""

    def __init__(self, config: Any, store: Store):
        self.config, self.store = config, store


# Home Assistant's MQTT discovery, as documented (integrations/mqtt, "MQTT Discovery", and the
# binary_sensor.mqtt, sensor.mqtt and image.mqtt pages): the topic
# `<discovery_prefix>/<component>/[<node_id>/]<object_id>/config`, node and object ids of
# [a-zA-Z0-9_-]; a JSON object of the component's documented options (only those checked here,
# additionalProperties false, so a misspelt key fails), and a device with identifiers.
TOPIC = re.compile(
    r"^homeassistant/(?P<component>binary_sensor|sensor|image)/(?:[a-zA-Z0-9_-]+/)?[a-zA-Z0-9_-]+/config$"
)
DEVICE = {
    "type": "object",
    "properties": {
        "identifiers": {"type": "array", "items": {"type": "string"}, "minItems": 1},
        "name": {"type": "string"},
        "manufacturer": {"type": "string"},
        "model": {"type": "string"},
        "sw_version": {"type": "string"},
    },
    "required": ["identifiers"],
    "additionalProperties": False,
}
COMMON = {
    "name": {"type": "string"},
    "unique_id": {"type": "string"},
    "availability_topic": {"type": "string"},
    "payload_available": {"type": "string"},
    "payload_not_available": {"type": "string"},
    "device": DEVICE,
    "origin": {
        "type": "object",
        "properties": {"name": {"type": "string"}, "sw_version": {"type": "string"}},
        "required": ["name"],
        "additionalProperties": False,
    },
    "qos": {"enum": [0, 1, 2]},
    "json_attributes_topic": {"type": "string"},
}
SCHEMAS = {
    "binary_sensor": {
        "type": "object",
        "properties": {
            **COMMON,
            "state_topic": {"type": "string"},
            "payload_on": {"type": "string"},
            "payload_off": {"type": "string"},
            "off_delay": {"type": "integer", "minimum": 1},
            "device_class": {
                "enum": ["problem", "safety", "motion", "occupancy", "tamper", "moving"]
            },
        },
        "required": ["state_topic", "unique_id", "device"],
        "additionalProperties": False,
    },
    "sensor": {
        "type": "object",
        "properties": {
            **COMMON,
            "state_topic": {"type": "string"},
            "value_template": {"type": "string"},
            "unit_of_measurement": {"type": "string"},
            "state_class": {"enum": ["measurement", "total", "total_increasing"]},
        },
        "required": ["state_topic", "unique_id", "device"],
        "additionalProperties": False,
    },
    "image": {
        "type": "object",
        "properties": {
            **COMMON,
            "image_topic": {"type": "string"},
            "content_type": {"type": "string", "pattern": "^image/"},
        },
        "required": ["image_topic", "unique_id", "device"],
        "additionalProperties": False,
    },
}


def test_startup_publishes_availability_discovery_and_status_and_the_will_fires(
    tmp_path: Path, broker: PrivateMosquitto
) -> None:
    broker.start()
    cfg = parse_config(
        {
            "storage": {"url": f"sqlite:///{tmp_path / 'fw.db'}"},
            "alerts": [*RULES, {"name": "hook-only", "when": "x happens", "plugins": ["webhook"]}],
        }
    )
    store = Store(cfg.storage_url())
    settings = mqtt_plugin.MqttSettings(port=broker.port, status_interval_s=0.2)
    app = App(cfg, store)
    sub = Subscriber(broker.port, ["framewatch/#", "homeassistant/#"])
    try:
        mqtt_plugin.startup(app, settings)
        got = sub.wait_for(
            lambda m: (
                {"framewatch/available", "framewatch/status"} <= {t for t, _, _ in m}
                and sum(t.startswith("homeassistant/") for t, _, _ in m) == 6
            )
        )
        # Retained: a subscriber that comes later (Home Assistant restarting) gets them all.
        late = Subscriber(broker.port, ["framewatch/#", "homeassistant/#"])
        try:
            kept = late.wait_for(lambda m: sum(r for _, _, r in m) >= 8)
        finally:
            late.close()
        assert (b"online", True) in [(p, r) for t, p, r in kept if t == "framewatch/available"]
        status = json.loads(next(p for t, p, _ in kept if t == "framewatch/status"))
        assert status["queue_depth"] == 0 and status["recordings_analysed"] == 0
        discovery = {t: json.loads(p) for t, p, r in kept if t.startswith("homeassistant/") and r}
        assert len(discovery) == 6
        components = {}
        for topic, payload in discovery.items():
            m = TOPIC.match(topic)
            assert m, topic
            errors = [
                e.message
                for e in jsonschema_rs.validator_for(SCHEMAS[m["component"]]).iter_errors(payload)
            ]
            assert errors == [], (topic, errors)
            components.setdefault(m["component"], []).append(payload)
        sensors = {p["unique_id"]: p for p in components["binary_sensor"]}
        assert set(sensors) == {"framewatch_framewatch_fence", "framewatch_framewatch_fall"}
        fall = sensors["framewatch_framewatch_fall"]
        assert fall["off_delay"] == 120 and fall["state_topic"] == "framewatch/alerts/fall/state"
        assert {p["unique_id"] for p in components["sensor"]} == {
            "framewatch_framewatch_queue_depth",
            "framewatch_framewatch_recordings_analysed",
        }
        assert len(components["image"]) == 2
        # The daemon's connection dies without a goodbye: the broker publishes the will, and
        # the client, reconnecting, says online again.
        pub = mqtt_plugin._daemon[id(app)][0]
        before = len(sub.messages)
        pub.client.socket().close()
        got = sub.wait_for(
            lambda m: (
                [p for t, p, _ in m[before:] if t == "framewatch/available"][:2]
                == [b"offline", b"online"]
            )
        )
        assert [p for t, p, _ in got[before:] if t == "framewatch/available"][:2] == [
            b"offline",
            b"online",
        ]
        before = len(sub.messages)
        mqtt_plugin.shutdown(app)
        got = sub.wait_for(lambda m: any(t == "framewatch/available" for t, _, _ in m[before:]))
        assert [p for t, p, _ in got[before:] if t == "framewatch/available"] == [b"offline"]
    finally:
        sub.close()
        mqtt_plugin.shutdown(app)


def test_startup_with_the_broker_down_does_not_block(
    tmp_path: Path, broker: PrivateMosquitto
) -> None:
    cfg = parse_config({"storage": {"url": f"sqlite:///{tmp_path / 'fw.db'}"}})
    app = App(cfg, Store(cfg.storage_url()))
    settings = mqtt_plugin.MqttSettings(port=broker.port)
    t0 = time.monotonic()
    mqtt_plugin.startup(app, settings)
    assert time.monotonic() - t0 < settings.timeout_s  # returns at once, connects later
    broker.start()
    sub = Subscriber(broker.port, ["framewatch/available"])
    try:
        got = sub.wait_for(lambda m: b"online" in [p for _, p, _ in m])
        assert b"online" in [p for _, p, _ in got]
    finally:
        sub.close()
        mqtt_plugin.shutdown(app)


def test_settings_errors_name_their_key(tmp_path: Path) -> None:
    from daemon.config import ConfigError
    from tests.outbox import make_config, manager

    cfg = make_config(tmp_path, {"mqtt": {"topic_prefix": "a/#", "ca_file": "ca.pem", "x": 1}})
    with pytest.raises(ConfigError) as info:
        manager(cfg)
    keys = {k for k, _, _ in info.value.errors}
    assert {"plugins.mqtt.topic_prefix", "plugins.mqtt.x"} <= keys


def test_tls_with_a_private_ca(tmp_path: Path) -> None:
    broker = PrivateMosquitto(tmp_path / "broker", tls=True)
    broker.start()
    try:
        plugins = {"mqtt": {"port": broker.port, "tls": True, "ca_file": str(broker.ca)}}
        sa = StandIn({"fence": [(1.5, 2.5)]}, {})
        store, plugin, rec, cfg = run(
            tmp_path, sa, RULES, plugins=plugins, deliver=False,
            seconds=4.0,
        )  # fmt: skip
        sub = Subscriber(broker.port, ["framewatch/alerts"], ca=broker.ca)
        try:
            clock = Clock()
            d = Dispatcher(store, plugin.pm, cfg, clock=clock)
            total = sum(store.outbox.counts()["plugins"]["mqtt"].values())
            deliver_until(d, store, clock, "mqtt", total)
            got = sub.wait_for(lambda m: len(m) >= 1)
            assert [json.loads(p)["data"]["rule"] for _, p, _ in got] == ["fence"]
        finally:
            sub.close()
    finally:
        broker.stop()
