"""The web plugin's ASGI app: read-only JSON API, HTML pages, the video stream and /metrics.

Every route is a GET that reads the store. Two routes read a file, never a path taken from the
request: the video streams a stored recording (a path the store registered for that recording,
still the regular file of the size, device and inode it was registered with: video.py), and an
event's thumbnail is read from the media folder at a path made of its stored ids (no link
followed, a regular file). Model text is untrusted: pages are
rendered with Jinja2 autoescaping and the script only ever writes text with `textContent`; a
Content-Security-Policy allows scripts from this server alone.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hmac
import re
from collections.abc import Sequence
from importlib.resources import files
from typing import Annotated, Any

import jinja2
import structlog
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint

from daemon.models import (
    ChunkInfo,
    EventInfo,
    RecordingInfo,
    hms,
    thumbnail_path,
)
from plugins.web.metrics import metrics_registry, metrics_response
from plugins.web.schema import (
    AlertOut,
    ChunkOut,
    CurrentChunk,
    DeliveryCounts,
    EventOut,
    HitOut,
    Problem,
    ReadStore,
    RecordingDetail,
    RecordingOut,
    SearchOut,
    SpeechOut,
    StatusOut,
    alert_out,
    event_out,
    hit_out,
    media_type,
    recording_out,
    speech_out,
    summary_out,
    timestamp_of,
)
from plugins.web.video import (
    SERVED_STATES,
    Refused,
    file_response,
    open_registered,
    read_picture,
)

log = structlog.get_logger(__name__)


API_TITLE = "framewatch"
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "media-src 'self'; connect-src 'self'; form-action 'self'; base-uri 'none'; "
    "frame-ancestors 'none'"
)
# Ids fit a JavaScript number (and print without an exponent, which int parsing refuses).
MAX_ID = 2**53
RecordingId = Annotated[int, PathParam(ge=1, le=MAX_ID, description="The recording's id.")]


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
    public_url: str | None = None,
) -> FastAPI:
    """The ASGI app over `store`. `token`: required as `Authorization: Bearer` (or as the
    password of HTTP basic auth, for browsers); `trusted_hosts`: Host names answered (None: any);
    `public_url`: the base URL others reach this server at (API links are absolute under it)."""
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
    # Event thumbnails live in the store's media folder (Config.media_dir, daemon/thumbnails.py).
    media = config.media_dir() if config is not None and hasattr(config, "media_dir") else None
    base_url = (public_url or "").rstrip("/")

    def picture(e: EventInfo) -> Any:
        """The path of an event's thumbnail (built from stored ids only), or None."""
        if media is None or e.id is None:
            return None
        return thumbnail_path(media, e.recording_id, e.id)

    def thumbnail_url(e: EventInfo) -> str | None:
        path = picture(e)
        if path is None or not path.is_file():
            return None
        return f"{base_url}/api/events/{e.id}/thumbnail"

    def events_out(recording_id: int) -> list[EventOut]:
        return [event_out(e, thumbnail_url(e)) for e in store.events.of(recording_id)]

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
        summary = summary_out(store.summaries.get(recording_id))  # None when there is none
        done = sum(1 for c in chunks if c.status == "done")
        base = recording_out(rec, done, len(chunks) or 0)
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
            summary=summary,
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
            since=timestamp_of(since),
            labels=labels,
            limit=limit,
            offset=offset,
        )
        return [hit_out(h, thumbnail_url(h.event) if h.event is not None else None) for h in hits]

    # -- JSON API ------------------------------------------------------------------------------

    @app.get("/api/recordings", tags=["recordings"])
    def list_recordings() -> list[RecordingOut]:
        """Every recording, newest first, with its state and progress (chunks done of total)."""
        return [recording_out(r, done, total) for r, done, total in store.recordings.list()]

    @app.get("/api/recordings/{recording_id}", tags=["recordings"], responses=NOT_FOUND)
    def get_recording(recording_id: RecordingId) -> RecordingDetail:
        """One recording with its chunks and their states, and its summary and chapters (null
        when it has none)."""
        return detail(recording_id)

    @app.get("/api/recordings/{recording_id}/events", tags=["events"], responses=NOT_FOUND)
    def recording_events(recording_id: RecordingId) -> list[EventOut]:
        """A recording's events, by start time."""
        recording_or_404(recording_id)
        return events_out(recording_id)

    @app.get(
        "/api/events/{event_id}/thumbnail",
        tags=["events"],
        response_class=Response,
        responses={
            200: {"content": {"image/jpeg": {}}, "description": "The event's picture."},
            404: {"model": Problem, "description": "No such event, or it has no picture."},
        },
    )
    def event_thumbnail(
        event_id: Annotated[int, PathParam(ge=1, le=MAX_ID, description="The event's id.")],
    ) -> Response:
        """The JPEG of an event: the frame nearest its evidence time, saved when its chunk was
        analysed. Read from the media folder at a path made of the stored ids, never from the
        request's text."""
        try:
            e = store.events.get(event_id)
        except KeyError:
            raise HTTPException(404, "no such event") from None
        path = picture(e)
        data = read_picture(path) if path is not None else None
        if data is None:
            raise HTTPException(404, "this event has no picture")
        return Response(data, media_type="image/jpeg")

    @app.get("/api/recordings/{recording_id}/alerts", tags=["alerts"], responses=NOT_FOUND)
    def recording_alerts(recording_id: RecordingId) -> list[AlertOut]:
        """A recording's alerts ([[alerts]] rules), by start time, with their outcomes."""
        recording_or_404(recording_id)
        return [alert_out(a) for a in store.alerts.of(recording_id)]

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
        return [speech_out(s) for s in store.speech.of(recording_id)]

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
            return file_response(opened, request.headers, media_type(f.path))
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
        recs = [recording_out(r, done, total) for r, done, total in store.recordings.list()]
        return page("index.html.j2", recordings=recs, status=status(), query="")

    @app.get("/recordings/{recording_id}", include_in_schema=False)
    def recording_page(recording_id: RecordingId) -> HTMLResponse:
        rec = detail(recording_id)
        events = events_out(recording_id)
        alerts = [alert_out(a) for a in store.alerts.of(recording_id)]
        speech = [speech_out(s) for s in store.speech.of(recording_id)]
        ends = [e.end_s for e in events] + [s.end_s for s in speech]
        duration = rec.duration_s or max(ends, default=0.0)
        return page(
            "recording.html.j2",
            rec=rec,
            events=events,
            alerts=alerts,
            speech=speech,
            summary=rec.summary,
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
