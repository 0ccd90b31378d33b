"""What was said in the web plugin: the API (speech route, search hits marked "speech"), and the
timeline page in headless Chromium (Debian's, driven by Playwright): speech marks and list
beside the events, click one and the player lands there, search finds speech; transcript text
is shown, never run (it comes from a model too)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from daemon.models import ChunkWindow, Utterance
from daemon.store import Store
from plugins import web
from plugins.web.app import create_app
from tests.media import BLUE, GREEN, RED, make_video
from tests.outbox import ev

CHROMIUM = "/usr/bin/chromium"
FPS = 10
HOSTILE = "<img src=x onerror=window.__pwned=1><script>window.__pwned=2</script>"
SAID = [
    Utterance(1.0, 3.5, "Welcome to the lecture on entropy", "en"),
    Utterance(6.2, 7.9, f"Is {HOSTILE} a valid answer", "en"),
]


@pytest.fixture
def stored(tmp_path: Path) -> Iterator[tuple[Store, int]]:
    video = make_video(
        tmp_path / "lecture.mp4",
        seconds=10.0,
        fps=FPS,
        size=(320, 180),
        scenes=[(0.0, RED), (4.0, GREEN), (8.0, BLUE)],
    )
    store = Store(f"sqlite:///{tmp_path / 'fw.db'}")
    rec, _ = store.recordings.register(str(video), "fp", video.stat().st_size, 0.0)
    store.chunks.plan(rec.id, [ChunkWindow(0, 0.0, 10.0, (5.0,), 64, 64)])
    assert store.chunks.claim(rec.id, "t:1", 60) is not None
    store.chunks.commit(
        rec.id,
        0,
        "t:1",
        [ev(4.0, 6.0, "green slide", "entropy defined")],
        {"model": "m", "speech": {"asr": {"model": "tiny-whisper"}}},
        speech=SAID,
    )
    store.recordings.set_status(rec.id, "done", duration_s=10.0)
    try:
        yield store, rec.id
    finally:
        store.close()


def test_api_speech_route_and_search_hits_marked_as_speech(stored: tuple[Store, int]) -> None:
    store, rid = stored
    client = TestClient(create_app(store))
    said = client.get(f"/api/recordings/{rid}/speech").json()
    assert [(s["start_s"], s["text"], s["language"]) for s in said] == [
        (u.start_s, u.text, u.language) for u in SAID
    ]
    assert said[0]["time"] == "00:00:01" and said[0]["provenance"]["model"] == "tiny-whisper"
    assert client.get("/api/recordings/999/speech").status_code == 404
    hits = client.get("/api/search", params={"q": "entropy"}).json()["hits"]
    assert sorted(h["kind"] for h in hits) == ["event", "speech"]
    speech = next(h for h in hits if h["kind"] == "speech")
    assert speech["text"] == speech["description"] == SAID[0].text and speech["label"] == "speech"
    assert speech["page"] == f"/recordings/{rid}#t=1"
    page = client.get(f"/recordings/{rid}").text
    assert page.count('class="mark speech"') == 2 and "Speech (2)" in page
    assert HOSTILE not in page and "&lt;img src=x" in page  # escaped by the template


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(
            f"Chromium is not installed at {CHROMIUM} (install.sh installs it)", pytrace=False
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"]
        )
        try:
            yield b
        finally:
            b.close()


PLAYER = "document.getElementById('player')"


def landed(page: Any, t: float) -> float:
    page.wait_for_function(
        f"() => !{PLAYER}.seeking && Math.abs({PLAYER}.currentTime - {t}) <= {1 / FPS}",
        timeout=10_000,
    )
    return float(page.evaluate(f"{PLAYER}.currentTime"))


def test_timeline_page_shows_and_seeks_to_speech(browser: Any, stored: tuple[Store, int]) -> None:
    store, rid = stored
    server = web.WebServer(create_app(store, trusted_hosts=web.LOOPBACK_NAMES), "127.0.0.1", 0)
    server.start()
    try:
        page = browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(f"{server.url}/recordings/{rid}")
        page.wait_for_function(f"() => {PLAYER}.readyState >= 1")
        assert page.locator("#timeline .mark.speech").count() == 2
        page.locator("#speech").get_by_role("button").nth(1).click()
        assert abs(landed(page, 6.2) - 6.2) <= 1 / FPS
        assert HOSTILE in page.locator("#speech").inner_text()

        page.fill("#find input[name=q]", "valid answer")
        page.click("#find button")
        hit = page.locator("#found li").first
        hit.wait_for()
        assert hit.locator("button.event.speech .label").text_content() == "speech"
        assert HOSTILE in (hit.locator(".desc").text_content() or "")
        page.locator("#timeline .mark.speech").first.click()
        assert abs(landed(page, 1.0) - 1.0) <= 1 / FPS
        assert page.evaluate("window.__pwned") is None
        assert page.locator("#speech img, #found img").count() == 0
        assert errors == []
    finally:
        server.stop()
