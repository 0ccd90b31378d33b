"""Built-in plugin mqtt: events, alerts and recording status as JSON on an MQTT broker (paho-mqtt),
with Home Assistant discovery, so a Home Assistant user sees framewatch without any YAML.

Off until a `[plugins.mqtt]` table exists. Every message is QoS 1 under `topic_prefix`:

- `<prefix>/available`: "online" / "offline", retained; the broker publishes "offline" itself
  (the last will) when the daemon's connection dies;
- `<prefix>/events`: each analysed chunk with events; `<prefix>/recordings`: each recording that
  finished or failed; `<prefix>/status` (retained): queue depth and recordings analysed;
- `<prefix>/alerts`: every alert that fired (its full JSON, thumbnail included), and per rule
  `<prefix>/alerts/<rule>/state` ("ON"), `.../attributes` (the JSON without the picture) and
  `.../image` (the JPEG);
- Home Assistant discovery (retained) under `discovery_prefix`: a binary sensor per rule that
  turns on when it fires and off after the rule's cooldown, an image entity per rule, and
  sensors for the queue depth and the recordings analysed.

A broker that is down or refuses the credentials never blocks analysis: a notification that
cannot be published raises RetryLater, so it waits in the outbox and the ones after it wait
behind it; they go out in order once the broker is back.
"""

from __future__ import annotations

import atexit
import json
import re
import threading
import time
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from daemon.hookspecs import ConfigPath, RetryLater, get_logger, hookimpl, read_secret
from daemon.models import (
    AlertInfo,
    ChunkInfo,
    EventInfo,
    RecordingInfo,
    alert_json,
    event_json,
)

log = get_logger(__name__)

NAME = "mqtt"
CREDENTIAL = "mqtt-password"  # file name under $CREDENTIALS_DIRECTORY (systemd LoadCredential=)
_TOPIC = r"^[^#+\x00]+$"


class MqttSettings(BaseModel):
    """`[plugins.mqtt]`"""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = Field("127.0.0.1", min_length=1, description="The broker's host name or address.")
    port: int | None = Field(
        None, ge=1, le=65535, description="The broker's port; default 1883, or 8883 with tls."
    )
    topic_prefix: str = Field(
        "framewatch", pattern=_TOPIC, description="Every topic starts with this."
    )
    username: str | None = Field(None, description="User name, if the broker wants one.")
    password_file: ConfigPath | None = Field(
        None,
        description="File holding the password; without it, $CREDENTIALS_DIRECTORY/mqtt-password "
        "(systemd LoadCredential=) when there is one.",
    )
    tls: bool = Field(False, description="Connect with TLS (the system's CAs, or ca_file).")
    ca_file: ConfigPath | None = Field(None, description="CA certificate(s) to trust with tls.")
    discovery: bool = Field(True, description="Publish Home Assistant discovery messages.")
    discovery_prefix: str = Field(
        "homeassistant", pattern=_TOPIC, description="Home Assistant's discovery prefix."
    )
    client_id: str | None = Field(None, description="MQTT client id; default framewatch-<host>.")
    timeout_s: float = Field(10.0, gt=0, le=300, description="Seconds to wait for the broker.")
    status_interval_s: float = Field(
        60.0, gt=0, description="How often the daemon publishes <prefix>/status."
    )

    @model_validator(mode="after")
    def _ca_needs_tls(self) -> MqttSettings:
        if self.ca_file is not None and not self.tls:
            raise ValueError("ca_file needs tls = true")
        return self


def node_id(settings: MqttSettings) -> str:
    """The Home Assistant node id: the topic prefix with anything but [a-zA-Z0-9_-] as _."""
    return re.sub(r"[^a-zA-Z0-9_-]", "_", settings.topic_prefix)


def _password(settings: MqttSettings) -> str | None:
    found = read_secret(None, settings.password_file, CREDENTIAL)
    return found[0].strip() if found is not None else None


def _version() -> str:
    try:
        return version("framewatch")
    except PackageNotFoundError:
        return "0"


# -- Home Assistant discovery ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Rule:
    """What discovery needs of an [[alerts]] rule."""

    name: str
    when: str
    cooldown_s: float
    severity: str


def rules_of(config: Any) -> list[Rule]:
    """The rules delivered through this plugin (all, when a rule names no plugins)."""
    return [
        Rule(r.name, r.when, r.cooldown_s, r.severity)
        for r in getattr(config, "alerts", ())
        if r.plugins is None or NAME in r.plugins
    ]


def discovery_messages(
    settings: MqttSettings, rules: list[Rule]
) -> list[tuple[str, dict[str, Any]]]:
    """(topic, payload) of every retained discovery config message."""
    p, node = settings.topic_prefix, node_id(settings)
    device = {
        "identifiers": [f"framewatch_{node}"],
        "name": "framewatch",
        "manufacturer": "framewatch",
        "model": "video analysis",
        "sw_version": _version(),
    }
    common = {
        "availability_topic": f"{p}/available",
        "payload_available": "online",
        "payload_not_available": "offline",
        "device": device,
        "origin": {"name": "framewatch", "sw_version": _version()},
        "qos": 1,
    }
    out: list[tuple[str, dict[str, Any]]] = []
    disc = settings.discovery_prefix
    for r in rules:
        out.append(
            (
                f"{disc}/binary_sensor/{node}/{r.name}/config",
                {
                    **common,
                    "name": f"Alert {r.name}",
                    "unique_id": f"framewatch_{node}_{r.name}",
                    "state_topic": f"{p}/alerts/{r.name}/state",
                    "payload_on": "ON",
                    "payload_off": "OFF",
                    # On when the rule fires, off once its cooldown has passed (Home Assistant
                    # counts it; the next alert of the rule cannot come sooner).
                    "off_delay": max(1, round(r.cooldown_s)),
                    "device_class": "problem",
                    "json_attributes_topic": f"{p}/alerts/{r.name}/attributes",
                },
            )
        )
        out.append(
            (
                f"{disc}/image/{node}/{r.name}/config",
                {
                    **common,
                    "name": f"Alert {r.name} picture",
                    "unique_id": f"framewatch_{node}_{r.name}_image",
                    "image_topic": f"{p}/alerts/{r.name}/image",
                    "content_type": "image/jpeg",
                },
            )
        )
    for key, name, state_class in (
        ("queue_depth", "Queue depth", "measurement"),
        ("recordings_analysed", "Recordings analysed", "total_increasing"),
    ):
        out.append(
            (
                f"{disc}/sensor/{node}/{key}/config",
                {
                    **common,
                    "name": name,
                    "unique_id": f"framewatch_{node}_{key}",
                    "state_topic": f"{p}/status",
                    "value_template": "{{ value_json." + key + " }}",
                    "unit_of_measurement": "recordings",
                    "state_class": state_class,
                },
            )
        )
    return out


# -- the connection -------------------------------------------------------------------------------


class Publisher:
    """One paho client. The daemon's (`owner`) holds the availability topic with a last will and
    publishes discovery on every (re)connect; others (`framewatch analyze`, `replay`) only
    publish notifications, so their exit never marks the daemon offline."""

    def __init__(
        self, settings: MqttSettings, *, owner: bool = False, rules: list[Rule] | None = None
    ):
        import paho.mqtt.client as mqtt

        self.settings = settings
        self.owner = owner
        self.rules = rules or []
        self.connected = threading.Event()
        self.refused: str | None = None
        s = settings
        client_id = s.client_id or f"framewatch-{'daemon' if owner else 'cli'}-{id(self):x}"
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311
        )
        if s.username is not None:
            # Read again before every (re)connect: a rotated password file needs no restart.
            self.client.on_pre_connect = lambda client, userdata: client.username_pw_set(
                s.username, _password(s)
            )
        if s.tls:
            import ssl  # only with TLS on (8 ms at start-up otherwise, for every command)

            self.client.tls_set(
                ca_certs=str(s.ca_file) if s.ca_file else None, cert_reqs=ssl.CERT_REQUIRED
            )
        if owner:
            self.client.will_set(f"{s.topic_prefix}/available", "offline", qos=1, retain=True)
        self.client.reconnect_delay_set(1, 30)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.connect_async(s.host, s.port or (8883 if s.tls else 1883), keepalive=60)
        self.client.loop_start()

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            self.refused = str(reason)
            log.warning("mqtt_refused", reason=str(reason), host=self.settings.host)
            return
        self.refused = None
        if self.owner:
            p = self.settings.topic_prefix
            client.publish(f"{p}/available", "online", qos=1, retain=True)
            if self.settings.discovery:
                for topic, payload in discovery_messages(self.settings, self.rules):
                    client.publish(topic, json.dumps(payload), qos=1, retain=True)
        self.connected.set()
        log.info("mqtt_connected", host=self.settings.host, owner=self.owner)

    def _on_disconnect(
        self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        if self.connected.is_set():
            log.warning("mqtt_disconnected", reason=str(reason))
        self.connected.clear()

    def publish(self, messages: list[tuple[str, bytes | str, bool]]) -> None:
        """Publish (topic, payload, retain) messages at QoS 1 and wait for the broker's PUBACKs;
        RetryLater when the broker is not there (nothing is queued in paho, so a retry never
        sends a message twice over a short outage)."""
        s = self.settings
        if not self.connected.wait(s.timeout_s):
            why = f"refused: {self.refused}" if self.refused else "not reachable"
            raise RetryLater(f"MQTT broker {s.host}:{s.port or (8883 if s.tls else 1883)} {why}")
        infos = []
        for topic, payload, retain in messages:
            info = self.client.publish(topic, payload, qos=1, retain=retain)
            if info.rc != 0:
                raise RetryLater(f"MQTT publish to {topic} failed (rc {info.rc})")
            infos.append(info)
        deadline = time.monotonic() + s.timeout_s
        for info in infos:
            info.wait_for_publish(max(0.0, deadline - time.monotonic()))
            if not info.is_published():
                raise RetryLater(
                    f"MQTT broker {s.host} did not acknowledge within {s.timeout_s:g} s"
                )

    def close(self) -> None:
        if self.owner and self.connected.is_set():
            info = self.client.publish(
                f"{self.settings.topic_prefix}/available", "offline", qos=1, retain=True
            )
            info.wait_for_publish(self.settings.timeout_s)
        self.client.disconnect()
        self.client.loop_stop()


_lock = threading.Lock()
_daemon: dict[int, tuple[Publisher, threading.Event, threading.Thread | None]] = {}  # id(app)
_oneshot: dict[str, Publisher] = {}  # settings json -> a notification-only client


def close_clients() -> None:
    """Disconnect the notification-only clients (at exit, so the broker sees a clean goodbye)."""
    with _lock:
        clients = list(_oneshot.values())
        _oneshot.clear()
    for pub in clients:
        pub.close()


atexit.register(close_clients)


def _publisher(settings: MqttSettings) -> Publisher:
    """The daemon's publisher when it runs in this process with these settings, else a
    notification-only one kept for the life of the process."""
    with _lock:
        for pub, _, _ in _daemon.values():
            if pub.settings == settings:
                return pub
        key = settings.model_dump_json()
        if key not in _oneshot:
            _oneshot[key] = Publisher(settings)
        return _oneshot[key]


def status_payload(stats: dict[str, Any]) -> dict[str, Any]:
    """<prefix>/status from the store's totals."""
    recs = stats.get("recordings", {})
    return {
        "queue_depth": recs.get("queued", 0) + recs.get("analyzing", 0),
        "recordings_analysed": recs.get("done", 0),
        "recordings": recs,
        "alerts_fired": sum(
            n for _, outcome, n in stats.get("alerts", ()) if outcome in ("confirmed",)
        ),
        "time": time.time(),
    }


# -- hooks ----------------------------------------------------------------------------------------


@hookimpl
def register_settings() -> dict[str, type[BaseModel]]:
    return {NAME: MqttSettings}


@hookimpl
def startup(app: Any, settings: MqttSettings | None) -> None:
    settings = settings or MqttSettings()
    # Connects in the background: a broker that is down never holds up the start.
    pub = Publisher(settings, owner=True, rules=rules_of(app.config))
    stop = threading.Event()
    store = getattr(app, "store", None)
    thread = None
    if store is not None:

        def report() -> None:
            while True:
                if pub.connected.is_set():
                    try:
                        payload = json.dumps(status_payload(store.stats()))
                        pub.client.publish(
                            f"{settings.topic_prefix}/status", payload, qos=1, retain=True
                        )
                    except Exception:  # the store briefly away: the next round tries again
                        log.exception("mqtt_status_failed")
                if stop.wait(settings.status_interval_s if pub.connected.is_set() else 1.0):
                    return

        thread = threading.Thread(target=report, name="mqtt-status", daemon=True)
        thread.start()
    with _lock:
        _daemon[id(app)] = (pub, stop, thread)


@hookimpl
def shutdown(app: Any) -> None:
    with _lock:
        found = _daemon.pop(id(app), None)
    if found is None:
        return
    pub, stop, thread = found
    stop.set()
    if thread is not None:
        thread.join(5)
    pub.close()


def _recording_json(r: RecordingInfo) -> dict[str, Any]:
    return {
        "id": r.id,
        "path": r.path,
        "status": r.status,
        "reason": r.reason,
        "duration_s": r.duration_s,
        "profile": r.profile or r.settings.get("profile"),
        "model": r.model,
    }


def _message(settings: MqttSettings, delivery_id: str, kind: str, data: dict[str, Any]) -> str:
    return json.dumps(
        {"type": kind, "delivery_id": delivery_id, "time": time.time(), "data": data},
        ensure_ascii=False,
    )


@hookimpl
def events_found(
    recording: RecordingInfo,
    chunk: ChunkInfo,
    events: list[EventInfo],
    settings: MqttSettings,
    delivery_id: str,
) -> None:
    if not events:
        return
    data = {
        "recording": _recording_json(recording),
        "chunk": {"index": chunk.index, "start_s": chunk.start_s, "end_s": chunk.end_s},
        "events": [event_json(e, provenance=False) for e in events],
    }
    topic = f"{settings.topic_prefix}/events"
    _publisher(settings).publish(
        [(topic, _message(settings, delivery_id, "events.found", data), False)]
    )


def _recording_status(
    recording: RecordingInfo, settings: MqttSettings, delivery_id: str, **more: Any
) -> None:
    data = {"recording": _recording_json(recording), **more}
    kind = f"recording.{recording.status}"
    topic = f"{settings.topic_prefix}/recordings"
    _publisher(settings).publish([(topic, _message(settings, delivery_id, kind, data), False)])


@hookimpl
def recording_finished(
    recording: RecordingInfo,
    events: list[EventInfo],
    alerts: list[AlertInfo],
    settings: MqttSettings,
    delivery_id: str,
) -> None:
    _recording_status(
        recording,
        settings,
        delivery_id,
        events=len(events),
        alerts_fired=sum(1 for a in alerts if a.fired),
    )


@hookimpl
def recording_failed(
    recording: RecordingInfo, error: str, settings: MqttSettings, delivery_id: str
) -> None:
    _recording_status(recording, settings, delivery_id, error=error)


@hookimpl
def alert_fired(
    recording: RecordingInfo, alert: AlertInfo, settings: MqttSettings, delivery_id: str
) -> None:
    p = settings.topic_prefix
    full = alert_json(alert, recording.path)
    attributes = {**full, "thumbnail": None, "thumbnail_s": alert.thumbnail_s}
    attributes.pop("provenance", None)
    messages: list[tuple[str, bytes | str, bool]] = [
        (f"{p}/alerts", _message(settings, delivery_id, "alert.fired", full), False),
        (f"{p}/alerts/{alert.rule}/attributes", json.dumps(attributes, ensure_ascii=False), True),
    ]
    if alert.thumbnail:
        messages.append((f"{p}/alerts/{alert.rule}/image", alert.thumbnail, True))
    messages.append((f"{p}/alerts/{alert.rule}/state", "ON", False))
    _publisher(settings).publish(messages)
