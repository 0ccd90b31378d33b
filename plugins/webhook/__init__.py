"""Built-in plugin webhook: POST events as Standard Webhooks (signed JSON) to one URL.

Sends `events.found` for every analysed chunk that has (matching) events,
`recording.finished` at the end, with the static spans the model was not shown, and
`alert.fired` for every alert of an `[[alerts]]` rule that fired (confirmed by the second look,
or unverified where its rule delivers that), once per alert id, and `digest.ready` when a digest
was written (its `webhook-id` is derived from the digest's period and folder, so a digest sent
again has the same id). The `webhook-id` is derived from
the outbox row, so it is the same
on every retry and a receiver can drop duplicates. Redirects are not followed (a signed request
is for the configured URL only). 410 Gone disables the endpoint; 429/503 honour Retry-After.

Each attempt has a total deadline of `timeout_s` (_Deadline): a receiver that trickles its answer
a byte at a time cannot hold the delivery lane. The URL is shown (logs, errors stored in the
outbox) without user name, password, query string or fragment, and a URL with credentials is
refused by the settings: they would reach the name resolver and the logs.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import hmac
import http.client
import json
import socket
import threading
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

from pydantic import (
    AnyHttpUrl,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

from daemon.hookspecs import (
    ConfigPath,
    Gone,
    RetryLater,
    get_logger,
    hookimpl,
    read_secret,
    redact_url,
)
from daemon.models import (
    AlertInfo,
    ChunkInfo,
    DigestInfo,
    EventInfo,
    RecordingInfo,
    StaticSpan,
    Summary,
    alert_json,
    event_json,
    summary_json,
)
from plugins._shared import one_line

log = get_logger(__name__)

NAME = "webhook"
CREDENTIAL = "webhook-secret"  # file name under $CREDENTIALS_DIRECTORY (systemd LoadCredential=)
USER_AGENT = "framewatch-webhook"


def _decode_secret(value: str) -> bytes:
    """A Standard Webhooks secret: base64 bytes, usually written with a `whsec_` prefix."""
    raw = value.strip().removeprefix("whsec_")
    try:
        key = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("must be base64, optionally prefixed whsec_") from None
    if len(key) < 16:
        raise ValueError("must decode to at least 16 bytes (24 recommended)")
    return key


class WebhookSettings(BaseModel):
    """`[plugins.webhook]`"""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: AnyHttpUrl = Field(description="Where to POST (http or https).")
    secret: SecretStr | None = Field(
        None,
        description="Signing secret `whsec_<base64>`; better: secret_file or $CREDENTIALS_DIRECTORY.",
    )
    secret_file: ConfigPath | None = Field(None, description="File holding the signing secret.")
    labels: list[str] | None = Field(
        None, description="Only events with one of these labels (any case)."
    )
    profiles: list[str] | None = Field(
        None, description="Only recordings analysed with one of these profiles."
    )
    web_url: AnyHttpUrl | None = Field(
        None,
        description="The web plugin's public base URL (its public_url, e.g. "
        "https://fw.example.org): each event in a payload that has a picture then carries "
        "`thumbnail`, <web_url>/api/events/<id>/thumbnail.",
    )
    timeout_s: float = Field(
        10.0,
        gt=0,
        le=300,
        description="Seconds one attempt may take in all (connect, send, answer), however the "
        "receiver trickles its answer.",
    )

    @field_validator("url")
    @classmethod
    def _no_credentials(cls, v: AnyHttpUrl) -> AnyHttpUrl:
        if v.username is not None or v.password is not None:
            raise ValueError(
                "must not contain a user name or password (user:password@): they would be sent "
                "to the name resolver and logged; receivers verify framewatch by the signature "
                "(secret_file)"
            )
        return v

    @field_validator("secret")
    @classmethod
    def _secret_format(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None:
            _decode_secret(v.get_secret_value())
        return v

    @model_validator(mode="after")
    def _one_secret(self) -> WebhookSettings:
        if self.secret is not None and self.secret_file is not None:
            raise ValueError("set secret or secret_file, not both")
        return self


def signing_key(settings: WebhookSettings) -> bytes | None:
    """The secret from settings, its file, or systemd's credentials folder; None: unsigned."""
    found = read_secret(settings.secret, settings.secret_file, CREDENTIAL)
    if found is None:
        return None
    secret, where = found
    try:
        return _decode_secret(secret)
    except ValueError as exc:
        raise ValueError(f"webhook secret in {where} {exc}") from None


def sign(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """Standard Webhooks `webhook-signature`: v1, base64 HMAC-SHA256 over `id.timestamp.body`."""
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # urllib then raises HTTPError with the 3xx status


# More digits than any real wait ("Retry-After: 999...9", 400 digits): read as this, and the
# dispatcher keeps it within its backoff range.
_LONGEST_WAIT_S = 1e10


def _retry_after(value: str | None) -> float | None:
    """Seconds a Retry-After header asks for: delta-seconds in ASCII digits, or an HTTP date;
    None for anything else ("²" is a digit to str.isdigit, not to HTTP), and the dispatcher's
    backoff decides. The dispatcher clamps the result to its range (15 s to 1 h)."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value) if len(value) <= 10 else _LONGEST_WAIT_S
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # "-0000": UTC, by RFC 5322
        when = when.replace(tzinfo=UTC)
    try:
        return max(0.0, when.timestamp() - time.time())
    except (OverflowError, OSError, ValueError):
        return None


class _Deadline:
    """One attempt's total time. urllib's timeout bounds each socket operation, so a receiver
    sending a byte every few seconds held an attempt (and the plugin's delivery lane) for as long
    as it liked. Connections opened for the attempt get the remaining time as their timeout, and
    a timer shuts their sockets down when it runs out (through a duplicate descriptor, which
    also reaches a socket in its TLS handshake), which ends any read or write blocked on them.
    Name resolution is not covered: the system resolver's own timeouts bound it."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self._end = time.monotonic() + seconds
        self.expired = False
        self._lock = threading.Lock()
        self._socks: list[socket.socket] = []
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def remaining(self) -> float:
        return max(0.001, self._end - time.monotonic())

    def watch(self, sock: socket.socket) -> None:
        try:
            dup = sock.dup()
        except OSError:
            return
        with self._lock:
            self._socks.append(dup)
            expired = self.expired
        if expired:
            self._shut(dup)

    @staticmethod
    def _shut(sock: socket.socket) -> None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            socks = list(self._socks)
        for sock in socks:
            self._shut(sock)

    def __enter__(self) -> _Deadline:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()
        with self._lock:
            socks, self._socks = self._socks, []
        for sock in socks:
            sock.close()

    def handlers(self) -> list[urllib.request.BaseHandler]:
        """urllib's HTTP and HTTPS handlers with connections bound to this deadline."""
        deadline = self

        def bounded(base: type[http.client.HTTPConnection]) -> type[http.client.HTTPConnection]:
            class Bounded(base):  # type: ignore[valid-type, misc]
                def __init__(self, *args: Any, **kwargs: Any):
                    super().__init__(*args, **kwargs)
                    create = getattr(self, "_create_connection", None)
                    if create is not None:  # the plain socket, before a TLS handshake on it

                        def create_watched(*a: Any, **kw: Any) -> socket.socket:
                            sock = create(*a, **kw)
                            deadline.watch(sock)
                            return sock

                        self._create_connection = create_watched

                def connect(self) -> None:
                    self.timeout = deadline.remaining()
                    super().connect()
                    deadline.watch(self.sock)

            return Bounded

        class Http(urllib.request.HTTPHandler):
            def do_open(self, http_class: Any, req: Any, **kw: Any) -> Any:
                return super().do_open(bounded(http_class), req, **kw)

        class Https(urllib.request.HTTPSHandler):
            def do_open(self, http_class: Any, req: Any, **kw: Any) -> Any:
                return super().do_open(bounded(http_class), req, **kw)

        return [Http(), Https()]


def _reason(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.URLError) and not isinstance(exc, urllib.error.HTTPError):
        inner = exc.reason
        return (
            f"{type(inner).__name__}: {inner}" if isinstance(inner, BaseException) else str(inner)
        )
    return f"{type(exc).__name__}: {exc}"


def post(
    url: str, msg_id: str, payload: dict[str, Any], key: bytes | None, timeout_s: float
) -> int:
    """POST one message within `timeout_s` in all; returns the 2xx status or raises (Gone,
    RetryLater, or OSError: TimeoutError when the deadline passed). Messages show the URL
    through redact_url only."""
    shown = redact_url(url)
    body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
    ts = int(time.time())  # fresh on every attempt: receivers reject stale timestamps
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
    }
    if key is not None:
        headers["webhook-signature"] = sign(key, msg_id, ts, body)
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    with _Deadline(timeout_s) as deadline:
        opener = urllib.request.build_opener(_NoRedirects, *deadline.handlers())
        try:
            with opener.open(request, timeout=timeout_s) as resp:
                resp.read(65536)
                return int(resp.status)
        except urllib.error.HTTPError as exc:
            exc.close()
            answer = exc
        except Exception as exc:  # any failure of the exchange; the message names the URL safely
            if deadline.expired:
                raise TimeoutError(
                    f"{shown}: no complete answer within timeout_s = {timeout_s:g} s"
                ) from None
            raise OSError(f"{shown}: {_reason(exc)}".replace(url, shown)) from None
    if answer.code == 410:
        raise Gone(f"{shown} answered 410 Gone")
    if answer.code in (429, 503):
        raise RetryLater(
            f"{shown} answered {answer.code}", _retry_after(answer.headers.get("Retry-After"))
        )
    if 300 <= answer.code < 400:
        location = redact_url(answer.headers.get("Location") or "")
        raise OSError(f"{shown} answered {answer.code} (to {location!r}); not followed")
    raise OSError(f"{shown} answered {answer.code} {one_line(answer.reason, 200)}")


def _recording_json(r: RecordingInfo) -> dict[str, Any]:
    return {
        "id": r.id,
        "path": r.path,
        "status": r.status,
        "duration_s": r.duration_s,
        "profile": _profile(r),
        "model": r.model,
    }


def _events_json(settings: WebhookSettings, events: list[EventInfo]) -> list[dict[str, Any]]:
    """The events as JSON; with web_url, each event that has a picture carries its URL."""
    out = []
    base = str(settings.web_url).rstrip("/") if settings.web_url is not None else None
    for e in events:
        item = event_json(e, provenance=False)
        if base is not None and e.thumbnail is not None:
            item["thumbnail"] = f"{base}/api/events/{e.id}/thumbnail"
        out.append(item)
    return out


def _span_json(s: StaticSpan) -> dict[str, Any]:
    return {**dataclasses.asdict(s), "reason": s.reason}


def _profile(r: RecordingInfo) -> str | None:
    return r.profile or r.settings.get("profile")


def _wanted(
    settings: WebhookSettings, recording: RecordingInfo, events: list[EventInfo]
) -> list[EventInfo] | None:
    """The events to send, or None when the recording's profile is filtered out."""
    if settings.profiles is not None and _profile(recording) not in settings.profiles:
        return None
    if settings.labels is None:
        return list(events)
    keep = {label.casefold() for label in settings.labels}
    return [e for e in events if e.label.casefold() in keep]


def _send(
    settings: WebhookSettings, delivery_id: str, kind: str, hook: str, data: dict[str, Any]
) -> None:
    msg_id = f"msg_{delivery_id}_{hook}"
    key = signing_key(settings)
    if key is None:
        log.warning(
            "webhook_unsigned",
            reason="no secret, secret_file or $CREDENTIALS_DIRECTORY/webhook-secret",
        )
    payload = {"type": kind, "timestamp": datetime.now(UTC).isoformat(), "data": data}
    status = post(str(settings.url), msg_id, payload, key, settings.timeout_s)
    log.info("webhook_sent", webhook_id=msg_id, type=kind, status=status)


@hookimpl
def register_settings() -> dict[str, type[BaseModel]]:
    return {NAME: WebhookSettings}


@hookimpl
def events_found(
    recording: RecordingInfo,
    chunk: ChunkInfo,
    events: list[EventInfo],
    settings: WebhookSettings,
    delivery_id: str,
) -> None:
    wanted = _wanted(settings, recording, events)
    if not wanted:
        return  # an alert without events is noise
    data = {
        "recording": _recording_json(recording),
        "chunk": {
            "index": chunk.index,
            "start_s": chunk.start_s,
            "end_s": chunk.end_s,
            "of": chunk.chunks_total,
        },
        "events": _events_json(settings, wanted),
    }
    _send(settings, delivery_id, "events.found", "events_found", data)


@hookimpl
def recording_finished(
    recording: RecordingInfo,
    events: list[EventInfo],
    static_spans: list[StaticSpan],
    summary: Summary | None,
    settings: WebhookSettings,
    delivery_id: str,
) -> None:
    wanted = _wanted(settings, recording, events)
    if wanted is None or (settings.labels is not None and not wanted):
        return
    data = {
        "recording": _recording_json(recording),
        "events": _events_json(settings, wanted),
        # What the model did not see, and why: a receiver can tell "nothing happened" from
        # "nothing was looked at".
        "static_spans": [_span_json(s) for s in static_spans],
        # The recording's summary and chapters ([summary]), or null without one.
        "summary": summary_json(summary) if summary is not None else None,
    }
    _send(settings, delivery_id, "recording.finished", "recording_finished", data)


@hookimpl
def alert_fired(
    recording: RecordingInfo, alert: AlertInfo, settings: WebhookSettings, delivery_id: str
) -> None:
    # Labels filter events, not alerts (a rule chooses its own plugins); profiles filter both.
    if settings.profiles is not None and _profile(recording) not in settings.profiles:
        return
    data = {"recording": _recording_json(recording), "alert": alert_json(alert, recording.path)}
    _send(settings, delivery_id, "alert.fired", "alert_fired", data)


@hookimpl
def digest_ready(digest: DigestInfo, settings: WebhookSettings) -> None:
    rows = [
        (r, m)
        for r, m in digest.recordings
        if settings.profiles is None or _profile(r) in settings.profiles
    ]
    data = {
        "path": digest.path,
        "since": datetime.fromtimestamp(digest.since, UTC).isoformat(),
        "until": datetime.fromtimestamp(digest.until, UTC).isoformat(),
        "folder": digest.folder,
        "recordings": [
            {
                "recording": _recording_json(r),
                "summary": summary_json(m) if m is not None else None,
            }
            for r, m in rows
        ],
    }
    period = f"{digest.since}:{digest.until}:{digest.folder or ''}"
    digest_id = "digest_" + hashlib.sha256(period.encode()).hexdigest()[:16]
    _send(settings, digest_id, "digest.ready", "digest_ready", data)
