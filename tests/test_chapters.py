"""Chapter files from a recording's summary (subtitles plugin): WebVTT chapters read by webvtt-py,
an FFmpeg metadata file that ffmpeg embeds into a copy of a clip (read back with ffprobe), and
Matroska chapter XML that mkvmerge takes; the `naming` option's file names. The hook is called
directly with a constructed Summary (the summary pass is built elsewhere)."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import webvtt

from daemon.models import Chapter, RecordingInfo, Summary
from plugins._shared import one_line
from plugins.subtitles import SubtitleSettings, outputs, recording_finished
from plugins.subtitles.chapterfiles import ffmeta_escape, to_ffmetadata
from tests.media import make_video
from tests.outbox import HOSTILE

TITLES = (
    "Opening: a = b; #1 \\ backslash",
    *HOSTILE[:4],
    "Fin",
)


def summary_of(seconds: float, titles: tuple[str, ...] = TITLES) -> Summary:
    step = seconds / len(titles)
    return Summary(
        recording_id=1,
        title="Test = recording; #1",
        text="stand-in summary",
        chapters=tuple(
            Chapter(round(i * step, 3), round((i + 1) * step, 3), t) for i, t in enumerate(titles)
        ),
        key_events=(),
    )


def recording(video: Path) -> RecordingInfo:
    return RecordingInfo(1, str(video), "fp", "done", None, 6.0)


def finish(video: Path, summary: Summary | None, **settings: object) -> dict[str, Path]:
    s = SubtitleSettings(**settings)  # type: ignore[arg-type]
    recording_finished(
        recording=recording(video), events=[], speech=[], summary=summary, settings=s
    )
    return outputs(recording(video), s)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def ffprobe_chapters(path: Path) -> list[dict[str, object]]:
    run = subprocess.run(
        ["ffprobe", "-v", "error", "-show_chapters", "-of", "json", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(run.stdout)["chapters"]  # type: ignore[no-any-return]


@pytest.fixture
def clip(tmp_path: Path) -> Path:
    return make_video(tmp_path / "talk.mp4", seconds=6)


def test_ffmetadata_embeds_into_a_copy_and_reads_back(tmp_path: Path, clip: Path) -> None:
    summary = summary_of(6.0)
    before = digest(clip)
    files = finish(clip, summary)
    assert files["ffmetadata"].name == "talk.framewatch.chapters.ffmeta"
    assert files["ffmetadata"].read_text(encoding="utf-8").startswith(";FFMETADATA1\n")
    out = tmp_path / "with-chapters.mp4"
    subprocess.run(
        [
            "ffmpeg", "-nostdin", "-v", "error", "-i", str(clip), "-i", str(files["ffmetadata"]),
            "-map_metadata", "1", "-codec", "copy", str(out),
        ],
        check=True,
        timeout=60,
    )  # fmt: skip
    assert digest(clip) == before, "the user's video is never changed"
    got = ffprobe_chapters(out)
    assert [c["tags"]["title"] for c in got] == [one_line(t, 200) for t in TITLES]  # type: ignore[index]
    for c, want in zip(got, summary.chapters, strict=True):
        assert float(c["start_time"]) == pytest.approx(want.start_s, abs=0.002)  # type: ignore[arg-type]
        assert float(c["end_time"]) == pytest.approx(want.end_s, abs=0.002)  # type: ignore[arg-type]


def test_ffmetadata_escapes_what_ffmpeg_reads_specially() -> None:
    assert ffmeta_escape("a=b;c#d\\e\nf") == "a\\=b\\;c\\#d\\\\e\\\nf"
    text = to_ffmetadata([Chapter(0, 1, "x\n[CHAPTER]\nSTART=9")], "t")
    # one_line first: the injected section header and key stay inside the title.
    assert text.count("[CHAPTER]") == 2 and text.count("\nSTART=") == 1


def test_matroska_xml_is_read_by_mkvmerge(tmp_path: Path) -> None:
    mkvmerge = shutil.which("mkvmerge")
    assert mkvmerge, "mkvmerge (Debian's mkvtoolnix, install.sh) is needed"
    clip = make_video(tmp_path / "cam.mkv", seconds=6)
    summary = summary_of(6.0)
    files = finish(clip, summary)
    assert files["matroska"].name == "cam.framewatch.chapters.xml"
    before = digest(clip)
    out = tmp_path / "cam-chapters.mkv"
    run = subprocess.run(
        [mkvmerge, "-o", str(out), "--chapters", str(files["matroska"]), str(clip)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr  # 1 would mean warnings
    assert digest(clip) == before
    got = ffprobe_chapters(out)
    assert [c["tags"]["title"] for c in got] == [one_line(t, 200) for t in TITLES]  # type: ignore[index]
    assert [round(float(c["start_time"]), 3) for c in got] == [  # type: ignore[arg-type]
        c.start_s for c in summary.chapters
    ]


def test_webvtt_chapters_parse(tmp_path: Path, clip: Path) -> None:
    summary = summary_of(6.0)
    files = finish(clip, summary)
    captions = webvtt.read(str(files["chapters"]))
    assert len(captions) == len(TITLES)
    assert [c.start_in_seconds for c in captions] == [int(c.start_s) for c in summary.chapters]
    decoded = [
        c.text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&") for c in captions
    ]
    assert [d.replace("\u2236", ":") for d in decoded] == [one_line(t, 160) for t in TITLES]


def test_without_a_summary_no_player_chapter_files_and_stale_ones_go(clip: Path) -> None:
    files = finish(clip, summary_of(6.0))
    assert files["ffmetadata"].exists() and files["matroska"].exists()
    files = finish(clip, None)  # a replay without a summary: nothing stale is left
    assert not files["ffmetadata"].exists() and not files["matroska"].exists()
    assert not files["chapters"].exists()  # no events, so no event chapters either
    files = finish(clip, summary_of(6.0), chapter_formats=["matroska"])
    assert files["matroska"].exists() and not files["ffmetadata"].exists()
    assert not files["chapters"].exists()


def test_naming_default_and_media_server(tmp_path: Path) -> None:
    video = tmp_path / "Film (2010).mkv"
    rec = recording(video)
    default = outputs(rec, SubtitleSettings())
    assert {k: p.name for k, p in default.items()} == {
        "srt": "Film (2010).framewatch.srt",
        "vtt": "Film (2010).framewatch.vtt",
        "chapters": "Film (2010).framewatch.chapters.vtt",
        "ffmetadata": "Film (2010).framewatch.chapters.ffmeta",
        "matroska": "Film (2010).framewatch.chapters.xml",
    }
    named = outputs(rec, SubtitleSettings(naming="media-server", language="en"))
    assert {k: p.name for k, p in named.items()} == {
        "srt": "Film (2010).en.framewatch.srt",
        "vtt": "Film (2010).en.framewatch.vtt",
        "chapters": "Film (2010).chapters.vtt",
        "ffmetadata": "Film (2010).chapters.ffmeta",
        "matroska": "Film (2010).chapters.xml",
    }
    bare = outputs(rec, SubtitleSettings(naming="media-server", title="notes"))
    assert bare["srt"].name == "Film (2010).notes.srt"
    for bad in ({"language": "../x"}, {"title": "a.b"}, {"title": "x/y"}):
        with pytest.raises(ValueError):
            SubtitleSettings(naming="media-server", **bad)  # type: ignore[arg-type]


def test_media_server_names_never_touch_a_persons_own_files(tmp_path: Path) -> None:
    """`movie.chapters.xml` may be someone's own file: with media-server naming framewatch
    writes and removes only what it wrote (a hidden ledger of digests)."""
    video = tmp_path / "movie.mkv"
    video.write_bytes(b"")
    mine = tmp_path / "movie.chapters.xml"
    mine.write_text("<Chapters>my own</Chapters>\n")
    files = finish(video, summary_of(60.0), naming="media-server", language="en")
    assert mine.read_text() == "<Chapters>my own</Chapters>\n"  # left alone, said so in the log
    assert files["ffmetadata"].name == "movie.chapters.ffmeta" and files["ffmetadata"].exists()
    assert files["srt"].name == "movie.en.framewatch.srt" and files["srt"].exists()
    finish(video, None, naming="media-server", language="en")  # no summary now
    assert mine.exists() and not files["ffmetadata"].exists()  # ours removed, theirs kept
    # One of ours edited by a person since: kept too.
    finish(video, summary_of(60.0), naming="media-server", language="en")
    files["ffmetadata"].write_text(";FFMETADATA1\ntitle=edited\n")
    finish(video, None, naming="media-server", language="en")
    assert files["ffmetadata"].read_text() == ";FFMETADATA1\ntitle=edited\n"
