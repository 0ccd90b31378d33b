"""Built-in plugin subtitles: SRT and WebVTT sidecars of a recording's events, plus chapter files,
and of what was said (speech on).

Files are `<video stem>.framewatch.srt`, `.framewatch.vtt` and `.framewatch.chapters.vtt`, beside
the video or in `dir`. With a recording summary (`recording_finished(summary=...)`), its chapters
are written as WebVTT chapters, an FFmpeg metadata file (`.framewatch.chapters.ffmeta`) and
Matroska chapter XML (`.framewatch.chapters.xml`) (chapterfiles.py); without one, the WebVTT
chapters come from the events (when they form chapters) and no other chapter file is written.
`naming = "media-server"` names them the way Jellyfin (and Plex, Kodi) pick external files up:
`<stem>[.<language>].<title>.srt` / `.vtt`, and `<stem>.chapters.vtt` / `.ffmeta` / `.xml`;
names a person may use too, so only files framewatch wrote (the hidden
`.<stem>.framewatch-files.json` keeps their digests) are ever replaced or removed.
The video itself is never changed. Concurrent events share one cue, one line
each, so overlapping events never produce overlapping cues. Model text is reduced to single lines
and escaped, so it can neither end a cue nor forge a timing line.

The transcript goes to `<video stem>.<language>.srt` and `.vtt`, the names media servers (Jellyfin,
Plex, Kodi) pick up as a subtitle track in that language: the language most of the speech was in,
else `und`. A file of that name that framewatch did not write (or that was edited since) is left
alone and said so; the hidden `.<video stem>.framewatch-speech.json` remembers what was written.
No speech (no audio stream, silence only) writes none, removes the ones an earlier run wrote,
and says so in the log.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from daemon.hookspecs import ConfigPath, get_logger, hookimpl
from daemon.models import EventInfo, RecordingInfo, SpeechSegment, Summary
from plugins._shared import chapters, one_line, write_atomically
from plugins.subtitles.chapterfiles import to_ffmetadata, to_matroska_xml

log = get_logger(__name__)

NAME = "subtitles"
Cue = tuple[float, float, tuple[str, ...]]


class SubtitleSettings(BaseModel):
    """`[plugins.subtitles]`"""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dir: ConfigPath | None = Field(
        None, description="Folder for the files; default: beside each video."
    )
    formats: list[Literal["srt", "vtt"]] = Field(
        ["srt", "vtt"], description="Which sidecars to write."
    )
    chapters: bool = Field(
        True,
        description="Also write chapter files: from the recording's summary when there is one, "
        "else WebVTT chapters when the events form chapters.",
    )
    chapter_formats: list[Literal["vtt", "ffmetadata", "matroska"]] = Field(
        ["vtt", "ffmetadata", "matroska"],
        description="Chapter files of a summary's chapters: WebVTT chapters, an FFmpeg metadata "
        "file (ffmpeg -i video -i FILE -map_metadata 1 -codec copy OUT) and Matroska chapter XML "
        "(mkvmerge --chapters FILE).",
    )
    naming: Literal["framewatch", "media-server"] = Field(
        "framewatch",
        description="File names: framewatch (<stem>.framewatch.srt, .framewatch.chapters.vtt, ...) "
        "or media-server (<stem>[.<language>].<title>.srt, <stem>.chapters.vtt, ...: the same "
        "stem as the video, as Jellyfin, Plex and Kodi pick external files up).",
    )
    language: str | None = Field(
        None,
        pattern=r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})?$",
        description="naming media-server: the language tag of the event subtitles (the language "
        "the model writes in, e.g. en); none by default.",
    )
    title: str = Field(
        "framewatch",
        pattern=r"^[A-Za-z0-9_-]{1,40}$",
        description="naming media-server: the title tag of the event subtitles (a media server "
        "shows it as the track's name).",
    )
    max_lines: int = Field(
        3, ge=1, le=10, description="Concurrent events shown per cue; the rest as (+N more)."
    )
    line_chars: int = Field(160, ge=20, le=2000, description="Longest line of a cue.")
    min_cue_s: float = Field(1.0, gt=0, description="Shortest time an event stays on screen.")
    chapter_gap_s: float = Field(
        60.0, gt=0, description="A quiet gap this long starts a new chapter."
    )
    chapter_min_s: float = Field(
        120.0, gt=0, description="A label change starts a chapter after this long."
    )
    speech: bool = Field(
        True, description="Also write what was said as <stem>.<language>.srt / .vtt (speech on)."
    )
    speech_cue_chars: int = Field(
        84, ge=20, le=500, description="Longest speech cue; longer segments are split in time."
    )


def _line(e: EventInfo, limit: int) -> str:
    label, text = one_line(e.label), one_line(e.description)
    return one_line(f"{label}: {text}" if text else label, limit)


def cues(
    events: Sequence[EventInfo],
    *,
    max_lines: int = 3,
    line_chars: int = 160,
    min_cue_s: float = 1.0,
) -> list[Cue]:
    """Non-overlapping cues: the timeline is cut at every event start and end, and each piece
    shows the events active in it, one line each (oldest first)."""
    return _timeline(
        [(e.start_s, max(e.end_s, e.start_s + min_cue_s), _line(e, line_chars)) for e in events],
        max_lines,
    )


def speech_cues(
    segments: Sequence[SpeechSegment],
    *,
    max_lines: int = 3,
    cue_chars: int = 84,
    min_cue_s: float = 1.0,
) -> list[Cue]:
    """Cues of what was said: each segment's text in pieces of at most `cue_chars` (whole words
    where possible), its time shared among them by length; segments that overlap (two chunks
    heard one differently) share cues as concurrent events do."""
    spans = []
    for seg in segments:
        pieces = _pieces(one_line(seg.text), cue_chars)
        total = sum(len(p) for p in pieces) or 1
        t, length = seg.start_s, max(seg.end_s, seg.start_s + min_cue_s) - seg.start_s
        for piece in pieces:
            step = length * len(piece) / total
            spans.append((t, t + step, piece))
            t += step
    return _timeline(spans, max_lines)


def _pieces(text: str, limit: int) -> list[str]:
    pieces: list[str] = []
    for word in text.split(" "):
        while len(word) > limit:  # one unbroken run longer than a cue
            pieces.append(word[:limit])
            word = word[limit:]
        if pieces and len(pieces[-1]) + 1 + len(word) <= limit:
            pieces[-1] += " " + word
        elif word:
            pieces.append(word)
    return pieces


def _timeline(items: Sequence[tuple[float, float, str]], max_lines: int) -> list[Cue]:
    spans = sorted(items, key=lambda s: s[0])  # stable: concurrent items keep their order
    edges = sorted({t for s in spans for t in s[:2]})
    out: list[Cue] = []
    active: list[tuple[float, float, str]] = []
    nxt = 0
    for a, b in zip(edges, edges[1:], strict=False):
        active = [s for s in active if s[1] > a]
        while nxt < len(spans) and spans[nxt][0] <= a:
            active.append(spans[nxt])
            nxt += 1
        lines = [s[2] for s in active if s[1] >= b]
        if not lines:
            continue
        if len(lines) > max_lines:
            lines = lines[: max_lines - 1] + [f"(+{len(lines) - max_lines + 1} more)"]
        shown = tuple(lines)
        if out and out[-1][2] == shown and abs(out[-1][1] - a) < 1e-9:
            out[-1] = (out[-1][0], b, shown)  # same lines continue: one cue, not two
        else:
            out.append((a, b, shown))
    return out


def _clock(t: float, sep: str) -> str:
    ms = max(0, round(t * 1000))
    h, rem = divmod(ms, 3_600_000)
    m, rem = divmod(rem, 60_000)
    s, ms = divmod(rem, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


# SRT has no escapes and players interpret <i>/<font> tags and {\...} override codes: swap the
# bracket characters for look-alikes. With `>` gone no line can contain the `-->` of a timing line.
_SRT = str.maketrans({"<": "‹", ">": "›", "{": "❴", "}": "❵"})
_VTT = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
# Lenient readers (pysubs2, many players) take any line holding two timestamps for a timing line:
# a timestamp in the text gets ratio signs (∶) for colons, which look the same to a reader.
_STAMP = re.compile(r"\d+:\d+:\d+[.,]\d+")


def _defuse_stamps(text: str) -> str:
    return _STAMP.sub(lambda m: m.group(0).replace(":", "\u2236"), text)


def srt_text(line: str) -> str:
    return _defuse_stamps(one_line(line).translate(_SRT))


def vtt_text(line: str) -> str:
    return "".join(_VTT.get(ch, ch) for ch in _defuse_stamps(one_line(line)))


def to_srt(items: Sequence[Cue]) -> str:
    blocks = [
        f"{i}\n{_clock(a, ',')} --> {_clock(b, ',')}\n"
        + "\n".join(srt_text(x) or "-" for x in lines)
        + "\n"
        for i, (a, b, lines) in enumerate(items, 1)
    ]
    return "\n".join(blocks)


def to_vtt(items: Sequence[Cue]) -> str:
    blocks = [
        f"{_clock(a, '.')} --> {_clock(b, '.')}\n"
        + "\n".join(vtt_text(x) or "-" for x in lines)
        + "\n"
        for a, b, lines in items
    ]
    return "WEBVTT\n\n" + "\n".join(blocks)


def outputs(recording: RecordingInfo, settings: SubtitleSettings) -> dict[str, Path]:
    """The event subtitles' and chapter files' paths, by `naming`."""
    video = Path(recording.path)
    folder = Path(settings.dir) if settings.dir is not None else video.parent
    if settings.naming == "media-server":
        tag = f".{settings.language}" if settings.language else ""
        subs = f"{video.stem}{tag}.{settings.title}"
        chaps = f"{video.stem}.chapters"
    else:
        subs = chaps = f"{video.stem}.framewatch"
        chaps += ".chapters"
    return {
        "srt": folder / f"{subs}.srt",
        "vtt": folder / f"{subs}.vtt",
        "chapters": folder / f"{chaps}.vtt",
        "ffmetadata": folder / f"{chaps}.ffmeta",
        "matroska": folder / f"{chaps}.xml",
    }


def language_of(segments: Sequence[SpeechSegment]) -> str:
    """The language most of the speech (by time) was in; "und" (undetermined) when unknown."""
    said: Counter[str] = Counter()
    for seg in segments:
        said[seg.language or "und"] += max(seg.end_s - seg.start_s, 0.001)
    return said.most_common(1)[0][0] if said else "und"


def speech_outputs(
    recording: RecordingInfo, settings: SubtitleSettings, language: str
) -> dict[str, Path]:
    video = Path(recording.path)
    folder = Path(settings.dir) if settings.dir is not None else video.parent
    return {f: folder / f"{video.stem}.{language}.{f}" for f in ("srt", "vtt")}


def _ledger(recording: RecordingInfo, settings: SubtitleSettings, kind: str = "speech") -> Path:
    video = Path(recording.path)
    folder = Path(settings.dir) if settings.dir is not None else video.parent
    return folder / f".{video.stem}.framewatch-{kind}.json"


def _digest(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except FileNotFoundError:
        return None


def write_speech(
    recording: RecordingInfo, segments: Sequence[SpeechSegment], settings: SubtitleSettings
) -> list[Path]:
    """Write the transcript's SRT/VTT (see the module) and return the files written. Files an
    earlier run wrote and this one does not (another language, or no speech now) are removed,
    unless they were changed since."""
    ledger = _ledger(recording, settings)
    try:
        written: dict[str, str] = json.loads(ledger.read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        written = {}
    targets: dict[Path, str] = {}
    if segments:
        language = language_of(segments)
        items = speech_cues(
            segments,
            max_lines=settings.max_lines,
            cue_chars=settings.speech_cue_chars,
            min_cue_s=settings.min_cue_s,
        )
        paths = speech_outputs(recording, settings, language)
        render = {"srt": to_srt, "vtt": to_vtt}
        targets = {paths[f]: render[f](items) for f in settings.formats}
    kept: dict[str, str] = {}
    done = []
    for path, text in targets.items():
        ours = written.get(path.name)
        if path.exists() and _digest(path) != ours:
            log.warning(
                "speech_subtitles_kept",
                path=str(path),
                reason="the file exists and framewatch did not write it (or it was edited)",
            )
            continue
        write_atomically(path, text)
        kept[path.name] = hashlib.sha256(text.encode("utf-8")).hexdigest()
        done.append(path)
    for name, digest in written.items():
        old = ledger.parent / Path(name).name  # only ever a file beside the ledger
        if name not in kept and old not in targets and _digest(old) == digest:
            old.unlink()
    if kept:
        write_atomically(ledger, json.dumps(kept, indent=1) + "\n")
    else:
        ledger.unlink(missing_ok=True)
    return done


@hookimpl
def register_settings() -> dict[str, type[BaseModel]]:
    return {NAME: SubtitleSettings}


@hookimpl
def recording_finished(
    recording: RecordingInfo,
    events: list[EventInfo],
    speech: list[SpeechSegment],
    summary: Summary | None,
    settings: SubtitleSettings | None,
) -> None:
    settings = settings or SubtitleSettings()
    paths = outputs(recording, settings)
    items = cues(
        events,
        max_lines=settings.max_lines,
        line_chars=settings.line_chars,
        min_cue_s=settings.min_cue_s,
    )
    files: dict[Path, str | None] = {}
    if "srt" in settings.formats:
        files[paths["srt"]] = to_srt(items)
    if "vtt" in settings.formats:
        files[paths["vtt"]] = to_vtt(items)
    # A chapter file not written this time is removed, so a replay never leaves an older run's.
    texts = chapter_texts(events, summary, settings)
    files.update({paths[k]: texts.get(k) for k in ("chapters", "ffmetadata", "matroska")})
    if settings.naming == "framewatch":  # names only framewatch uses: ours to write and remove
        for path, text in files.items():
            if text is not None:
                write_atomically(path, text)
            else:
                path.unlink(missing_ok=True)
    else:  # names a person may use too (movie.chapters.xml): only the files framewatch wrote
        write_owned(_ledger(recording, settings, "files"), files)
    heard = recording.settings.get("speech")
    if settings.speech and (heard or speech):
        written = write_speech(recording, speech, settings)
        if not speech:
            why = "no audio stream" if heard.get("audio") is False else "nothing was said"
            log.info("speech_subtitles_none", recording_id=recording.id, reason=why)
        elif written:
            log.info("speech_subtitles_written", files=[str(p) for p in written])


def chapter_texts(
    events: Sequence[EventInfo], summary: Summary | None, settings: SubtitleSettings
) -> dict[str, str]:
    """The chapter files' texts (see the module), by outputs() key."""
    texts: dict[str, str] = {}
    if settings.chapters and summary is not None and summary.chapters:
        spans = [(c.start_s, c.end_s, c.title) for c in summary.chapters]
        if "ffmetadata" in settings.chapter_formats:
            texts["ffmetadata"] = to_ffmetadata(summary.chapters, summary.title)
        if "matroska" in settings.chapter_formats:
            texts["matroska"] = to_matroska_xml(summary.chapters)
    elif settings.chapters:
        found = chapters(events, settings.chapter_gap_s, settings.chapter_min_s)
        spans = [(c.start_s, c.end_s, c.title) for c in found]
    else:
        spans = []
    if spans and (summary is None or "vtt" in settings.chapter_formats):
        texts["chapters"] = to_vtt(
            [(a, b, (one_line(title, settings.line_chars),)) for a, b, title in spans]
        )
    return texts


def write_owned(ledger: Path, files: dict[Path, str | None]) -> list[Path]:
    """Write each file (text) or remove it (None), but only where no file is or the file is one
    framewatch wrote and nobody changed since (its digest in the hidden `ledger`); any other file
    of that name is left alone and said so. Returns the files written."""
    try:
        written: dict[str, str] = json.loads(ledger.read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        written = {}
    done = []
    for path, text in files.items():
        current = _digest(path)
        if current is not None and written.get(path.name) != current:
            if text is not None:
                log.warning(
                    "subtitles_file_kept",
                    path=str(path),
                    reason="the file exists and framewatch did not write it (or it was edited)",
                )
            continue
        if text is None:
            path.unlink(missing_ok=True)
            written.pop(path.name, None)
            continue
        write_atomically(path, text)
        written[path.name] = hashlib.sha256(text.encode("utf-8")).hexdigest()
        done.append(path)
    if written:
        write_atomically(ledger, json.dumps(written, indent=1) + "\n")
    else:
        ledger.unlink(missing_ok=True)
    return done
