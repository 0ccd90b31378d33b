"""Built-in plugin subtitles: SRT and WebVTT sidecars of a recording's events, plus WebVTT chapters.

Files are `<video stem>.framewatch.srt`, `.framewatch.vtt` and `.framewatch.chapters.vtt` (when
the events form chapters), beside the video or in `dir`. Concurrent events share one cue, one line
each, so overlapping events never produce overlapping cues. Model text is reduced to single lines
and escaped, so it can neither end a cue nor forge a timing line.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from daemon.hookspecs import ConfigPath, hookimpl
from daemon.models import EventInfo, RecordingInfo
from plugins._shared import chapters, one_line, write_atomically

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
        True, description="Also write WebVTT chapters when the events form chapters."
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
    spans = sorted(
        ((e.start_s, max(e.end_s, e.start_s + min_cue_s), _line(e, line_chars)) for e in events),
        key=lambda s: s[0],  # stable: concurrent events keep the store's order
    )
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
    video = Path(recording.path)
    folder = Path(settings.dir) if settings.dir is not None else video.parent
    base = folder / f"{video.stem}.framewatch"
    return {
        "srt": base.with_name(base.name + ".srt"),
        "vtt": base.with_name(base.name + ".vtt"),
        "chapters": base.with_name(base.name + ".chapters.vtt"),
    }


@hookimpl
def register_settings() -> dict[str, type[BaseModel]]:
    return {NAME: SubtitleSettings}


@hookimpl
def recording_finished(
    recording: RecordingInfo, events: list[EventInfo], settings: SubtitleSettings | None
) -> None:
    settings = settings or SubtitleSettings()
    paths = outputs(recording, settings)
    items = cues(
        events,
        max_lines=settings.max_lines,
        line_chars=settings.line_chars,
        min_cue_s=settings.min_cue_s,
    )
    if "srt" in settings.formats:
        write_atomically(paths["srt"], to_srt(items))
    if "vtt" in settings.formats:
        write_atomically(paths["vtt"], to_vtt(items))
    found = (
        chapters(events, settings.chapter_gap_s, settings.chapter_min_s)
        if settings.chapters
        else []
    )
    if found:
        write_atomically(
            paths["chapters"],
            to_vtt(
                [(c.start_s, c.end_s, (one_line(c.title, settings.line_chars),)) for c in found]
            ),
        )
    else:
        paths["chapters"].unlink(missing_ok=True)  # a replay must not leave an older run's chapters
