"""Built-in plugin markdown_export: one Markdown report per finished recording.

The report (`<video stem>.framewatch.md`, next to the video or in `dir`) is rendered from a Jinja2
template a user may replace. With the recording's summary ([summary]) it opens with the summary's
title and text, its chapters (each a link that opens the video at its start) and key moments,
and the timeline is grouped by those chapters. Each report ends with an invisible CommonMark link
reference definition naming its recording, so when two recordings with the same file name
report into one `dir`, the second gets `<video stem>.<8 hex digits>.framewatch.md` instead of
overwriting the first. Every value a template prints is escaped for Markdown unless a filter
marked it safe, so model text can neither change the document's structure nor inject HTML, even
in a user's own template. Each timeline entry whose event has a thumbnail (EventInfo.thumbnail,
a JPEG in the store's media folder) shows it as an image whose link is relative to the report's
folder and percent-encoded, so the report and the media folder can move together.
"""

from __future__ import annotations

import hashlib
import os
import re
import string
from collections.abc import Sequence
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from markupsafe import Markup
from pydantic import BaseModel, ConfigDict, Field

from daemon.hookspecs import ConfigPath, hookimpl
from daemon.models import AlertInfo, EventInfo, RecordingInfo, StaticSpan, Summary, hms
from plugins._shared import Chapter as TimelineChapter
from plugins._shared import chapters, one_line, write_atomically

if TYPE_CHECKING:
    import jinja2

NAME = "markdown_export"
SUFFIX = ".framewatch.md"


class MarkdownSettings(BaseModel):
    """`[plugins.markdown_export]`"""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dir: ConfigPath | None = Field(
        None, description="Folder for the reports; default: beside each video."
    )
    template: ConfigPath | None = Field(
        None, description="A Jinja2 template replacing the built-in one."
    )
    chapter_gap_s: float = Field(
        60.0, gt=0, description="A quiet gap this long starts a new chapter."
    )
    chapter_min_s: float = Field(
        120.0,
        gt=0,
        description="A label change starts a new chapter once the current one lasts this long.",
    )


_PUNCT = frozenset(string.punctuation)
_HTML = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}


def md_escape(value: object) -> str:
    """Untrusted text as inert Markdown inline text: one line, `<>&` as entities (never HTML),
    every other ASCII punctuation character backslash-escaped (CommonMark allows that for all of
    them, so nothing can open a link, emphasis, code span, heading, list or table cell)."""
    return "".join(_HTML.get(ch) or ("\\" + ch if ch in _PUNCT else ch) for ch in one_line(value))


def _finalize(value: Any) -> Any:
    # Jinja calls this on every {{ ... }} result: escaping is the default, Markup opts out.
    if value is None:
        return ""
    if isinstance(value, Markup):
        return value
    return md_escape(value)


def _flatten(prefix: str, value: Any) -> list[tuple[str, Any]]:
    if isinstance(value, dict):
        out: list[tuple[str, Any]] = []
        for k, v in value.items():
            out += _flatten(f"{prefix}.{k}" if prefix else str(k), v)
        return out
    return [(prefix, value)]


def environment(loader: jinja2.BaseLoader | None = None) -> jinja2.Environment:
    import jinja2  # when a report is rendered, not when `framewatch --help` lists plugin commands

    env = jinja2.Environment(
        loader=loader,
        autoescape=False,  # HTML escaping is not Markdown escaping; _finalize does the latter
        finalize=_finalize,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["hms"] = lambda t: Markup(hms(float(t)))
    env.filters["md"] = lambda v: Markup(md_escape(v))
    return env


def _template(settings: MarkdownSettings) -> jinja2.Template:
    if settings.template is not None:
        source = Path(settings.template).read_text(encoding="utf-8")
    else:
        source = (files(__package__) / "report.md.j2").read_text(encoding="utf-8")
    return environment().from_string(source)


def owner_mark(recording: RecordingInfo) -> str:
    """The report's last line: a link reference definition (CommonMark renders nothing for it)
    naming the recording by a hash of its content fingerprint."""
    return f'[//]: # "framewatch recording {_owner(recording)}"'


def _owner(recording: RecordingInfo) -> str:
    return hashlib.sha256(recording.fingerprint.encode("utf-8")).hexdigest()[:8]


_MARK = re.compile(r'^\[//\]: # "framewatch recording ([0-9a-f]{8})"$', re.M)


def report_path(recording: RecordingInfo, settings: MarkdownSettings) -> Path:
    """`<stem>.framewatch.md` beside the video or in `dir`; when that file is another
    recording's report (its owner mark names another recording), `<stem>.<owner>.framewatch.md`."""
    video = Path(recording.path)
    folder = Path(settings.dir) if settings.dir is not None else video.parent
    plain = folder / (video.stem + SUFFIX)
    try:
        with plain.open(encoding="utf-8", errors="replace") as f:
            found = _MARK.findall(f.read())
    except OSError:
        return plain
    if not found or found[-1] == _owner(recording):
        return plain
    return folder / f"{video.stem}.{_owner(recording)}{SUFFIX}"


def relative_href(target: str | os.PathLike[str], folder: Path) -> str:
    """A link destination for `target` relative to `folder`: `/`-separated and percent-encoded
    (spaces, parentheses, `<>`, non-ASCII), so CommonMark reads it as one plain destination."""
    return quote(
        os.path.relpath(os.path.abspath(target), os.path.abspath(folder)).replace(os.sep, "/")
    )


def summary_chapters(summary: Summary, events: Sequence[EventInfo]) -> list[TimelineChapter]:
    """The timeline grouped by the summary's chapters (an event belongs to the chapter its
    start lies in); fewer than two chapters: [] (no grouping)."""
    if len(summary.chapters) < 2:
        return []
    out = []
    last = len(summary.chapters) - 1
    for i, c in enumerate(summary.chapters):
        inside = tuple(
            e
            for e in events
            if c.start_s <= e.start_s < c.end_s
            or (i == last and e.start_s >= c.start_s)
            or (i == 0 and e.start_s < c.start_s)
        )
        out.append(TimelineChapter(c.start_s, c.end_s, c.title, inside))
    return out


def render(
    recording: RecordingInfo,
    events: list[EventInfo],
    settings: MarkdownSettings,
    out: Path,
    static_spans: Sequence[StaticSpan] = (),
    alerts: Sequence[AlertInfo] = (),
    summary: Summary | None = None,
) -> str:
    """The report's text for `out` (links to the video are relative to where the report lies)."""
    href = relative_href(recording.path, out.parent)

    def link(e: EventInfo | StaticSpan | AlertInfo | Any) -> Markup:
        # Media fragment: browsers and many players open the video at that second.
        return Markup(f"[{hms(e.start_s)}]({href}#t={int(e.start_s)})")

    def thumb(e: EventInfo | Any) -> Markup:
        """The event's picture as an image (alt: label and time), or nothing without one."""
        picture = getattr(e, "thumbnail", None)
        if not picture:
            return Markup("")
        alt = md_escape(f"{e.label} at {hms(e.start_s)}")
        return Markup(f"![{alt}]({relative_href(picture, out.parent)})")

    ordered = sorted(events, key=lambda e: (e.start_s, e.end_s))
    settings_items = _flatten("", {k: v for k, v in recording.settings.items() if k != "model"})
    by_id = {e.id: e for e in ordered}
    context = {
        "title": summary.title if summary is not None else Path(recording.path).name,
        "summary": summary,
        "key_events": [by_id[i] for i in summary.key_events if i in by_id] if summary else [],
        "source": recording.path,
        "source_link": Markup(f"[{md_escape(Path(recording.path).name)}]({href})"),
        "duration": recording.duration_s,
        "model": recording.model,
        "profile": recording.profile,
        "settings": settings_items,
        "events": ordered,
        "chapters": summary_chapters(summary, ordered)
        if summary is not None
        else chapters(ordered, settings.chapter_gap_s, settings.chapter_min_s),
        "link": link,
        "thumb": thumb,
        "recording": recording,
        "static_spans": list(static_spans),
        "skipped_s": sum(s.end_s - s.start_s for s in static_spans if s.action == "skipped"),
        # Every alert of the recording with its outcome, fired or not: the report is the record.
        "alerts": sorted(alerts, key=lambda a: (a.start_s, a.id)),
    }
    return _template(settings).render(context).rstrip("\n") + "\n\n" + owner_mark(recording) + "\n"


@hookimpl
def register_settings() -> dict[str, type[BaseModel]]:
    return {NAME: MarkdownSettings}


@hookimpl
def recording_finished(
    recording: RecordingInfo,
    events: list[EventInfo],
    static_spans: list[StaticSpan],
    alerts: list[AlertInfo],
    summary: Summary | None,
    settings: MarkdownSettings | None,
) -> None:
    settings = settings or MarkdownSettings()
    out = report_path(recording, settings)
    write_atomically(out, render(recording, events, settings, out, static_spans, alerts, summary))
