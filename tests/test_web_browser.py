"""The timeline page as a person uses it, in headless Chromium (Debian's, driven by Playwright):
load the page, click an event, the player lands on it; search this recording; nothing the model
wrote runs as code. The browser is part of the test setup (install.sh): missing, the test fails."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from daemon.models import Chapter, hms
from daemon.store import Store
from plugins import web
from plugins.web.app import create_app
from tests.eventdata import ev, populate
from tests.media import BLUE, GREEN, RED, make_video

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
FPS = 10
SCREENSHOT_ENV = "FRAMEWATCH_DOCS_SCREENSHOT"  # also save the screenshot here (docs/timeline.png)

HOSTILE = "<img src=x onerror=window.__pwned=1><script>window.__pwned=2</script>"
EVENTS = [
    ev(0.5, 3.5, "title slide", "Red title slide: Thermodynamics, lecture 4"),
    ev(4.2, 7.5, "experiment", "The lecturer fills the frame with a green test pattern"),
    ev(8.3, 11.5, "blue screen", "The projector shows a blue screen"),
    ev(9.0, 10.0, "question", f"A student asks what {HOSTILE} means for entropy"),
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(
            f"Chromium is not installed at {CHROMIUM}: the browser test needs Debian's chromium "
            "(run ./install.sh as root, or: apt-get install -y chromium chromium-driver)",
            pytrace=False,
        )
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is not installed: pip install -e '.[dev]'", pytrace=False)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def site(tmp_path: Path) -> Iterator[tuple[str, int]]:
    video = make_video(
        tmp_path / "lecture.mp4",
        seconds=12.0,
        fps=FPS,
        size=(640, 360),
        scenes=[(0.0, RED), (4.0, GREEN), (8.0, BLUE)],
    )
    store = Store(f"sqlite:///{tmp_path / 'fw.db'}")
    rec = populate(store, video, [EVENTS], chunk_s=12.0, size=video.stat().st_size)
    server = web.WebServer(create_app(store, trusted_hosts=web.LOOPBACK_NAMES), "127.0.0.1", 0)
    server.start()
    try:
        yield server.url, rec.id
    finally:
        server.stop()
        store.close()


PLAYER = "document.getElementById('player')"
# The centre pixel of the frame the player shows now, drawn through a canvas (same origin).
PIXEL = f"""() => {{
  const v = {PLAYER}; const c = document.createElement('canvas');
  c.width = v.videoWidth; c.height = v.videoHeight;
  const g = c.getContext('2d'); g.drawImage(v, 0, 0);
  return Array.from(g.getImageData(c.width >> 1, c.height >> 1, 1, 1).data.slice(0, 3));
}}"""


def landed(page: Any, t: float) -> float:
    page.wait_for_function(
        f"() => !{PLAYER}.seeking && Math.abs({PLAYER}.currentTime - {t}) <= {1 / FPS}",
        timeout=10_000,
    )
    return float(page.evaluate(f"{PLAYER}.currentTime"))


def test_click_an_event_and_the_player_lands_on_it(
    browser: Any, site: tuple[str, int], tmp_path: Path
) -> None:
    url, rid = site
    page = browser.new_page(viewport={"width": 1280, "height": 760})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.goto(f"{url}/recordings/{rid}")
    page.wait_for_function(f"() => {PLAYER}.readyState >= 1")

    page.locator("#events").get_by_role("button", name="00:00:08 blue screen").click()
    assert abs(landed(page, 8.3) - 8.3) <= 1 / FPS
    page.wait_for_function(
        f"() => {{ const [r, g, b] = ({PIXEL})(); return b > 150 && r < 100 && g < 100; }}"
    )
    assert page.locator("#events .event.current").count() >= 1

    page.locator("#timeline .mark").nth(1).click()  # the timeline bar seeks too
    assert abs(landed(page, 4.2) - 4.2) <= 1 / FPS
    page.wait_for_function(
        f"() => {{ const [r, g, b] = ({PIXEL})(); return g > 150 && r < 100 && b < 100; }}"
    )
    assert page.evaluate("location.hash") == "#t=4.2"

    # Search this recording: results come from the API, written as text, and seek when clicked.
    page.fill("#find input[name=q]", "entropy")
    page.click("#find button")
    hit = page.locator("#found li").first
    hit.wait_for()
    assert HOSTILE in (hit.locator(".desc").text_content() or "")
    hit.locator("button").click()
    assert abs(landed(page, 9.0) - 9.0) <= 1 / FPS

    # What the model wrote is shown, never run.
    assert HOSTILE in page.locator("#events").inner_text()
    assert page.evaluate("window.__pwned") is None
    assert page.locator("#events img, #found img").count() == 0
    assert errors == []

    page.locator("#events").get_by_role("button", name="00:00:00 title slide").click()
    landed(page, 0.5)
    page.wait_for_function(f"() => {PLAYER}.readyState >= 2")  # the frame is there, no spinner
    page.mouse.move(0, 0)
    page.wait_for_timeout(300)
    shot = tmp_path / "timeline.png"
    page.screenshot(path=str(shot))
    assert shot.stat().st_size > 10_000
    if os.environ.get(SCREENSHOT_ENV):
        shutil.copy(shot, os.environ[SCREENSHOT_ENV])


def test_deep_link_and_list_page(browser: Any, site: tuple[str, int]) -> None:
    url, rid = site
    page = browser.new_page()
    page.goto(f"{url}/recordings/{rid}#t=9")
    page.wait_for_function(f"() => {PLAYER}.readyState >= 1")
    assert abs(landed(page, 9.0) - 9.0) <= 1 / FPS

    page.goto(url + "/")
    row = page.locator("table.recordings tbody tr").first
    assert "lecture.mp4" in row.inner_text() and "done" in row.inner_text()
    assert page.locator("progress").first.get_attribute("value") == "1"
    page.fill("header input[name=q]", "entropy")
    page.press("header input[name=q]", "Enter")
    page.wait_for_url("**/search?q=entropy")
    page.locator("ol.hits a").first.click()
    page.wait_for_url(f"**/recordings/{rid}#t=9")
    page.wait_for_function(f"() => {PLAYER} && {PLAYER}.readyState >= 1")
    assert abs(landed(page, 9.0) - 9.0) <= 1 / FPS


THUMBS_SCREENSHOT_ENV = "FRAMEWATCH_DOCS_THUMBS_SCREENSHOT"  # docs/timeline-thumbnails.png
CHAPTERS = (
    Chapter(0.0, 4.0, "Title slide"),
    Chapter(4.0, 8.0, "The experiment"),
    Chapter(8.0, 12.0, "The blue screen"),
)


def test_timeline_shows_summary_chapters_and_each_events_thumbnail(
    browser: Any, tmp_path: Path
) -> None:
    """Thumbnails made the way the worker makes them (Thumbnails.save from the sampled frames at
    each event's time, here sampled directly from the clip) and a stored summary (written here,
    not by a model: Store.summaries.put), shown on the page of a read-only store as `serve`
    opens it; a chapter seeks the player."""
    from types import SimpleNamespace

    from daemon.engine.sampler import sample_frames
    from daemon.models import Summary
    from daemon.thumbnails import Thumbnails

    video = make_video(
        tmp_path / "lecture.mp4",
        seconds=12.0,
        fps=FPS,
        size=(640, 360),
        scenes=[(0.0, RED), (4.0, GREEN), (8.0, BLUE)],
    )
    store = Store(f"sqlite:///{tmp_path / 'fw.db'}")
    rec = populate(store, video, [EVENTS], chunk_s=12.0, size=video.stat().st_size)
    events = store.events.of(rec.id)
    frames = sample_frames(video, sorted(e.start_s for e in events), 640, 352)
    media = tmp_path / "media"
    assert Thumbnails(media).save(events, frames).written == len(events)
    store.summaries.put(
        Summary(
            rec.id,
            "Thermodynamics, lecture 4",
            "The lecture opens on a red title slide, shows a green test pattern as its "
            "experiment, and ends on a blue screen while a student asks about entropy.",
            CHAPTERS,
            (events[0].id, events[3].id),  # type: ignore[arg-type]
            {"model": "written by this test", "prompt_hash": "none"},
        )
    )
    store.close()
    store = Store(f"sqlite:///{tmp_path / 'fw.db'}", read_only=True)
    config = SimpleNamespace(media_dir=lambda: media)  # a stand-in for Config: media_dir() only
    app = create_app(store, config, trusted_hosts=web.LOOPBACK_NAMES)
    server = web.WebServer(app, "127.0.0.1", 0)
    server.start()
    try:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(f"{server.url}/recordings/{rec.id}")
        page.wait_for_function(
            "() => [...document.querySelectorAll('#events img.thumb')]"
            ".every(i => i.complete && i.naturalWidth > 0)"
        )
        sizes = page.eval_on_selector_all(
            "#events img.thumb", "els => els.map(i => [i.naturalWidth, i.naturalHeight])"
        )
        assert sizes == [[320, 176]] * len(events)
        assert page.locator("h2", has_text="Thermodynamics, lecture 4").count() == 1
        assert "red title slide" in page.locator("p.summary").inner_text()
        assert page.locator("#chapters li").all_inner_texts() == [
            f"{hms(c.start_s)} {c.title}" for c in CHAPTERS
        ]
        page.wait_for_function(f"() => {PLAYER}.readyState >= 1")
        page.locator("#chapters").get_by_role("button", name="00:00:08 The blue screen").click()
        assert abs(landed(page, 8.0) - 8.0) <= 1 / FPS
        page.locator("#chapters").get_by_role("button", name="00:00:04 The experiment").click()
        landed(page, 4.0)
        page.wait_for_function(f"() => !{PLAYER}.seeking && {PLAYER}.readyState >= 2")
        # 4 s is where one chapter ends and the next begins: only the one beginning is current.
        page.wait_for_function("() => document.querySelectorAll('#chapters .current').length === 1")
        assert "The experiment" in page.locator("#chapters .current").inner_text()
        page.mouse.move(0, 0)
        page.wait_for_timeout(300)  # the player's spinner fades out
        assert page.evaluate("window.__pwned") is None
        shot = tmp_path / "timeline-thumbnails.png"
        page.screenshot(path=str(shot), full_page=True)
        if os.environ.get(THUMBS_SCREENSHOT_ENV):
            shutil.copy(shot, os.environ[THUMBS_SCREENSHOT_ENV])
    finally:
        server.stop()
        store.close()
