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
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given, settings
from sqlalchemy import text

from daemon.config import ConfigError
from daemon.identity import fingerprint
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
        "/api/events/{event_id}/thumbnail",
        "/api/recordings/{recording_id}/alerts",
        "/api/alerts/{alert_id}/thumbnail",
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


def test_host_check_takes_exact_loopback_names_only(store: Store) -> None:
    """DNS rebinding: a name under the attacker's control that merely starts or ends like a
    loopback name resolves to this machine but is not one (issue 14, item 10)."""
    client = TestClient(create_app(store, trusted_hosts=web.LOOPBACK_NAMES))
    for host in (
        "[::1].evil.com",
        "[::1]evil.com:8765",
        "[::1]:8765.evil.com",
        "127.0.0.1.evil.com",
        "localhost.evil.com:8765",
        "evil.com#@localhost",
        "localhost@evil.com",
        "localhost:8765:1",
        "localhost:",
        "[::1",
        "::1",
        "127.0.0.1.",
        "",
    ):
        r = client.get("/api/status", headers={"Host": host})
        assert r.status_code == 421 and r.json() == {"detail": "unknown host"}, host
    for host in ("localhost:8765", "LOCALHOST", "127.0.0.1", "[::1]", "[::1]:1"):
        assert client.get("/api/status", headers={"Host": host}).status_code == 200, host
    # Not bound to loopback (trusted_hosts None): the token, not the name, is the guard.
    assert (
        TestClient(create_app(store))
        .get("/api/status", headers={"Host": "[::1].evil.com"})
        .status_code
        == 200
    )


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
    assert len(checked) == 11, checked


def _with_id(case: schemathesis.Case, recording_id: int) -> schemathesis.Case:
    case.path_parameters = {**(case.path_parameters or {}), "recording_id": recording_id}
    return case


# -- the video route against a file swapped after intake (issue 14) -------------------------------


def _intake(store: Store, path: Path) -> int:
    """Register `path` as Worker.ingest does: content fingerprint, size, mtime and the device and
    inode of the descriptor it hashed (identity.fingerprint)."""
    fid = fingerprint(path)
    rec, _ = store.recordings.register(
        str(path), fid.fingerprint, fid.size, fid.mtime, "general", file_key=fid.file_key
    )
    return rec.id


def _swap_for_symlink(path: Path, target: Path) -> None:
    """Atomically replace `path` by a symlink to `target` (what a writer of the folder can do)."""
    link = path.with_name(path.name + ".swap")
    link.symlink_to(target)
    os.replace(link, path)


@pytest.mark.parametrize("registered_key", [True, False], ids=["file_key", "before_0004"])
def test_video_symlink_swap_to_a_secret_of_the_same_size_is_refused(
    tmp_path: Path, registered_key: bool
) -> None:
    secret = tmp_path / "web-token"
    secret.write_text("token-" + "k" * 40 + "\n")
    store = Store(f"sqlite:///{tmp_path / 'fw.db'}")
    try:
        clip = tmp_path / "clip.mp4"
        clip.write_bytes(b"\x00" * secret.stat().st_size)  # any bytes, the secret's size
        rid = _intake(store, clip)
        if not registered_key:  # a row registered before revision 0004 has no device:inode
            with store.db.session() as s:
                s.exec(text("UPDATE recording_path SET file_key = NULL"))  # type: ignore[call-overload]
        store.recordings.set_status(rid, "done")
        client = TestClient(create_app(store, token="tok"))
        auth = {"Authorization": "Bearer tok"}
        url = f"/api/recordings/{rid}/video"
        assert client.get(url, headers=auth).content == clip.read_bytes()

        _swap_for_symlink(clip, secret)
        assert clip.stat().st_size == os.lstat(secret).st_size  # same size through the link
        r = client.get(url, headers=auth)
        assert r.status_code == 404 and "token-" not in r.text
        assert r.json() == {"detail": "the recording's file is gone or was changed"}
        ranged = client.get(url, headers={**auth, "Range": "bytes=0-5"})
        assert ranged.status_code == 404 and "token" not in ranged.text

        # The issue's own example: a link to /etc/passwd, with a recording of its size.
        passwd = Path("/etc/passwd")
        other = tmp_path / "other.mp4"
        other.write_bytes(b"\x01" * passwd.stat().st_size)
        oid = _intake(store, other)
        store.recordings.set_status(oid, "done")
        _swap_for_symlink(other, passwd)
        r = client.get(f"/api/recordings/{oid}/video", headers=auth)
        assert r.status_code == 404 and "root:" not in r.text
    finally:
        store.close()


def test_video_another_file_of_the_same_size_is_refused(tmp_path: Path, video: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'fw.db'}")
    try:
        rid = _intake(store, video)
        store.recordings.set_status(rid, "done")
        client = TestClient(create_app(store))
        url = f"/api/recordings/{rid}/video"
        assert client.get(url).content == video.read_bytes()
        # Same size, a regular file, not a link; another inode: not the registered file.
        impostor = tmp_path / "impostor"
        impostor.write_bytes(b"\xff" * video.stat().st_size)
        os.replace(impostor, video)
        assert client.get(url).status_code == 404
        # A symlinked folder above the file (O_NOFOLLOW covers only the last component) leads
        # to another inode as well.
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        real = make_video(elsewhere / "camera.mp4", seconds=2.0, size=(64, 36))
        linked = tmp_path / "linked"
        linked.symlink_to(elsewhere)
        store.recordings.register(
            str(linked / "camera.mp4"), "fp:other", real.stat().st_size, 0.0, file_key="1:1"
        )
        other = store.recordings.find(str(linked / "camera.mp4"))
        assert other is not None
        store.recordings.set_status(other.id, "done")
        assert client.get(f"/api/recordings/{other.id}/video").status_code == 404
    finally:
        store.close()


@pytest.mark.parametrize("state", ["failed", "skipped"])
def test_video_of_a_failed_recording_serves_nothing(tmp_path: Path, state: str) -> None:
    store = Store(f"sqlite:///{tmp_path / 'fw.db'}")
    try:
        junk = tmp_path / "notes.mp4"
        junk.write_bytes(b"not a video at all, but a file all the same\n")
        rid = _intake(store, junk)
        store.recordings.set_status(rid, state, "not a media file")
        client = TestClient(create_app(store))
        r = client.get(f"/api/recordings/{rid}/video")
        assert r.status_code == 404 and "not a video" not in r.text
        assert r.json() == {"detail": f"a {state} recording has no video to serve"}
        # The same file while it waits or is analysed: intact, so it is served.
        store.recordings.set_status(rid, "queued")
        assert client.get(f"/api/recordings/{rid}/video").content == junk.read_bytes()
    finally:
        store.close()


def test_video_a_fifo_at_the_path_is_refused_without_waiting(tmp_path: Path) -> None:
    """A FIFO opened for reading blocks until a writer comes; O_NONBLOCK opens it at once and
    fstat refuses it. (Were the open blocking, this test would hang, not pass.)"""
    store = Store(f"sqlite:///{tmp_path / 'fw.db'}")
    try:
        path = tmp_path / "cam.mp4"
        store.recordings.register(str(path), "fp:cam", 0, 0.0)
        rec = store.recordings.find(str(path))
        assert rec is not None
        store.recordings.set_status(rec.id, "done")
        os.mkfifo(path)
        r = TestClient(create_app(store)).get(f"/api/recordings/{rec.id}/video")
        assert r.status_code == 404
    finally:
        store.close()


def test_video_streams_from_the_descriptor_it_checked(
    tmp_path: Path, video: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worst moment for a swap: right after the checks. What is sent is still the file that
    was checked, never what the path leads to now."""
    from plugins.web import app as web_app

    secret = tmp_path / "secret"
    secret.write_bytes(b"S" * video.stat().st_size)
    store = Store(f"sqlite:///{tmp_path / 'fw.db'}")
    try:
        original = video.read_bytes()
        rid = _intake(store, video)
        store.recordings.set_status(rid, "done")
        checked = web_app.open_registered

        def then_swap(path: str, size: int, key: str | None) -> Any:
            opened = checked(path, size, key)
            _swap_for_symlink(Path(path), secret)
            return opened

        monkeypatch.setattr(web_app, "open_registered", then_swap)
        client = TestClient(create_app(store))
        r = client.get(f"/api/recordings/{rid}/video", headers={"Range": "bytes=10-"})
        assert r.status_code == 206 and r.content == original[10:]
        assert video.is_symlink()
        assert client.get(f"/api/recordings/{rid}/video").status_code == 404  # next request
    finally:
        store.close()


def test_video_descriptors_are_closed(client: TestClient, store: Store, video: Path) -> None:
    url = f"/api/recordings/{camera_id(store, video)}/video"
    size = video.stat().st_size
    for headers in (
        {},
        {"Range": "bytes=100-199"},
        {"Range": "bytes=0-9,20-29,5-12"},
        {"Range": f"bytes={size}-"},
        {"Range": "bytes=abc"},
        {"Range": "bytes=0-5", "If-Range": '"another"'},
    ):
        assert client.get(url, headers=headers).status_code in (200, 206, 400, 416)
    multi = client.get(url, headers={"Range": "bytes=0-9,20-29,5-12"})
    assert multi.headers["content-type"].startswith("multipart/byteranges")
    assert int(multi.headers["content-length"]) == len(multi.content)
    data = video.read_bytes()
    assert data[0:13] in multi.content and data[20:30] in multi.content

    def open_on_video() -> list[str]:
        out = []
        for fd in os.listdir("/proc/self/fd"):
            try:
                if os.readlink(f"/proc/self/fd/{fd}") == str(video):
                    out.append(fd)
            except OSError:
                pass
        return out

    assert open_on_video() == []


# -- `framewatch serve` on a store it cannot write (issue 14, item 10) ----------------------------


def _unprivileged() -> list[str]:
    """The command prefix that runs a process without the right to write the store: none for an
    ordinary user (the store is chmod'ed read-only), `setpriv` to user nobody for root, whom file
    modes do not stop (a read-only mount is not available here)."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.fail("setpriv (util-linux) is needed to run this test's server as nobody")
    return [setpriv, "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"]


@pytest.fixture
def read_only_dir() -> Iterator[Path]:
    """A folder every user may read (pytest's tmp_path is root's alone when root runs it)."""
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="fw-readonly-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        path.chmod(0o755)
        shutil.rmtree(path)


def _serve_as_unprivileged(folder: Path, port: int) -> subprocess.Popen[bytes]:
    root = Path(__file__).resolve().parent.parent
    return subprocess.Popen(
        [
            *_unprivileged(),
            sys.executable,
            "-m",
            "daemon.cli",
            "serve",
            "--config",
            str(folder / "config.toml"),
            "--port",
            str(port),
        ],
        cwd=root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PYTHONPATH": str(root),
            "PYTHONDONTWRITEBYTECODE": "1",
            "HOME": str(folder),
        },
    )


def _read_only_store(folder: Path, video: Path) -> Store:
    store = Store(f"sqlite:///{folder / 'fw.db'}")
    populate(store, video, CAMERA, chunk_s=600, size=video.stat().st_size)
    (folder / "config.toml").write_text(
        f'[storage]\nurl = "sqlite:///{folder / "fw.db"}"\n\n[plugins.web]\nport = 1\n'
    )
    return store


def _lock(folder: Path) -> dict[str, bytes]:
    for p in folder.iterdir():
        p.chmod(0o444)
    folder.chmod(0o555)
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def test_serve_reads_a_store_it_cannot_write(read_only_dir: Path, video: Path) -> None:
    """The store's file and folder are not writable by the server's user and no -wal/-shm exist
    (the writer closed cleanly): serving works, and not one file of the folder changes."""
    _read_only_store(read_only_dir, video).close()
    before = _lock(read_only_dir)
    assert set(before) == {"fw.db", "config.toml"}
    port = free_port()
    proc = _serve_as_unprivileged(read_only_dir, port)
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
        for path in ("/api/status", "/metrics", "/", "/api/search?q=red", "/search?q=red"):
            assert _get(f"http://127.0.0.1:{port}{path}")[0] == 200, path
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err.decode()
    assert {p.name: p.read_bytes() for p in read_only_dir.iterdir()} == before


def test_serve_refuses_an_older_store_in_one_line(read_only_dir: Path, video: Path) -> None:
    from sqlalchemy import text as sql

    store = _read_only_store(read_only_dir, video)
    with store.db.engine.begin() as c:
        c.execute(sql("UPDATE alembic_version SET version_num = '0003'"))
    store.close()
    before = _lock(read_only_dir)
    proc = _serve_as_unprivileged(read_only_dir, free_port())
    _, err = proc.communicate(timeout=60)
    lines = err.decode().strip().splitlines()
    assert proc.returncode == 2 and "Traceback" not in err.decode()
    assert lines[-1].startswith("framewatch: error: the store at ")
    assert "schema revision 0003" in lines[-1] and "never migrates" in lines[-1]
    assert {p.name: p.read_bytes() for p in read_only_dir.iterdir()} == before


def test_alerts_in_the_api_and_on_the_timeline(
    client: TestClient, store: Store, video: Path
) -> None:
    from tests.alertdata import decided

    rid = camera_id(store, video)
    fired, rejected = decided(
        store, rid, [("fence", 30.0, "confirmed"), ("fall", 80.0, "rejected")]
    )
    body = client.get(f"/api/recordings/{rid}/alerts").json()
    assert [(a["rule"], a["outcome"], a["fired"]) for a in body] == [
        ("fence", "confirmed", True),
        ("fall", "rejected", False),
    ]
    assert body[0]["thumbnail"] == f"/api/alerts/{fired.id}/thumbnail"
    pic = client.get(body[0]["thumbnail"])
    assert pic.status_code == 200 and pic.headers["content-type"] == "image/jpeg"
    assert pic.content[:2] == b"\xff\xd8"
    assert client.get("/api/alerts/999/thumbnail").status_code == 404
    page = client.get(f"/recordings/{rid}").text
    assert page.count('class="mark alert-mark') == 1  # only what fired is on the timeline bar
    assert "Alerts (1 fired of 2)" in page and "rejected by the test" in page
