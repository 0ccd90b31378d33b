"""Built-in plugin webhook: POST events as Standard Webhooks (signed JSON) to one URL.

Sends `events.found` for every analysed chunk that has (matching) events,
`recording.finished` at the end, with the static spans the model was not shown, and
`alert.fired` for every alert of an `[[alerts]]` rule that fired (confirmed by the second look,
or unverified where its rule delivers that), once per alert id. The `webhook-id` is derived from
the outbox row, so it is the same
on every retry and a receiver can drop duplicates. Redirects are not followed (a signed request
is for the configured URL only). 410 Gone disables the endpoint; 429/503 honour Retry-After.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import hmac
import json
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

from daemon.hookspecs import ConfigPath, Gone, RetryLater, get_logger, hookimpl, read_secret
from daemon.models import (
    AlertInfo,
    ChunkInfo,
    EventInfo,
    RecordingInfo,
    StaticSpan,
    alert_json,
    event_json,
)

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
    timeout_s: float = Field(10.0, gt=0, le=300, description="Seconds to wait for the receiver.")

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


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def post(
    url: str, msg_id: str, payload: dict[str, Any], key: bytes | None, timeout_s: float
) -> int:
    """POST one message; returns the 2xx status or raises (Gone, RetryLater, or OSError)."""
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
    opener = urllib.request.build_opener(_NoRedirects)
    try:
        with opener.open(request, timeout=timeout_s) as resp:
            resp.read(65536)
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code == 410:
            raise Gone(f"{url} answered 410 Gone") from None
        if exc.code in (429, 503):
            raise RetryLater(
                f"{url} answered {exc.code}", _retry_after(exc.headers.get("Retry-After"))
            ) from None
        if 300 <= exc.code < 400:
            raise OSError(
                f"{url} answered {exc.code} (to {exc.headers.get('Location')!r}); not followed"
            ) from None
        raise OSError(f"{url} answered {exc.code} {exc.reason}") from None


def _recording_json(r: RecordingInfo) -> dict[str, Any]:
    return {
        "id": r.id,
        "path": r.path,
        "status": r.status,
        "duration_s": r.duration_s,
        "profile": _profile(r),
        "model": r.model,
    }


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
        "events": [event_json(e, provenance=False) for e in wanted],
    }
    _send(settings, delivery_id, "events.found", "events_found", data)


@hookimpl
def recording_finished(
    recording: RecordingInfo,
    events: list[EventInfo],
    static_spans: list[StaticSpan],
    settings: WebhookSettings,
    delivery_id: str,
) -> None:
    wanted = _wanted(settings, recording, events)
    if wanted is None or (settings.labels is not None and not wanted):
        return
    data = {
        "recording": _recording_json(recording),
        "events": [event_json(e, provenance=False) for e in wanted],
        # What the model did not see, and why: a receiver can tell "nothing happened" from
        # "nothing was looked at".
        "static_spans": [_span_json(s) for s in static_spans],
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
