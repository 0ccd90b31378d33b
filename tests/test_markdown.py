"""The markdown_export plugin: a report per recording that parses as CommonMark (markdown-it-py)
with model text kept as plain text, whatever the model wrote."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from markdown_it import MarkdownIt
from markdown_it.token import Token

from daemon.models import RecordingInfo, hms
from daemon.pluginhost.dispatch import Dispatcher
from daemon.store import Store
from plugins._shared import one_line
from plugins.markdown_export import md_escape
from tests.outbox import HOSTILE, analysed, ev, make_config, manager

BIDI = "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"


def report(
    tmp_path: Path,
    chunks: list[list[Any]],
    settings: dict[str, Any] | None = None,
    name: str = "lecture.mp4",
) -> tuple[Path, RecordingInfo]:
    cfg = make_config(tmp_path, {"markdown_export": settings or {}})
    pm = manager(cfg)
    store = Store(cfg.storage_url())
    video = tmp_path / "videos" / name
    video.parent.mkdir(exist_ok=True)
    video.write_bytes(b"")
    rec = analysed(store, pm, video, chunks)
    assert Dispatcher(store, pm, cfg).deliver_all() == 1
    out = Path(pm.settings["markdown_export"].dir or video.parent) / (video.stem + ".framewatch.md")  # type: ignore[union-attr]
    return out, rec


def walk(tokens: list[Token]) -> list[Token]:
    out = []
    for t in tokens:
        out.append(t)
        out += walk(t.children or [])
    return out


def timeline_items(tokens: list[Token]) -> list[Token]:
    """The inline token of each list item after the Timeline heading."""
    start = next(i for i, t in enumerate(tokens) if t.type == "inline" and t.content == "Timeline")
    items, depth = [], 0
    for i in range(start, len(tokens)):
        if tokens[i].type == "list_item_open":
            depth += 1
            items.append(tokens[i + 2])  # list_item_open, paragraph_open, inline
        elif tokens[i].type == "list_item_close":
            depth -= 1
    return items


def text_of(inline: Token) -> str:
    return "".join(c.content for c in inline.children or [] if c.type in ("text", "code_inline"))


def test_hostile_text_cannot_break_the_report(tmp_path: Path) -> None:
    events = [
        ev(10 * i, 10 * i + 5, label, desc)
        for i, (label, desc) in enumerate(zip(reversed(HOSTILE), HOSTILE, strict=True))
    ]
    out, rec = report(tmp_path, [events])
    text = out.read_text(encoding="utf-8")
    assert not set(BIDI) & set(text)
    tokens = MarkdownIt("commonmark").parse(text)
    everything = walk(tokens)
    assert not [t for t in everything if t.type.startswith("html")]
    assert [t.tag for t in tokens if t.type == "heading_open"] == ["h1", "h2"]
    items = timeline_items(tokens)
    assert len(items) == len(events)  # one list item per event, no smuggled ones
    for item, e in zip(items, sorted(events, key=lambda e: e.start_s), strict=True):
        # What a reader sees is exactly the model's text on one line: nothing was interpreted.
        t = int(e.start_s)
        assert text_of(item) == f"{hms(t)} {one_line(e.label)}: {one_line(e.description)}"
        links = [c for c in item.children or [] if c.type == "link_open"]
        assert [c.attrs["href"] for c in links] == [f"lecture.mp4#t={t}"]
    html = MarkdownIt("commonmark").render(text)
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert 'href="javascript' not in html and "<img" not in html


def test_header_timeline_and_links(tmp_path: Path) -> None:
    out, rec = report(
        tmp_path,
        [[ev(5, 9, "intro", "Speaker says hello")], [ev(3725.4, 3730, "q&a", "Questions")]],
        name="my talk (1).mp4",
    )
    assert out == tmp_path / "videos" / "my talk (1).framewatch.md"
    text = out.read_text()
    assert text.startswith("# my talk \\(1\\)\\.mp4\n")
    assert "- Source: [my talk \\(1\\)\\.mp4](my%20talk%20%281%29.mp4)" in text
    assert (
        "- Duration: 00:02:00" in text
        and "- Model: stand\\-in" in text
        and "- profile: general" in text
    )
    assert "[01:02:05](my%20talk%20%281%29.mp4#t=3725) **q&amp;a**: Questions" in text
    tokens = MarkdownIt("commonmark").parse(text)
    assert [text_of(i) for i in timeline_items(tokens)] == [
        "00:00:05 intro: Speaker says hello",
        "01:02:05 q&a: Questions",
    ]


def test_chapters_when_events_allow(tmp_path: Path) -> None:
    chunks = [
        [ev(0, 20, "slide", "Title"), ev(30, 50, "slide", "Agenda")],
        [ev(300, 320, "demo", "Live demo"), ev(330, 340, "demo", "More")],
    ]
    out, _ = report(tmp_path, chunks, {"dir": "reports"})
    assert out.parent == tmp_path / "reports"
    tokens = MarkdownIt("commonmark").parse(out.read_text())
    h3 = [
        tokens[i + 1].content
        for i, t in enumerate(tokens)
        if t.type == "heading_open" and t.tag == "h3"
    ]
    assert h3 == ["00:00:00 slide", "00:05:00 demo"]
    assert len(timeline_items(tokens)) == 4
    few, _ = report(
        tmp_path / "few", [[ev(0, 20, "slide", "Title"), ev(25, 30, "slide", "Agenda")]]
    )
    assert "###" not in few.read_text()


def test_written_atomically_and_replaced(tmp_path: Path) -> None:
    out, _ = report(tmp_path, [[ev(1, 2)]])
    out.write_text("old")
    report(tmp_path / "again", [[ev(1, 2)]], {"dir": str(out.parent)})
    assert out.read_text().startswith("# lecture")
    assert sorted(p.name for p in out.parent.iterdir()) == ["lecture.framewatch.md", "lecture.mp4"]


def test_a_users_template_is_escaped_too(tmp_path: Path) -> None:
    (tmp_path / "mine.md.j2").write_text(
        "## {{ title }} ({{ events|length }} events, {{ duration|hms }})\n\n"
        "{% for e in events %}1. {{ e.description }} {{ e.label|md }}\n{% endfor %}"
    )
    out, _ = report(
        tmp_path,
        [[ev(1, 2, "x", "<b>bold</b>\n## not a heading"), ev(3, 4, "y", "fine")]],
        {"template": "mine.md.j2"},
    )
    text = out.read_text()
    assert text.startswith("## lecture\\.mp4 (2 events, 00:01:00)\n")
    tokens = MarkdownIt("commonmark").parse(text)
    assert [t.tag for t in tokens if t.type == "heading_open"] == ["h2"]
    assert sum(t.type == "list_item_open" for t in tokens) == 2
    assert not [t for t in walk(tokens) if t.type.startswith("html")]


@pytest.mark.parametrize("raw", HOSTILE)
def test_md_escape_round_trips_as_plain_text(raw: str) -> None:
    tokens = MarkdownIt("commonmark").parse(md_escape(raw))
    assert [t.type for t in tokens] in ([], ["paragraph_open", "inline", "paragraph_close"])
    if tokens:
        assert tokens[1].children and {c.type for c in tokens[1].children} == {"text"}
        assert text_of(tokens[1]) == one_line(raw)


def test_hook_recording_finished_lists_every_alert_with_its_outcome(tmp_path: Path) -> None:
    from tests.alertdata import decided

    cfg = make_config(tmp_path, {"markdown_export": {}})
    pm = manager(cfg)
    store = Store(cfg.storage_url())
    video = tmp_path / "yard.mp4"
    rec = analysed(store, pm, video, [[ev(1, 2, "person", "walks")]], finish=None)
    decided(store, rec.id, [("fence", 12.0, "confirmed"), ("fall", 30.0, "rejected")])
    store.recordings.set_status(
        rec.id,
        "done",
        notify=[(p, "recording_finished") for p in pm.subscribers("recording_finished")],
    )
    assert Dispatcher(store, pm, cfg).deliver_all() == 1
    text = (tmp_path / "yard.framewatch.md").read_text(encoding="utf-8")
    assert "## Alerts" in text
    assert (
        "[00:00:12](yard.mp4#t=12) **fence** (warning, confirmed, delivered): confirmed by the test"
        in text
    )
    assert "**fall** (warning, rejected): rejected by the test" in text
    # Without alerts the report has no such section (reports of today stay as they were).
    plain, _ = report(tmp_path / "plain", [[ev(1, 2, "person", "walks")]])
    assert "## Alerts" not in plain.read_text(encoding="utf-8")


def test_two_recordings_with_one_file_name_keep_two_reports(tmp_path: Path) -> None:
    """Two cameras both write `clip.mp4`; their reports share one output `dir`."""
    cfg = make_config(tmp_path, {"markdown_export": {"dir": "reports"}})
    pm = manager(cfg)
    store = Store(cfg.storage_url())
    outs = []
    for cam, label in (("front", "door"), ("back", "cat")):
        video = tmp_path / cam / "clip.mp4"
        video.parent.mkdir()
        video.write_bytes(cam.encode())
        analysed(store, pm, video, [[ev(1, 2, label, "seen")]])
        Dispatcher(store, pm, cfg).deliver_all()
        outs.append(sorted((tmp_path / "reports").iterdir()))
    reports = outs[-1]
    assert len(outs[0]) == 1 and len(reports) == 2
    (plain,) = [p for p in reports if p.name == "clip.framewatch.md"]
    (other,) = [p for p in reports if p != plain]
    assert other.name.startswith("clip.") and other.name.endswith(".framewatch.md")
    assert "**door**" in plain.read_text() and "(../front/clip.mp4#t=1)" in plain.read_text()
    assert "**cat**" in other.read_text() and "(../back/clip.mp4#t=1)" in other.read_text()
    # Delivered again (a replay), each report is rewritten in place: still two, each its own.
    store.outbox.add(
        [
            ("markdown_export", "recording_finished", r.id, None)
            for r, _, _ in store.recordings.list()
        ]
    )
    assert Dispatcher(store, pm, cfg).deliver_all() == 2
    assert sorted((tmp_path / "reports").iterdir()) == reports
    assert "**door**" in plain.read_text() and "**cat**" in other.read_text()
    for p in reports:
        tokens = MarkdownIt("commonmark").parse(p.read_text())
        assert not [t for t in walk(tokens) if t.type.startswith("html")]
        assert "framewatch recording" not in MarkdownIt("commonmark").render(p.read_text())


def test_report_with_a_summary_opens_with_it(tmp_path: Path) -> None:
    from daemon.models import Chapter, Summary

    cfg = make_config(tmp_path, {"markdown_export": {}})
    pm = manager(cfg)
    store = Store(cfg.storage_url())
    video = tmp_path / "talk.mp4"
    video.write_bytes(b"")
    rec = analysed(
        store,
        pm,
        video,
        [[ev(5, 9, "intro", "hello")], [ev(70, 80, "demo", HOSTILE[1])]],
        finish=None,
    )
    ids = [e.id for e in store.events.of(rec.id)]
    store.summaries.put(
        Summary(
            rec.id,
            "A *talk* <b>",
            "Someone spoke. " + HOSTILE[5],
            (Chapter(0.0, 60.0, "Intro"), Chapter(60.0, 120.0, "Demo [x](y)")),
            (ids[1],),
            {"model": "stand-in"},
        )
    )
    store.recordings.set_status(
        rec.id,
        "done",
        notify=[(p, "recording_finished") for p in pm.subscribers("recording_finished")],
    )
    assert Dispatcher(store, pm, cfg).deliver_all() == 1
    text = (tmp_path / "talk.framewatch.md").read_text()
    tokens = MarkdownIt("commonmark").parse(text)
    assert not [t for t in walk(tokens) if t.type.startswith("html")]
    heads = [text_of(tokens[i + 1]) for i, t in enumerate(tokens) if t.type == "heading_open"]
    assert heads == [
        "A *talk* <b>",
        "Chapters",
        "Key moments",
        "Timeline",
        "00:00:00 Intro",
        "00:01:00 Demo [x](y)",
    ]
    html = MarkdownIt("commonmark").render(text)
    assert 'href="talk.mp4#t=0">00:00:00</a> to 00:01:00 Intro' in html
    assert 'href="talk.mp4#t=60">00:01:00</a> to 00:02:00 Demo [x](y)' in html
    assert 'href="talk.mp4#t=70">00:01:10</a> <strong>demo</strong>' in html
    assert "<b>" not in html and 'href="y"' not in html and "<img" not in html


@pytest.mark.parametrize("out_dir", [None, "reports (all) & more"])
@pytest.mark.parametrize("with_summary", [False, True])
def test_timeline_thumbnails_resolve_from_the_reports_folder(
    tmp_path: Path, out_dir: str | None, with_summary: bool
) -> None:
    """Events with pictures on disk (Thumbnails.save, as the worker saves them) in a media folder
    whose name needs escaping; the dispatcher hands the plugin each picture's path: every image
    of the rendered report (markdown-it-py) resolves from the report's folder to that event's
    file, beside the video or in an output `dir`; events without a picture show none."""
    from urllib.parse import unquote

    import numpy as np

    from daemon.models import Chapter, Frame, Summary
    from daemon.thumbnails import Thumbnails

    settings = {"dir": out_dir} if out_dir else {}
    media = "media (shared) [x] <y> é"
    cfg = make_config(
        tmp_path,
        {"markdown_export": settings},
        storage={
            "url": f"sqlite:///{tmp_path / 'fw.db'}",
            "media_dir": media,
        },
    )
    pm = manager(cfg)
    store = Store(cfg.storage_url())
    video = tmp_path / "my videos (2024)" / "talk #1.mp4"
    video.parent.mkdir()
    video.write_bytes(b"")
    chunks = [[ev(5, 9, "intro", HOSTILE[5]), ev(20, 25, "slide")], [ev(70, 80, "demo")]]
    rec = analysed(store, pm, video, chunks, finish=None)
    events = store.events.of(rec.id)
    pictured = [events[0], events[2]]
    frame = np.zeros((90, 160, 3), np.uint8)
    Thumbnails(cfg.media_dir()).save(pictured, [Frame(e.start_s, frame) for e in pictured])
    if with_summary:
        chapters = (Chapter(0.0, 60.0, "Intro"), Chapter(60.0, 120.0, "Demo"))
        store.summaries.put(Summary(rec.id, "A talk", "Spoken.", chapters, (), {}))
    store.recordings.set_status(
        rec.id,
        "done",
        notify=[(p, "recording_finished") for p in pm.subscribers("recording_finished")],
    )
    assert Dispatcher(store, pm, cfg).deliver_all() == 1
    folder = tmp_path / out_dir if out_dir else video.parent
    out = folder / "talk #1.framewatch.md"
    text = out.read_text()
    tokens = walk(MarkdownIt("commonmark").parse(text))
    assert not [t for t in tokens if t.type.startswith("html")]
    images = [t for t in tokens if t.type == "image"]
    assert len(images) == len(pictured)
    for img, e in zip(images, pictured, strict=True):
        src = str(img.attrs["src"])
        assert not src.startswith(("/", "file:")) and "://" not in src
        target = (folder / unquote(src)).resolve()
        assert target.is_file() and target == (cfg.media_dir() / str(rec.id) / f"{e.id}.jpg")
        assert text_of(img) == f"{e.label} at {hms(e.start_s)}"
    items = timeline_items(MarkdownIt("commonmark").parse(text))
    assert [sum(c.type == "image" for c in i.children or []) for i in items] == [1, 0, 1]
    html = MarkdownIt("commonmark").render(text)
    assert html.count("<img ") == len(pictured)
    store.close()
