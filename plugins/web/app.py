"""The web plugin's ASGI app: read-only JSON API, HTML pages, the video stream and /metrics.

Every route is a GET that reads the store. The one route that reads a file streams a stored
recording (a path the store registered for that recording, still the regular file of the size,
device and inode it was registered with: video.py), never a path taken from the request. Model text is untrusted: pages are
rendered with Jinja2 autoescaping and the script only ever writes text with `textContent`; a
Content-Security-Policy allows scripts from this server alone.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hmac
import mimetypes
import re
from collections.abc import Sequence
from importlib.resources import files
from pathlib import Path
from typing import Annotated, Any, Protocol

import jinja2
import structlog
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint

from daemon.models import (
    AlertInfo,
    ChunkInfo,
    EventInfo,
    RecordingInfo,
    SpeechSegment,
    event_json,
    hms,
    speech_json,
)
from plugins.web.metrics import metrics_registry, metrics_response
from plugins.web.video import SERVED_STATES, Refused, file_response, open_registered

log = structlog.get_logger(__name__)


class _Recordings(Protocol):
    def get(self, recording_id: int) -> RecordingInfo: ...
    def list(self) -> list[tuple[RecordingInfo, int, int]]: ...
    def files(self, recording_id: int) -> list[Any]: ...


class _Chunks(Protocol):
    def of(self, recording_id: int) -> list[ChunkInfo]: ...
    def running(self) -> list[tuple[int, int, str | None, float | None]]: ...


class _Events(Protocol):
    def of(self, recording_id: int | None = None) -> list[EventInfo]: ...
    def search(
        self,
        query: str,
        *,
        recording_id: int | None = None,
        since: float | None = None,
        labels: Sequence[str] = (),
        limit: int = 20,
        offset: int = 0,
    ) -> list[Any]: ...


class _Speech(Protocol):
    def of(self, recording_id: int | None = None) -> list[SpeechSegment]: ...


class _Outbox(Protocol):
    def counts(self) -> dict[str, Any]: ...


class _Alerts(Protocol):
    def of(self, recording_id: int | None = None) -> list[AlertInfo]: ...
    def get(self, alert_id: int) -> AlertInfo: ...


class ReadStore(Protocol):
    """What the web app uses of the store (daemon.store.Store, which plugins see as `app.store`):
    reads only. Search hits carry `event` (or `speech`, for what was said), `recording_path`,
    `recording_status`, `score`, `rank` and `link`."""

    recordings: _Recordings
    chunks: _Chunks
    events: _Events
    speech: _Speech
    outbox: _Outbox
    alerts: _Alerts

    def stats(self) -> dict[str, Any]: ...


API_TITLE = "framewatch"
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "media-src 'self'; connect-src 'self'; form-action 'self'; base-uri 'none'; "
    "frame-ancestors 'none'"
)
# Ids fit a JavaScript number (and print without an exponent, which int parsing refuses).
MAX_ID = 2**53
RecordingId = Annotated[int, PathParam(ge=1, le=MAX_ID, description="The recording's id.")]


# -- API models (the OpenAPI document is generated from these) ------------------------------------


class Problem(BaseModel):
    detail: str


class RecordingOut(BaseModel):
    id: int
    path: str
    name: str = Field(description="The file's name.")
    status: str = Field(description="queued, analyzing, done, failed or skipped.")
    reason: str | None = Field(description="Why it failed or was skipped.")
    duration_s: float | None
    profile: str | None
    model: str | None
    chunks_done: int
    chunks_total: int
    page: str = Field(description="URL of its timeline page.")
    video: str = Field(description="URL of its video stream (HTTP Range supported).")


class ChunkOut(BaseModel):
    index: int
    start_s: float
    end_s: float
    frames: int
    status: str
    attempts: int
    error: str | None


class RecordingDetail(RecordingOut):
    chunks: list[ChunkOut]


class EventOut(BaseModel):
    id: int | None
    recording_id: int
    chunk: int
    start_s: float = Field(description="Seconds from the recording's start.")
    end_s: float
    time: str = Field(description="start_s as HH:MM:SS.")
    label: str
    description: str
    confidence: float | None
    evidence_s: float | None = Field(description="Time of the sampled frame it rests on.")
    provenance: dict[str, Any] = Field(description="Model, prompt hash and sampling settings.")


class AlertOut(BaseModel):
    id: int
    recording_id: int
    rule: str
    severity: str
    outcome: str = Field(
        description="candidate (waiting for its second look), confirmed, rejected, unverified "
        "or suppressed (within the rule's cooldown)."
    )
    fired: bool = Field(description="Delivered to the rule's plugins.")
    start_s: float
    end_s: float
    time: str = Field(description="start_s as HH:MM:SS.")
    reason: str | None = Field(description="Why this outcome, as a person reads it.")
    why: str = Field(description="The chunk answer's reason for the candidate.")
    thumbnail: str | None = Field(description="URL of its JPEG thumbnail, when it has one.")
    verification: dict[str, Any] = Field(description="The second look: answer, window, frames.")


class SpeechOut(BaseModel):
    id: int | None
    recording_id: int
    chunk: int
    start_s: float = Field(description="Seconds from the recording's start.")
    end_s: float
    time: str = Field(description="start_s as HH:MM:SS.")
    text: str = Field(description="What was said.")
    language: str | None = Field(description="ISO 639-1 code, configured or detected.")
    provenance: dict[str, Any] = Field(description="Speech model and its settings.")


class HitOut(EventOut):
    kind: str = Field("event", description='"event", or "speech" for what was said.')
    text: str | None = Field(
        None, description="Speech hits: what was said (also the description; label is speech)."
    )
    rank: int
    score: float = Field(description="Higher is better; comparable within one search.")
    recording: str = Field(description="The recording's path.")
    recording_status: str
    link: str = Field(description="file:// URL of the recording at the event (#t=seconds).")
    page: str = Field(description="URL of the timeline page at the event.")


class SearchOut(BaseModel):
    query: str
    hits: list[HitOut]


class CurrentChunk(BaseModel):
    recording_id: int
    chunk: int
    owner: str | None
    started_at: float | None


class DeliveryCounts(BaseModel):
    pending: int
    failed: int
    dead: int
    delivered: int


class StatusOut(BaseModel):
    recordings: dict[str, int] = Field(description="Recordings by state.")
    queue_depth: int = Field(description="Recordings waiting or being analysed.")
    chunks_done: int
    chunks_total: int
    running: list[CurrentChunk]
    deliveries: DeliveryCounts


# -- conversions ----------------------------------------------------------------------------------


def _recording(r: RecordingInfo, done: int, total: int) -> RecordingOut:
    return RecordingOut(
        id=r.id,
        path=r.path,
        name=Path(r.path).name,
        status=r.status,
        reason=r.reason,
        duration_s=r.duration_s,
        profile=r.profile,
        model=r.model,
        chunks_done=done,
        chunks_total=total,
        page=f"/recordings/{r.id}",
        video=f"/api/recordings/{r.id}/video",
    )


def _event(e: EventInfo) -> EventOut:
    # models.event_json leaves out unknown confidence and evidence; the API says null.
    fields = {"confidence": None, "evidence_s": None, **event_json(e)}
    return EventOut(**fields, recording_id=e.recording_id, time=hms(e.start_s))


def _alert(a: AlertInfo) -> AlertOut:
    return AlertOut(
        id=a.id,
        recording_id=a.recording_id,
        rule=a.rule,
        severity=a.severity,
        outcome=a.state,
        fired=a.fired,
        start_s=a.start_s,
        end_s=a.end_s,
        time=hms(a.start_s),
        reason=a.reason,
        why=a.why,
        thumbnail=f"/api/alerts/{a.id}/thumbnail" if a.thumbnail else None,
        verification=dict(a.verification),
    )


def _speech(s: SpeechSegment) -> SpeechOut:
    return SpeechOut(
        **speech_json(s, provenance=True), recording_id=s.recording_id, time=hms(s.start_s)
    )


def _hit(h: Any) -> HitOut:
    if h.speech is not None:
        said = h.speech
        fields: dict[str, Any] = {
            **_speech(said).model_dump(exclude={"language"}),
            "kind": "speech",
            "label": "speech",
            "description": said.text,
            "confidence": None,
            "evidence_s": None,
        }
    else:
        fields = _event(h.event).model_dump()
    return HitOut(
        **fields,
        rank=h.rank,
        score=h.score,
        recording=h.recording_path,
        recording_status=h.recording_status,
        link=h.link,
        page=f"/recordings/{fields['recording_id']}#t={fields['start_s']:g}",
    )


def _timestamp(when: dt.datetime | None) -> float | None:
    if when is None:
        return None
    try:
        return when.timestamp()  # naive: local time, as a person typing a date means it
    except (OverflowError, OSError, ValueError):
        return 0.0 if when.year < 1970 else 1e18


def _media_type(path: str) -> str:
    # Only audio/video types: a recording named page.html must never render as a page here.
    guessed = mimetypes.guess_type(path)[0] or ""
    return guessed if guessed.startswith(("video/", "audio/")) else "application/octet-stream"


# -- middleware -----------------------------------------------------------------------------------


def token_matches(expected: str, given: str) -> bool:
    return hmac.compare_digest(expected.encode(), given.encode())


# A Host header: a name or IPv4 address, or an IPv6 address in brackets, then an optional port.
# Nothing may follow the closing bracket but the port, so "[::1].evil.com" is not "::1".
_HOST = re.compile(r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<name>[^\[\]:@/\s]+))(?::[0-9]{1,5})?")


def _host_name(header: str) -> str:
    """The host part of a Host header, lowercased; "" when the header is not of that form."""
    found = _HOST.fullmatch(header)
    if found is None:
        return ""
    return (found["v6"] or found["name"]).lower()


class Guard(BaseHTTPMiddleware):
    """Host check, bearer (or basic) token, read-only methods, security headers."""

    def __init__(self, app: Any, token: str | None, trusted_hosts: Sequence[str] | None):
        super().__init__(app)
        self.token = token
        self.trusted = {h.lower() for h in trusted_hosts} if trusted_hosts is not None else None

    def _authorized(self, request: Request) -> bool:
        if self.token is None:
            return True
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer":
            return token_matches(self.token, value.strip())
        if scheme.lower() == "basic":
            try:
                decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                return False
            # Browsers ask for a user name and password: the token is the password (any user),
            # so the pages, the video and the script's requests all carry it.
            return token_matches(self.token, decoded.partition(":")[2])
        return False

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        if self.trusted is not None:
            host = _host_name(request.headers.get("host", "")).lower()
            if host not in self.trusted:
                return JSONResponse({"detail": "unknown host"}, status_code=421)
        if request.method not in ("GET", "HEAD"):
            return JSONResponse(
                {"detail": "read-only"}, status_code=405, headers={"Allow": "GET, HEAD"}
            )
        if not self._authorized(request):
            api = request.url.path.startswith(("/api/", "/metrics", "/openapi.json"))
            challenge = (
                'Bearer realm="framewatch"' if api else 'Basic realm="framewatch", charset="UTF-8"'
            )
            return JSONResponse(
                {"detail": "a valid token is required"},
                status_code=401,
                headers={"WWW-Authenticate": challenge},
            )
        response = await call_next(request)
        response.headers.setdefault("Content-Security-Policy", CSP)
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers.setdefault("Cache-Control", "no-store")
        return response


# -- the app --------------------------------------------------------------------------------------


def templates() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("plugins.web", "templates"),
        autoescape=True,  # every {{ value }} is HTML-escaped: event text is untrusted
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["hms"] = hms
    return env


NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": Problem, "description": "No such recording."}
}


def create_app(
    store: ReadStore,
    config: Any = None,
    *,
    token: str | None = None,
    trusted_hosts: Sequence[str] | None = None,
) -> FastAPI:
    """The ASGI app over `store`. `token`: required as `Authorization: Bearer` (or as the
    password of HTTP basic auth, for browsers); `trusted_hosts`: Host names answered (None: any)."""
    app = FastAPI(
        title=API_TITLE,
        summary="Read-only API over framewatch's recordings, events and search.",
        version=_version(),
        docs_url=None,  # Swagger UI would load its script from a CDN; the document is enough
        redoc_url=None,
    )
    app.add_middleware(Guard, token=token, trusted_hosts=trusted_hosts)
    app.mount("/static", StaticFiles(directory=str(files("plugins.web") / "static")), name="static")
    env = templates()
    registry = metrics_registry(store)

    def page(name: str, **context: Any) -> HTMLResponse:
        return HTMLResponse(env.get_template(name).render(**context))

    def recording_or_404(recording_id: int) -> tuple[RecordingInfo, list[ChunkInfo]]:
        try:
            rec = store.recordings.get(recording_id)
        except KeyError:
            raise HTTPException(404, "no such recording") from None
        return rec, store.chunks.of(recording_id)

    def detail(recording_id: int) -> RecordingDetail:
        rec, chunks = recording_or_404(recording_id)
        done = sum(1 for c in chunks if c.status == "done")
        base = _recording(rec, done, len(chunks) or 0)
        return RecordingDetail(
            **base.model_dump(),
            chunks=[
                ChunkOut(
                    index=c.index,
                    start_s=c.start_s,
                    end_s=c.end_s,
                    frames=c.frames,
                    status=c.status,
                    attempts=c.attempts,
                    error=c.error,
                )
                for c in chunks
            ],
        )

    def status() -> StatusOut:
        recs = store.recordings.list()
        counts = {state: 0 for state in ("queued", "analyzing", "done", "failed", "skipped")}
        for r, _, _ in recs:
            counts[r.status] = counts.get(r.status, 0) + 1
        d = store.outbox.counts()
        return StatusOut(
            recordings=counts,
            queue_depth=counts["queued"] + counts["analyzing"],
            chunks_done=sum(done for _, done, _ in recs),
            chunks_total=sum(total for _, _, total in recs),
            running=[
                CurrentChunk(recording_id=r, chunk=i, owner=o, started_at=t)
                for r, i, o, t in store.chunks.running()
            ],
            deliveries=DeliveryCounts(
                **{k: d[k] for k in ("pending", "failed", "dead", "delivered")}
            ),
        )

    def search(
        q: str,
        recording_id: int | None,
        since: dt.datetime | None,
        labels: list[str],
        limit: int,
        offset: int,
    ) -> list[HitOut]:
        hits = store.events.search(
            q,
            recording_id=recording_id,
            since=_timestamp(since),
            labels=labels,
            limit=limit,
            offset=offset,
        )
        return [_hit(h) for h in hits]

    # -- JSON API ------------------------------------------------------------------------------

    @app.get("/api/recordings", tags=["recordings"])
    def list_recordings() -> list[RecordingOut]:
        """Every recording, newest first, with its state and progress (chunks done of total)."""
        return [_recording(r, done, total) for r, done, total in store.recordings.list()]

    @app.get("/api/recordings/{recording_id}", tags=["recordings"], responses=NOT_FOUND)
    def get_recording(recording_id: RecordingId) -> RecordingDetail:
        """One recording with its chunks and their states."""
        return detail(recording_id)

    @app.get("/api/recordings/{recording_id}/events", tags=["events"], responses=NOT_FOUND)
    def recording_events(recording_id: RecordingId) -> list[EventOut]:
        """A recording's events, by start time."""
        recording_or_404(recording_id)
        return [_event(e) for e in store.events.of(recording_id)]

    @app.get("/api/recordings/{recording_id}/alerts", tags=["alerts"], responses=NOT_FOUND)
    def recording_alerts(recording_id: RecordingId) -> list[AlertOut]:
        """A recording's alerts ([[alerts]] rules), by start time, with their outcomes."""
        recording_or_404(recording_id)
        return [_alert(a) for a in store.alerts.of(recording_id)]

    @app.get(
        "/api/alerts/{alert_id}/thumbnail",
        tags=["alerts"],
        response_class=Response,
        responses={
            200: {"content": {"image/jpeg": {}}, "description": "The alert's picture."},
            404: {"model": Problem, "description": "No such alert, or it has no picture."},
        },
    )
    def alert_thumbnail(
        alert_id: Annotated[int, PathParam(ge=1, le=MAX_ID, description="The alert's id.")],
    ) -> Response:
        """The JPEG an alert carries (the frame nearest its moment)."""
        try:
            a = store.alerts.get(alert_id)
        except KeyError:
            raise HTTPException(404, "no such alert") from None
        if not a.thumbnail:
            raise HTTPException(404, "this alert has no picture")
        return Response(a.thumbnail, media_type="image/jpeg")

    @app.get("/api/recordings/{recording_id}/speech", tags=["events"], responses=NOT_FOUND)
    def recording_speech(recording_id: RecordingId) -> list[SpeechOut]:
        """What was said in a recording (`[speech]` on), by start time."""
        recording_or_404(recording_id)
        return [_speech(s) for s in store.speech.of(recording_id)]

    @app.get(
        "/api/recordings/{recording_id}/video",
        tags=["recordings"],
        response_class=FileResponse,
        responses={
            200: {
                "content": {"video/mp4": {}, "application/octet-stream": {}},
                "description": "The whole file.",
            },
            206: {
                "content": {"video/mp4": {}, "application/octet-stream": {}},
                "description": "The requested byte range (HTTP Range).",
            },
            400: {"content": {"text/plain": {}}, "description": "Malformed Range header."},
            404: {
                "model": Problem,
                "description": "No such recording, or its file is gone or changed.",
            },
            416: {"content": {"text/plain": {}}, "description": "Range not satisfiable."},
        },
    )
    def recording_video(recording_id: RecordingId, request: Request) -> Response:
        """The recording's file, for the page's player (seeking uses HTTP Range requests).

        Served from a path the store registered for this recording, opened without following a
        symlink and checked on the open descriptor: a regular file of the registered size and,
        when intake recorded it, the registered device and inode; then streamed from that
        descriptor. A failed or skipped recording serves nothing."""
        try:
            rec = store.recordings.get(recording_id)
            known = store.recordings.files(recording_id)
        except KeyError:
            raise HTTPException(404, "no such recording") from None
        if rec.status not in SERVED_STATES:
            log.info("web_video_refused", recording_id=recording_id, status=rec.status)
            raise HTTPException(404, f"a {rec.status} recording has no video to serve")
        refused = []
        for f in known:
            try:
                opened = open_registered(f.path, f.size, f.file_key)
            except Refused as exc:
                refused.append(f"{f.path} {exc}")
                continue
            return file_response(opened, request.headers, _media_type(f.path))
        log.info("web_video_unavailable", recording_id=recording_id, refused=refused)
        raise HTTPException(404, "the recording's file is gone or was changed")

    @app.get("/api/search", tags=["search"])
    def api_search(
        q: Annotated[
            str,
            Query(
                min_length=1,
                max_length=1000,
                description=('Words (all must occur), "a phrase", -excluded, a or b.'),
            ),
        ],
        recording_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
        since: Annotated[
            dt.datetime | None,
            Query(
                description=(
                    "Only recordings whose file was modified at or after this time (ISO 8601)."
                )
            ),
        ] = None,
        label: Annotated[list[str], Query(max_length=20, description="Only these labels.")] = [],  # noqa: B006
        limit: Annotated[int, Query(ge=1, le=500)] = 20,
        offset: Annotated[int, Query(ge=0, le=100_000)] = 0,
    ) -> SearchOut:
        """Events and speech of every recording matching `q`, best first (full-text, stemmed);
        a speech hit has `kind` "speech"."""
        return SearchOut(query=q, hits=search(q, recording_id, since, label, limit, offset))

    @app.get("/api/status", tags=["status"])
    def api_status() -> StatusOut:
        """Recordings by state, queue depth, chunks being analysed, plugin deliveries."""
        return status()

    @app.get(
        "/metrics",
        tags=["status"],
        response_class=Response,
        responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format."}},
    )
    def metrics() -> Response:
        """Prometheus metrics, computed from the store when scraped."""
        return metrics_response(registry)

    # -- pages ---------------------------------------------------------------------------------

    @app.get("/", include_in_schema=False)
    def index_page() -> HTMLResponse:
        recs = [_recording(r, done, total) for r, done, total in store.recordings.list()]
        return page("index.html.j2", recordings=recs, status=status(), query="")

    @app.get("/recordings/{recording_id}", include_in_schema=False)
    def recording_page(recording_id: RecordingId) -> HTMLResponse:
        rec = detail(recording_id)
        events = [_event(e) for e in store.events.of(recording_id)]
        alerts = [_alert(a) for a in store.alerts.of(recording_id)]
        speech = [_speech(s) for s in store.speech.of(recording_id)]
        ends = [e.end_s for e in events] + [s.end_s for s in speech]
        duration = rec.duration_s or max(ends, default=0.0)
        return page(
            "recording.html.j2",
            rec=rec,
            events=events,
            alerts=alerts,
            speech=speech,
            duration=duration,
            query="",
        )

    @app.get("/search", include_in_schema=False)
    def search_page(
        q: Annotated[str, Query(max_length=1000)] = "",
        label: Annotated[list[str], Query(max_length=20)] = [],  # noqa: B006
    ) -> HTMLResponse:
        hits = search(q, None, None, label, 100, 0) if q.strip() else []
        return page("search.html.j2", hits=hits, query=q)

    @app.exception_handler(StarletteHTTPException)
    async def _problem(request: Request, exc: StarletteHTTPException) -> Response:
        if request.url.path.startswith(("/api/", "/metrics")):
            return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)
        html = env.get_template("error.html.j2").render(
            status=exc.status_code, detail=exc.detail, query=""
        )
        return HTMLResponse(html, status_code=exc.status_code)

    return app


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("framewatch")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "0"
