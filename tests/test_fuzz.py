"""Bounded, reproducible fuzzing (hypothesis: derandomized, a fixed number of examples, no example
database) of what strangers and careless configs reach: the web API's routes, query parameters
and headers over a read-only store, the Range parser, Retry-After, and the config loader's secret
fields. Asserted: never a 500 (an unhandled exception fails the test too: TestClient re-raises
it), never a secret in any output (issue 14)."""

from __future__ import annotations

import base64
import math
import os
import string
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daemon.config import ConfigError, load_config
from daemon.identity import fingerprint
from daemon.store import Store
from plugins import web
from plugins.web.app import create_app
from plugins.web.video import BadRange, byte_ranges
from plugins.webhook import _retry_after
from tests.eventdata import CAMERA, LECTURE, populate, ts
from tests.media import make_video
from tests.outbox import manager

FUZZ = settings(
    max_examples=int(os.environ.get("FW_FUZZ_EXAMPLES", "150")),
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
TOKEN = "tok-Zq8Xv4LmW2pR7sN1"  # what must never come back
BASIC = "Basic " + base64.b64encode(f"anyone:{TOKEN}".encode()).decode()


# -- the web API ---------------------------------------------------------------------------------


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[TestClient, dict[str, int], bytes]]:
    """The app as `framewatch serve` runs it: a token, loopback host names only, and a read-only
    store (a route that tried to write would fail, and show up here as an error)."""
    video = make_video(tmp_path / "camera.mp4", seconds=2.0, size=(64, 36))
    writer = Store(f"sqlite:///{tmp_path / 'fw.db'}")
    populate(writer, tmp_path / "lecture.mp4", LECTURE, chunk_s=1800, mtime=ts("2024-01-10"))
    fid = fingerprint(video)
    cam, _ = writer.recordings.register(
        str(video), fid.fingerprint, fid.size, fid.mtime, "general", file_key=fid.file_key
    )
    writer.recordings.set_status(cam.id, "done", duration_s=2.0)
    bad = tmp_path / "junk.mp4"
    bad.write_bytes(b"junk" * 10)
    failed = populate(writer, bad, CAMERA, chunk_s=600, size=40, finish="failed")
    writer.close()
    store = Store(f"sqlite:///{tmp_path / 'fw.db'}", read_only=True)
    app = create_app(store, token=TOKEN, trusted_hosts=web.LOOPBACK_NAMES)
    ids = {"camera": cam.id, "failed": failed.id}
    try:
        yield TestClient(app, base_url="http://localhost"), ids, video.read_bytes()
    finally:
        store.close()


ROUTES = (
    "/api/recordings",
    "/api/recordings/{id}",
    "/api/recordings/{id}/events",
    "/api/recordings/{id}/video",
    "/api/search",
    "/api/status",
    "/metrics",
    "/openapi.json",
    "/",
    "/recordings/{id}",
    "/search",
    "/static/{id}",
    "/{id}",
)
PARAMS = ("q", "recording_id", "since", "label", "limit", "offset", "x")
header_text = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=40)
anything = st.one_of(
    st.text(max_size=30),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.sampled_from(["", "0", "1", "-1", "9" * 400, "2024-01-01", "2024-13-45T99:99", "nan"]),
)


range_header = st.one_of(
    header_text,
    st.lists(
        st.tuples(
            st.one_of(st.none(), st.integers(0, 5000)), st.one_of(st.none(), st.integers(0, 5000))
        ),
        min_size=1,
        max_size=4,
    ).map(
        lambda rs: (
            "bytes=" + ",".join(f"{'' if a is None else a}-{'' if b is None else b}" for a, b in rs)
        )
    ),
)


def often(draw: st.DrawFn, usual: st.SearchStrategy[Any], other: st.SearchStrategy[Any]) -> Any:
    """Mostly a usual value (so requests get past the guard and reach the routes), sometimes not."""
    return draw(usual if draw(st.integers(0, 9)) < 8 else other)


@st.composite
def requests(draw: st.DrawFn, ids: dict[str, int]) -> dict[str, Any]:
    path = draw(st.sampled_from(ROUTES))
    rid = often(
        draw, st.sampled_from([str(i) for i in ids.values()]), st.one_of(anything, st.just("..%2f"))
    )
    path = path.replace("{id}", quote(rid, safe="") or "0")
    params = draw(st.lists(st.tuples(st.sampled_from(PARAMS), anything), max_size=6))
    auth = often(
        draw,
        st.sampled_from([f"Bearer {TOKEN}", BASIC]),
        st.sampled_from([f"Bearer {TOKEN[:-1]}", "Bearer ", "Basic !!!", "", f"bearer {TOKEN}x"]),
    )
    headers = {"Authorization": auth} if auth else {}
    headers["Host"] = often(
        draw,
        st.sampled_from(["localhost", "127.0.0.1:8765", "[::1]:1", "LOCALHOST"]),
        st.one_of(st.sampled_from(["[::1].evil.com", "localhost.evil.com", "x"]), header_text),
    )
    if draw(st.booleans()):
        headers["Range"] = draw(range_header)
    if draw(st.booleans()):
        headers["If-Range"] = draw(header_text)
    method = often(draw, st.just("GET"), st.sampled_from(["HEAD", "POST", "DELETE", "OPTIONS"]))
    return {"method": method, "url": path, "params": params, "headers": headers}


def test_fuzz_web_api_no_500_and_no_token(
    served: tuple[TestClient, dict[str, int], bytes],
) -> None:
    client, ids, video = served

    @FUZZ
    @given(req=requests(ids))
    def check(req: dict[str, Any]) -> None:
        r = client.request(**req)
        assert r.status_code < 500, (req, r.status_code, r.text[:300])
        assert TOKEN not in r.text and TOKEN not in repr(r.headers)
        host_ok = web.app._host_name(req["headers"]["Host"]) in web.LOOPBACK_NAMES
        authorized = req["headers"].get("Authorization") in (f"Bearer {TOKEN}", BASIC)
        if not host_ok:
            assert r.status_code == 421
        elif req["method"] not in ("GET", "HEAD"):
            assert r.status_code == 405
        elif not authorized:
            assert r.status_code == 401
        if r.status_code == 206 and "content-range" in r.headers:  # one range: its bytes
            unit, _, span = r.headers["content-range"].partition(" ")
            first, last = (int(x) for x in span.split("/")[0].split("-"))
            assert unit == "bytes" and r.content == video[first : last + 1]
        if r.status_code in (200, 206) and req["url"].endswith("/video"):
            assert req["url"] == f"/api/recordings/{ids['camera']}/video"  # never the failed one

    check()


def test_fuzz_video_ranges_serve_the_file_s_own_bytes(
    served: tuple[TestClient, dict[str, int], bytes],
) -> None:
    """Whatever the Range and If-Range headers, the answer is the file, part of it (each part
    the file's bytes at the offsets it names), or a 400/416; never anything else."""
    client, ids, video = served
    url = f"/api/recordings/{ids['camera']}/video"
    auth = {"Authorization": f"Bearer {TOKEN}"}

    @FUZZ
    @given(rng=range_header, if_range=st.one_of(st.none(), header_text))
    def check(rng: str, if_range: str | None) -> None:
        headers = (
            {**auth, "Range": rng}
            if if_range is None
            else {**auth, "Range": rng, "If-Range": if_range}
        )
        r = client.get(url, headers=headers)
        assert r.status_code in (200, 206, 400, 416), (rng, r.status_code)
        if r.status_code == 200:
            assert r.content == video
        elif r.status_code == 416:
            assert r.headers["content-range"] == f"bytes */{len(video)}"
        elif r.status_code == 206:
            assert int(r.headers["content-length"]) == len(r.content)
            ctype = r.headers["content-type"]
            if ctype.startswith("multipart/byteranges"):
                boundary = ctype.split("boundary=")[1].encode()
                parts = r.content.split(b"--" + boundary)
                assert parts[0] == b"" and parts[-1] == b"--"
                for part in parts[1:-1]:
                    head, _, body = part.partition(b"\r\n\r\n")
                    span = head.split(b"Content-Range: bytes ")[1].split(b"/")[0]
                    first, last = (int(x) for x in span.split(b"-"))
                    assert body == video[first : last + 1] + b"\r\n"
            else:
                span = r.headers["content-range"].removeprefix("bytes ").split("/")[0]
                first, last = (int(x) for x in span.split("-"))
                assert r.content == video[first : last + 1]

    check()


# -- the Range header and Retry-After, as pure functions ------------------------------------------


@FUZZ
@given(header=st.one_of(header_text, st.text(max_size=60)), size=st.integers(0, 10_000))
def test_fuzz_range_header(header: str, size: int) -> None:
    try:
        ranges = byte_ranges(header, size)
    except BadRange as exc:
        assert exc.status in (400, 416)
        return
    for start, end in ranges:
        assert 0 <= start < end <= size
    assert ranges == sorted(ranges)
    assert all(a[1] < b[0] for a, b in zip(ranges, ranges[1:], strict=False))


@FUZZ
@given(
    value=st.one_of(
        st.none(),
        st.text(max_size=40),
        st.integers(min_value=0, max_value=10**500).map(str),
        st.datetimes().map(lambda d: d.strftime("%a, %d %b %Y %H:%M:%S GMT")),
    )
)
def test_fuzz_retry_after(value: str | None) -> None:
    got = _retry_after(value)
    assert got is None or (math.isfinite(got) and got >= 0)
    if value and value.strip().isdigit() and not value.strip().isascii():
        assert got is None  # "²", "٣": digits to Python, not to HTTP


# -- the config loader's secret fields -----------------------------------------------------------

SECRET_KEYS = ("token", "secret", "password", "api_key", "apikey", "key", "tokn", "secert")
secret_value = st.text(alphabet=string.ascii_letters + string.digits, min_size=6, max_size=16).map(
    lambda s: "SK9" + s
)


@st.composite
def configs(draw: st.DrawFn) -> tuple[str, list[str]]:
    """A config.toml with secrets in every place one may sit, and the secrets."""
    secrets: list[str] = []

    def secret() -> str:
        value = draw(secret_value)
        secrets.append(value)
        return value

    def toml(value: Any) -> str:
        if isinstance(value, dict):
            return "{" + ", ".join(f"{k} = {toml(v)}" for k, v in value.items()) + "}"
        if isinstance(value, list):
            return "[" + ", ".join(toml(v) for v in value) + "]"
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, int | float):
            return repr(value)
        return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'

    tables: dict[str, dict[str, Any]] = {}
    if draw(st.booleans()):
        t: dict[str, Any] = {"token": secret()}
        if draw(st.booleans()):
            t["token_file"] = "/etc/framewatch/web-token"
        if draw(st.booleans()):
            t["port"] = draw(st.sampled_from([0, 8765, -1, 70000, "x"]))
        if draw(st.booleans()):
            t[draw(st.sampled_from(SECRET_KEYS[4:]))] = secret()
        tables["web"] = t
    if draw(st.booleans()):
        scheme = draw(st.sampled_from(["https", "http", "ftp"]))
        user = f"u:{secret()}@" if draw(st.booleans()) else ""
        query = f"?apikey={secret()}" if draw(st.booleans()) else ""
        w: dict[str, Any] = {"url": f"{scheme}://{user}hooks.example/h{query}"}
        if draw(st.booleans()):
            w["secret"] = draw(
                st.sampled_from(["whsec_", "", "whsec_MTIzNDU2Nzg5MDEyMzQ1Njc4OTA="])
            ) + (secret() if draw(st.booleans()) else "")
        if draw(st.booleans()):
            w["secret_file"] = "s"
        if draw(st.booleans()):
            w["timeout_s"] = draw(st.sampled_from([1, 0, 301, "x"]))
        tables["webhook"] = w
    if draw(st.booleans()) or not tables:
        name = draw(st.sampled_from(["notinstalled", "slack", "x"]))
        nested: dict[str, Any] = {draw(st.sampled_from(SECRET_KEYS)): secret()}
        if draw(st.booleans()):
            nested["inner"] = {draw(st.sampled_from(SECRET_KEYS)): [secret()]}
        if draw(st.booleans()):
            nested["url"] = f"https://a:{secret()}@x.example/p?k={secret()}"
        tables[name] = nested
    text = "".join(
        f"[plugins.{name}]\n" + "".join(f"{k} = {toml(v)}\n" for k, v in t.items()) + "\n"
        for name, t in tables.items()
    )
    return text, secrets


def test_fuzz_config_secrets_never_shown(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"

    @FUZZ
    @given(case=configs())
    def check(case: tuple[str, list[str]]) -> None:
        text, secrets = case
        tomllib.loads(text)  # the generator writes valid TOML
        path.write_text(text)
        shown = ""
        try:
            pm = manager(load_config(path))
            shown = repr(pm.settings) + repr([e.as_dict() for e in pm.entries()])
        except ConfigError as exc:
            # What `framewatch config check` prints (daemon/cli/__init__.py), and the exception itself.
            shown = str(exc) + "".join(
                f"framewatch: config error: {exc.path or ''}: {key}: {msg} (got {value!r})\n"
                for key, value, msg in exc.errors
            )
        for s in secrets:
            assert s not in shown, (s, shown)

    check()
