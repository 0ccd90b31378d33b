"""The web plugin's read-only API: endpoints, the video stream with Range, auth, escaping, the
plugin's startup/shutdown and `framewatch serve`, and conformance to its own OpenAPI document."""

from __future__ import annotations

import base64
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given, settings

from daemon.config import ConfigError
from daemon.store import Store
from plugins import web
from plugins.web.app import create_app
from tests.eventdata import CAMERA, LECTURE, ev, populate, ts
from tests.media import make_video
from tests.outbox import HOSTILE, make_config, manager
from tests.services import free_port


@pytest.fixture
def video(tmp_path: Path) -> Path:
    return make_video(tmp_path / "camera.mp4", seconds=2.0, size=(64, 36))


@pytest.fixture
def store(tmp_path: Path, video: Path) -> Iterator[Store]:
    s = Store(f"sqlite:///{tmp_path / 'fw.db'}")
    populate(s, tmp_path / "lecture.mp4", LECTURE, chunk_s=1800, mtime=ts("2024-01-10"))
    populate(s, video, CAMERA, chunk_s=600, mtime=ts("2024-03-01"), size=video.stat().st_size)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def client(store: Store) -> TestClient:
    return TestClient(create_app(store))


def camera_id(store: Store, video: Path) -> int:
    rec = store.recordings.find(str(video))
    assert rec is not None
    return rec.id


def test_recordings_status_and_events(client: TestClient, store: Store, video: Path) -> None:
    recs = client.get("/api/recordings").json()
    assert [r["name"] for r in recs] == ["camera.mp4", "lecture.mp4"]
    assert recs[0]["status"] == "done" and recs[0]["chunks_done"] == recs[0]["chunks_total"] == 1
    rid = camera_id(store, video)
    one = client.get(f"/api/recordings/{rid}").json()
    assert one["video"] == f"/api/recordings/{rid}/video" and one["chunks"][0]["status"] == "done"
    events = client.get(f"/api/recordings/{rid}/events").json()
    assert [e["label"] for e in events] == [e.label for e in CAMERA[0]]
    assert events[1]["time"] == "00:00:30" and events[1]["provenance"]["prompt_hash"] == "p1"
    status = client.get("/api/status").json()
    assert status["recordings"]["done"] == 2 and status["queue_depth"] == 0
    assert status["chunks_done"] == status["chunks_total"] == 3
    assert client.get("/api/recordings/999").status_code == 404
    assert client.get("/api/recordings/999/events").status_code == 404


def test_search_endpoint(client: TestClient, store: Store, video: Path) -> None:
    body = client.get("/api/search", params={"q": "red alarm"}).json()
    assert body["query"] == "red alarm"
    assert [h["label"] for h in body["hits"]][2:] == ["slide"]
    top = body["hits"][0]
    assert top["page"] == f"/recordings/{top['recording_id']}#t={top['start_s']:g}"
    assert top["link"].startswith("file://") and top["provenance"]["model"]
    rid = camera_id(store, video)
    only = client.get(
        "/api/search", params={"q": "red", "recording_id": rid, "label": ["vehicle"]}
    ).json()
    assert [h["label"] for h in only["hits"]] == ["vehicle"]
    since = client.get("/api/search", params={"q": "alarm", "since": "2024-02-01T00:00:00"}).json()
    assert [h["label"] for h in since["hits"]] == ["Red Alarm"]
    assert client.get("/api/search", params={"q": ""}).status_code == 422


def test_video_streams_with_range(client: TestClient, store: Store, video: Path) -> None:
    url = f"/api/recordings/{camera_id(store, video)}/video"
    data = video.read_bytes()
    whole = client.get(url)
    assert whole.status_code == 200 and whole.content == data
    assert whole.headers["content-type"] == "video/mp4"
    assert whole.headers["accept-ranges"] == "bytes"
    part = client.get(url, headers={"Range": "bytes=100-199"})
    assert part.status_code == 206 and part.content == data[100:200]
    assert part.headers["content-range"] == f"bytes 100-199/{len(data)}"
    tail = client.get(url, headers={"Range": "bytes=-16"})
    assert tail.status_code == 206 and tail.content == data[-16:]
    assert client.get(url, headers={"Range": f"bytes={len(data) + 10}-"}).status_code == 416
    assert client.get(url, headers={"Range": "lines=1-2"}).status_code == 400


def test_video_only_from_a_stored_path_of_the_stored_size(
    client: TestClient, store: Store, video: Path, tmp_path: Path
) -> None:
    rid = camera_id(store, video)
    url = f"/api/recordings/{rid}/video"
    alias = tmp_path / "renamed.mp4"
    shutil.copy(video, alias)
    store.recordings.register(
        str(alias), f"fp:{video}", video.stat().st_size, 0.0
    )  # same bytes, new name
    video.unlink()
    assert client.get(url).content == alias.read_bytes()  # served from the other known name
    with alias.open("ab") as f:
        f.write(b"changed")  # not the recording's bytes any more
    assert client.get(url).status_code == 404
    # The lecture was never a file here: nothing to stream, and no parameter names a path.
    lecture = store.recordings.find(str(tmp_path / "lecture.mp4"))
    assert lecture is not None
    assert client.get(f"/api/recordings/{lecture.id}/video").status_code == 404


def test_nothing_writes(client: TestClient, store: Store) -> None:
    before = client.get("/api/search", params={"q": "red"}).json()
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        for path in ("/", "/api/recordings", "/api/recordings/1", "/api/search", "/metrics"):
            assert client.request(method, path).status_code == 405
    assert client.get("/api/search", params={"q": "red"}).json() == before
    spec = client.get("/openapi.json").json()
    methods = {m for ops in spec["paths"].values() for m in ops}
    assert methods == {"get"}
    assert set(spec["paths"]) == {
        "/api/recordings",
        "/api/recordings/{recording_id}",
        "/api/recordings/{recording_id}/events",
        "/api/recordings/{recording_id}/speech",
        "/api/recordings/{recording_id}/video",
        "/api/search",
        "/api/status",
        "/metrics",
    }


def test_token_as_bearer_or_basic_password(store: Store) -> None:
    client = TestClient(create_app(store, token="s3cret"))
    r = client.get("/api/status")
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
    page = client.get("/")
    assert page.status_code == 401 and page.headers["www-authenticate"].startswith("Basic")
    assert client.get("/api/status", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/api/status", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    basic = base64.b64encode(b"anyone:s3cret").decode()
    assert client.get("/", headers={"Authorization": f"Basic {basic}"}).status_code == 200
    assert client.get("/static/timeline.js").status_code == 401
    assert client.get("/", headers={"Authorization": "Basic !!!"}).status_code == 401


def test_only_loopback_host_names_when_bound_to_loopback(store: Store) -> None:
    client = TestClient(create_app(store, trusted_hosts=web.LOOPBACK_NAMES))
    assert client.get("/api/status", headers={"Host": "evil.example:8765"}).status_code == 421
    for host in ("127.0.0.1:8765", "localhost", "[::1]:8765"):
        assert client.get("/api/status", headers={"Host": host}).status_code == 200


def test_pages_escape_event_text_and_set_csp(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'hostile.db'}")
    rec = populate(
        store,
        tmp_path / "x.mp4",
        [[ev(1 + i, 2 + i, h[:40], h + " zebra") for i, h in enumerate(HOSTILE)]],
    )
    client = TestClient(create_app(store))
    for url in (f"/recordings/{rec.id}", "/search?q=zebra", "/"):
        r = client.get(url)
        assert r.status_code == 200, url
        assert "<script>alert" not in r.text and "<b>&amp;</b>" not in r.text
        assert "script-src 'self'" in r.headers["content-security-policy"]
        assert r.headers["x-content-type-options"] == "nosniff"
    page = client.get(f"/recordings/{rec.id}").text
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; zebra" in page
    echoed = client.get("/search", params={"q": "<script>alert(1)</script>"}).text
    assert "<script>alert" not in echoed and "&lt;script&gt;alert(1)" in echoed
    store.close()


def test_settings_are_validated_with_key_paths(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        manager(make_config(tmp_path, {"web": {"prot": 1, "port": 70000}}))
    assert {k for k, _, _ in exc.value.errors} == {"plugins.web.prot", "plugins.web.port"}
    with pytest.raises(ConfigError) as exc:
        manager(make_config(tmp_path, {"web": {"token": "a", "token_file": "t"}}))
    assert [(k, m) for k, _, m in exc.value.errors] == [
        ("plugins.web", "Value error, set token or token_file, not both")
    ]
    pm = manager(make_config(tmp_path, {"web": {"token_file": "token.txt", "port": 0}}))
    settings = pm.settings["web"]
    assert settings.token_file == tmp_path / "token.txt"  # type: ignore[union-attr]
    with pytest.raises(RuntimeError, match="cannot read the token"):
        web.build(None, None, settings)  # type: ignore[arg-type]
    (tmp_path / "token.txt").write_text("tok\n")
    assert web.resolve_token(settings) == "tok"  # type: ignore[arg-type]


def test_credentials_directory_token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / web.CREDENTIAL).write_text("from-systemd\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    assert web.resolve_token(web.WebSettings()) == "from-systemd"


def _get(url: str, timeout: float = 5) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status, r.read()


def test_plugin_serves_between_startup_and_shutdown(tmp_path: Path, store: Store) -> None:
    pm = manager(make_config(tmp_path, {"web": {"port": 0}}))
    assert "web" in pm.names() and pm.hooks_of("web") == (
        "register_commands",
        "register_settings",
        "shutdown",
        "startup",
    )
    app = SimpleNamespace(config=pm.config, store=store)
    pm.startup(app)
    try:
        url = web._servers[id(app)].url
        status, body = _get(url + "/api/status")
        assert status == 200 and b'"queue_depth":0' in body
        assert b"framewatch_recordings" in _get(url + "/metrics")[1]
    finally:
        pm.shutdown(app)
    assert id(app) not in web._servers
    with pytest.raises(urllib.error.URLError):
        _get(url + "/api/status", timeout=2)


def test_busy_port_is_a_clear_error(tmp_path: Path, store: Store) -> None:
    server = web.WebServer(create_app(store), "127.0.0.1", 0)
    server.start()
    try:
        other = web.WebServer(create_app(store), "127.0.0.1", server.port)
        with pytest.raises(RuntimeError, match=f"cannot listen on 127.0.0.1:{server.port}"):
            other.start()
    finally:
        server.stop()


def test_serve_command(tmp_path: Path, store: Store) -> None:
    port = free_port()
    conf = tmp_path / "config.toml"
    conf.write_text('[storage]\nurl = "sqlite:///fw.db"\n\n[plugins.web]\nport = 1\n')
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.Popen(
        [sys.executable, "-m", "daemon.cli", "serve", "--config", str(conf), "--port", str(port)],
        cwd=root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                status, body = _get(f"http://127.0.0.1:{port}/api/recordings", timeout=2)
                break
            except (urllib.error.URLError, ConnectionError):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(proc.communicate()[1].decode()) from None
                time.sleep(0.1)
        assert status == 200 and b"camera.mp4" in body
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err.decode()
    assert f"serving http://127.0.0.1:{port}" in err.decode()


# -- the API against its own OpenAPI document -------------------------------------------------


def test_api_conforms_to_its_openapi_document(store: Store, video: Path) -> None:
    """schemathesis generates requests for every operation from /openapi.json and checks each
    answer (status, content type, body schema) against the document; a few examples each."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(store))
    rid = camera_id(store, video)
    checked = []
    for result in schema.get_all_operations():
        operation = result.ok()
        strategy = operation.as_strategy()
        if "{recording_id}" in operation.path:  # also a recording that exists, not only 404s
            strategy = strategy | operation.as_strategy().map(lambda c: _with_id(c, rid))

        @given(case=strategy)
        @settings(
            max_examples=int(os.environ.get("FW_SCHEMA_EXAMPLES", "6")),
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
            phases=[Phase.explicit, Phase.generate],
        )
        def check(case: schemathesis.Case) -> None:
            case.call_and_validate()

        check()
        checked.append(operation.label)
    assert len(checked) == 8, checked


def _with_id(case: schemathesis.Case, recording_id: int) -> schemathesis.Case:
    case.path_parameters = {**(case.path_parameters or {}), "recording_id": recording_id}
    return case
