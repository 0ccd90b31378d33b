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
from structlog.testing import capture_logs

from daemon.models import Utterance
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


# -- speech -----------------------------------------------------------------------------------


def said(start: float, end: float, text: str, language: str | None = "de") -> Utterance:
    return Utterance(start, end, text, language)


def deliver_speech(
    tmp_path: Path, speech: list[list[Utterance]], *, audio: bool = True, name: str = "lecture"
) -> list[dict[str, Any]]:
    cfg = make_config(tmp_path, {"subtitles": {}})
    pm = manager(cfg)
    store = Store(cfg.storage_url())
    video = tmp_path / f"{name}.mp4"
    video.write_bytes(b"")
    analysed(store, pm, video, [[] for _ in speech], speech=speech, audio=audio)
    with capture_logs() as logs:
        assert Dispatcher(store, pm, cfg).deliver_all() == 1
    store.close()
    return logs


def test_speech_files_are_named_for_media_servers_and_parse(tmp_path: Path) -> None:
    long = " ".join(f"Wort{i}" for i in range(60))  # a 30-s segment: several cues
    speech = [
        [said(1.0, 3.0, "Guten Morgen."), said(10.0, 40.0, long)],
        [said(70.0, 71.0, HOSTILE[3] + " " + HOSTILE[0], "en")],
    ]
    logs = deliver_speech(tmp_path, speech)
    srt_path, vtt_path = tmp_path / "lecture.de.srt", tmp_path / "lecture.de.vtt"
    assert [e["event"] for e in logs if e["event"].startswith("speech_")] == [
        "speech_subtitles_written"
    ]
    subs = list(srt.parse(srt_path.read_text(encoding="utf-8")))
    assert subs[0].content == "Guten Morgen." and subs[0].start.total_seconds() == 1.0
    middle = [s for s in subs if 10.0 <= s.start.total_seconds() < 40.0]
    assert len(middle) >= len(long) // 84 + 1 and all(len(s.content) <= 84 for s in middle)
    assert middle[-1].end.total_seconds() == pytest.approx(40.0)
    assert " ".join(s.content for s in middle) == long  # nothing lost in the split
    for s in subs:
        assert "-->" not in s.content and "\n" not in s.content and "<" not in s.content
    assert len(pysubs2.load(str(srt_path))) == len(subs)
    assert len(webvtt.read(str(vtt_path))) == len(subs)
    ffmpeg_reads(srt_path)
    ffmpeg_reads(vtt_path)
    # Beside the visual-event files, which are written as before.
    assert (tmp_path / "lecture.framewatch.srt").exists()


def test_no_speech_writes_none_says_why_and_removes_an_earlier_runs(tmp_path: Path) -> None:
    deliver_speech(tmp_path, [[said(1.0, 2.0, "Hallo.")]])
    assert (tmp_path / "lecture.de.srt").exists()
    # The same video analysed again (a replay after re-analysis): silence only this time.
    (tmp_path / "fw.db").unlink()
    logs = deliver_speech(tmp_path, [[]])
    assert not list(tmp_path.glob("lecture.de.*")) and not list(tmp_path.glob(".lecture.*"))
    (none,) = [e for e in logs if e["event"] == "speech_subtitles_none"]
    assert none["reason"] == "nothing was said"
    logs = deliver_speech(tmp_path, [[]], audio=False, name="silent-film")
    (none,) = [e for e in logs if e["event"] == "speech_subtitles_none"]
    assert none["reason"] == "no audio stream"
    assert not list(tmp_path.glob("silent-film.*.srt")) or [
        p.name for p in tmp_path.glob("silent-film.*.srt")
    ] == ["silent-film.framewatch.srt"]


def test_a_subtitle_file_framewatch_did_not_write_is_left_alone(tmp_path: Path) -> None:
    mine = "1\n00:00:01,000 --> 00:00:02,000\nSubtitles someone made by hand\n"
    (tmp_path / "lecture.de.srt").write_text(mine)
    logs = deliver_speech(tmp_path, [[said(1.0, 2.0, "Hallo.")]])
    assert (tmp_path / "lecture.de.srt").read_text() == mine
    (kept,) = [e for e in logs if e["event"] == "speech_subtitles_kept"]
    assert kept["path"] == str(tmp_path / "lecture.de.srt")
    assert "Hallo." in (tmp_path / "lecture.de.vtt").read_text()  # the other one is written
    # One of ours edited by hand since is not overwritten either.
    (tmp_path / "lecture.de.vtt").write_text("WEBVTT\n\n00:00.000 --> 00:01.000\nfixed by hand\n")
    (tmp_path / "fw.db").unlink()
    deliver_speech(tmp_path, [[said(1.0, 2.0, "Hallo wieder.")]])
    assert "fixed by hand" in (tmp_path / "lecture.de.vtt").read_text()
