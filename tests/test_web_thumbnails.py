"""Event thumbnails on the web: `/api/events/{id}/thumbnail` serves the stored JPEG (and nothing
else), EventOut carries its URL (absolute under public_url), the timeline page shows it, and
webhook payloads link it when the webhook knows the web plugin's public URL."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from daemon.hookspecs import hookimpl
from daemon.models import EventInfo, Frame
from daemon.pluginhost.dispatch import Dispatcher
from daemon.store import Store
from daemon.thumbnails import Thumbnails
from plugins.web.app import create_app
from tests.eventdata import CAMERA, populate, ts
from tests.outbox import analysed, ev, make_config, manager
from tests.services import Receiver


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[Store, Path, list[int]]]:
    """A store with the camera recording's events; every other event gets a (green) picture."""
    store = Store(f"sqlite:///{tmp_path / 'fw.db'}")
    populate(store, tmp_path / "cam.mp4", CAMERA, chunk_s=600, mtime=ts("2024-03-01"))
    media = tmp_path / "media"
    events = store.events.of()
    with_picture = events[::2]
    green = np.zeros((90, 160, 3), np.uint8)
    green[..., 1] = 255
    Thumbnails(media).save(with_picture, [Frame(e.start_s, green) for e in events])
    try:
        yield store, media, [e.id for e in with_picture]  # type: ignore[misc]
    finally:
        store.close()


def client(store: Store, media: Path, public_url: str | None = None) -> TestClient:
    config = SimpleNamespace(media_dir=lambda: media)  # a stand-in for Config: media_dir() only
    return TestClient(create_app(store, config, public_url=public_url))


def test_thumbnail_route_serves_the_stored_jpeg(setup: tuple[Store, Path, list[int]]) -> None:
    store, media, ids = setup
    c = client(store, media)
    e = store.events.get(ids[0])
    r = c.get(f"/api/events/{ids[0]}/thumbnail")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    assert r.content == (media / str(e.recording_id) / f"{ids[0]}.jpg").read_bytes()
    without = next(x.id for x in store.events.of() if x.id not in ids)
    assert c.get(f"/api/events/{without}/thumbnail").status_code == 404
    assert c.get("/api/events/999999/thumbnail").json() == {"detail": "no such event"}
    assert c.get("/api/events/0/thumbnail").status_code == 422
    assert c.get("/api/events/..%2F..%2Fetc%2Fpasswd/thumbnail").status_code in (404, 422)


def test_a_symlink_in_the_media_folder_is_not_followed(
    setup: tuple[Store, Path, list[int]], tmp_path: Path
) -> None:
    store, media, ids = setup
    e = store.events.get(ids[0])
    target = media / str(e.recording_id) / f"{ids[0]}.jpg"
    secret = tmp_path / "secret.txt"
    secret.write_text("token")
    target.unlink()
    os.symlink(secret, target)
    assert client(store, media).get(f"/api/events/{ids[0]}/thumbnail").status_code == 404


def test_event_out_and_the_timeline_page_show_thumbnails(
    setup: tuple[Store, Path, list[int]],
) -> None:
    store, media, ids = setup
    rec_id = store.events.get(ids[0]).recording_id
    listed = client(store, media).get(f"/api/recordings/{rec_id}/events").json()
    assert {e["id"]: e["thumbnail"] for e in listed} == {
        e["id"]: (f"/api/events/{e['id']}/thumbnail" if e["id"] in ids else None) for e in listed
    }
    absolute = client(store, media, "https://fw.example.org/")
    got = absolute.get(f"/api/recordings/{rec_id}/events").json()
    assert got[0]["thumbnail"] == f"https://fw.example.org/api/events/{ids[0]}/thumbnail"
    hits = client(store, media).get("/api/search", params={"q": got[0]["label"]}).json()["hits"]
    assert hits and all(
        h["thumbnail"] == (f"/api/events/{h['id']}/thumbnail" if h["id"] in ids else None)
        for h in hits
    )
    page = client(store, media).get(f"/recordings/{rec_id}").text
    for i in ids:
        assert f'<img class="thumb" src="/api/events/{i}/thumbnail"' in page
    assert page.count('class="thumb"') == len(ids)
    # Without a media folder (no config) nothing links a picture.
    bare = TestClient(create_app(store)).get(f"/api/recordings/{rec_id}/events").json()
    assert all(e["thumbnail"] is None for e in bare)


def test_plugins_get_event_thumbnails(tmp_path: Path) -> None:
    """The dispatcher hands plugins each event's picture as EventInfo.thumbnail (its path)."""
    seen: list[Any] = []

    class Recorder:
        @hookimpl
        def events_found(self, events: list[EventInfo]) -> None:
            seen.extend(events)

    cfg = make_config(tmp_path, {})
    pm = manager(cfg, (Recorder(), "recorder"))
    store = Store(cfg.storage_url())
    analysed(store, pm, tmp_path / "a.mp4", [[ev(1, 2), ev(5, 6, "cat")]], finish=None)
    first = store.events.of()[0]
    Thumbnails(cfg.media_dir()).save([first], [Frame(1.0, np.zeros((9, 16, 3), np.uint8))])
    Dispatcher(store, pm, cfg).deliver_all()
    assert [e.thumbnail for e in seen] == [str(cfg.media_dir() / "1" / f"{first.id}.jpg"), None]
    store.close()


def test_webhook_payload_links_thumbnails_with_web_url(tmp_path: Path) -> None:
    receiver = Receiver()
    try:
        for web_url in (None, "https://fw.example.org"):
            receiver.requests.clear()
            folder = tmp_path / str(web_url is not None)
            folder.mkdir()
            settings = {"url": receiver.url} | ({"web_url": web_url} if web_url else {})
            cfg = make_config(folder, {"webhook": settings})
            pm = manager(cfg)
            store = Store(cfg.storage_url())
            analysed(store, pm, folder / "a.mp4", [[ev(1, 2), ev(5, 6, "cat")]], finish=None)
            first = store.events.of()[0]  # only the first event has a picture
            Thumbnails(cfg.media_dir()).save([first], [Frame(1.0, np.zeros((9, 16, 3), np.uint8))])
            assert Dispatcher(store, pm, cfg).deliver_due() == 1
            (req,) = receiver.requests
            pictured, bare = json.loads(req["body"])["data"]["events"]
            assert "thumbnail" not in bare
            if web_url is None:
                assert "thumbnail" not in pictured
            else:
                assert pictured["thumbnail"] == f"{web_url}/api/events/{first.id}/thumbnail"
            store.close()
    finally:
        receiver.close()


def test_the_page_and_the_api_show_the_stored_summary(
    setup: tuple[Store, Path, list[int]], tmp_path: Path
) -> None:
    """A summary stored with Store.summaries.put, read through a read-only Store (what `serve`
    opens): the page lists its title, text and chapters (escaped), GET /api/recordings/{id}
    carries it as `summary` (models.summary_json's keys), null for a recording without one."""
    from daemon.models import Chapter, Summary, summary_json

    store, media, ids = setup
    rec_id = store.events.get(ids[0]).recording_id
    summary = store.summaries.put(
        Summary(
            rec_id,
            "Camera <day>",
            "A stored summary.",
            (Chapter(0.0, 30.0, "Morning & <b>coffee</b>"), Chapter(30.0, 90.0, "Visitors")),
            (ids[0],),
            {"model": "written by this test", "prompt_hash": "none"},
        )
    )
    other = populate(store, tmp_path / "other.mp4", [[ev(1, 2)]], chunk_s=60)
    reader = Store(store.url, read_only=True)
    try:
        c = client(reader, media)
        page = c.get(f"/recordings/{rec_id}").text
        assert "Camera &lt;day&gt;" in page and "Morning &amp; &lt;b&gt;coffee&lt;/b&gt;" in page
        assert 'data-start="30.0" data-end="90.0"' in page and "Chapters (2)" in page
        got = c.get(f"/api/recordings/{rec_id}").json()["summary"]
        assert got == summary_json(summary)
        assert got["chapters"][0] == {
            "start_s": 0.0,
            "end_s": 30.0,
            "title": summary.chapters[0].title,
        }
        assert (
            got["key_events"] == [ids[0]] and got["provenance"]["model"] == "written by this test"
        )
        assert c.get(f"/api/recordings/{other.id}").json()["summary"] is None
        assert "Chapters (" not in c.get(f"/recordings/{other.id}").text
        schema = c.get("/openapi.json").json()["components"]["schemas"]
        assert set(schema["SummaryOut"]["properties"]) == set(got)
    finally:
        reader.close()
