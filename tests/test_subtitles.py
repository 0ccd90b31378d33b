"""The subtitles plugin: SRT, WebVTT and WebVTT chapters that `srt`, `pysubs2`, `webvtt-py` and
ffmpeg all read back, whatever the model wrote, with overlapping events kept readable."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pysubs2
import pytest
import srt
import webvtt

from daemon.pluginhost.dispatch import Dispatcher
from daemon.store import Store
from plugins._shared import one_line
from plugins.subtitles import cues
from tests.outbox import HOSTILE, analysed, ev, make_config, manager


def write(
    tmp_path: Path, chunks: list[list[Any]], settings: dict[str, Any] | None = None
) -> dict[str, Path]:
    cfg = make_config(tmp_path, {"subtitles": settings or {}})
    pm = manager(cfg)
    store = Store(cfg.storage_url())
    video = tmp_path / "lecture.mp4"
    video.write_bytes(b"")
    analysed(store, pm, video, chunks)
    assert Dispatcher(store, pm, cfg).deliver_all() == 1
    folder = Path(pm.settings["subtitles"].dir or tmp_path)  # type: ignore[union-attr]
    return {k: folder / f"lecture.framewatch.{k}" for k in ("srt", "vtt", "chapters.vtt")}


def ffmpeg_reads(path: Path) -> None:
    # `-c:s ass` makes ffmpeg decode every cue (ffmpeg 5's null muxer takes no subtitle stream
    # without an encoder named, so a bare `-f null -` fails even on a valid file).
    run = subprocess.run(
        [
            "ffmpeg",
            "-nostdin",
            "-v",
            "error",
            "-i",
            str(path),
            "-map",
            "0",
            "-c:s",
            "ass",
            "-f",
            "null",
            "-",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0 and run.stderr == "", run.stderr


def test_hostile_text_gives_well_formed_files(tmp_path: Path) -> None:
    events = [
        ev(10 * i, 10 * i + 5, "label " + HOSTILE[-1 - i], desc) for i, desc in enumerate(HOSTILE)
    ]
    files = write(tmp_path, [events], {"line_chars": 2000})
    n = len(events)

    subs = list(srt.parse(files["srt"].read_text(encoding="utf-8")))
    assert [s.index for s in subs] == list(range(1, n + 1))
    assert [s.start.total_seconds() for s in subs] == [10.0 * i for i in range(n)]
    for s in subs:
        assert "\n\n" not in s.content and "-->" not in s.content and "<" not in s.content
        assert s.content.count("\n") == 0  # one event, one line
    assert "\u202e" not in files["srt"].read_text() and "\u200f" not in files["srt"].read_text()
    assert len(pysubs2.load(str(files["srt"]))) == n

    captions = webvtt.read(str(files["vtt"]))
    assert len(captions) == n
    for c, e in zip(captions, events, strict=True):
        # webvtt-py gives the raw cue text: our escapes, decoded, give the model's text on one line.
        raw = c.raw_text if hasattr(c, "raw_text") else c.text
        assert "-->" not in raw and "<" not in raw
        decoded = (
            raw.replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&")
            .replace("\u2236", ":")
        )
        assert decoded == one_line(f"{one_line(e.label)}: {one_line(e.description)}", 2000)
    assert len(pysubs2.load(str(files["vtt"]))) == n

    ffmpeg_reads(files["srt"])
    ffmpeg_reads(files["vtt"])


def test_overlapping_events_share_cues_one_line_each(tmp_path: Path) -> None:
    events = [
        ev(0, 10, "a", "first"),
        ev(5, 15, "b", "second"),
        ev(5, 8, "c", "third"),
        ev(20, 20, "d", "instant"),
    ]
    files = write(tmp_path, [events])
    subs = list(srt.parse(files["srt"].read_text()))
    spans = [(s.start.total_seconds(), s.end.total_seconds()) for s in subs]
    assert spans == [(0, 5), (5, 8), (8, 10), (10, 15), (20, 21)]  # never overlapping
    assert [s.content.split("\n") for s in subs] == [
        ["a: first"],
        ["a: first", "b: second", "c: third"],
        ["a: first", "b: second"],
        ["b: second"],
        ["d: instant"],  # a zero-length event stays on screen for min_cue_s
    ]
    ffmpeg_reads(files["srt"])


def test_too_many_concurrent_events_are_summarised() -> None:
    many = [ev(0, 10, f"l{i}", "x") for i in range(6)]
    ((_, _, lines),) = cues(many, max_lines=3)  # type: ignore[arg-type]
    assert lines == ("l0: x", "l1: x", "(+4 more)")


def test_chapters_file_only_when_chapters_exist(tmp_path: Path) -> None:
    chunks = [
        [ev(0, 20, "slide", "Title"), ev(30, 50, "slide", "Agenda")],
        [ev(300, 320, "demo <x>", "Live"), ev(330, 340, "demo <x>", "More")],
    ]
    files = write(tmp_path, chunks, {"dir": "subs"})
    assert files["chapters.vtt"].parent == tmp_path / "subs"
    chapters = webvtt.read(str(files["chapters.vtt"]))
    assert [(c.start, c.end, c.text) for c in chapters] == [
        ("00:00:00.000", "00:00:50.000", "slide"),
        ("00:05:00.000", "00:05:40.000", "demo &lt;x&gt;"),  # webvtt-py leaves entities as written
    ]
    ffmpeg_reads(files["chapters.vtt"])
    again = write(
        tmp_path / "few", [[ev(0, 20, "slide", "Title")]], {"dir": str(files["srt"].parent)}
    )
    assert not again["chapters.vtt"].exists()  # the older chapters went with the new run


@pytest.mark.parametrize("formats", [["vtt"], ["srt"]])
def test_formats_choose_the_files(tmp_path: Path, formats: list[str]) -> None:
    files = write(tmp_path, [[ev(1, 2)]], {"formats": formats})
    assert [k for k in ("srt", "vtt") if files[k].exists()] == formats
