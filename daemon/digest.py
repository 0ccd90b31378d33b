"""Digests: one Markdown file over every recording finished in a period (`framewatch digest`,
and daily when `[digest] schedule` is on, scheduler.py), and the `digest_ready` hook call.

Only stored text is read (each recording's summary; a recording without one is listed with its
event count), so a digest costs no model time. The file lies in `[digest] dir` (default:
`digests/` beside an SQLite store, else under the state directory), named by its period (and
folder), and is replaced when the same period is digested again. Plugins that implement
`digest_ready` are called once each, directly (not through the outbox: a digest belongs to no
recording): a failure is logged and not retried; running `framewatch digest` again re-sends it.
"""

from __future__ import annotations

import hashlib
import os
import string
import tempfile
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

import structlog

from daemon.models import DigestInfo, RecordingInfo, Summary, hms

if TYPE_CHECKING:
    from daemon.config import Config
    from daemon.pluginhost.manager import PluginManager
    from daemon.store import Store

log = structlog.get_logger(__name__)

_PUNCT = frozenset(string.punctuation)
_HTML = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}


def md(value: object) -> str:
    """Stored text as inert Markdown inline text (the markdown_export plugin's rule): one line,
    `<>&` as entities, every ASCII punctuation character backslash-escaped."""
    text = " ".join(str(value).split())
    return "".join(_HTML.get(ch) or ("\\" + ch if ch in _PUNCT else ch) for ch in text)


def _when(t: float) -> str:
    return datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M")


def digest_name(since: float, until: float, folder: str | None) -> str:
    stamp = "%Y%m%d-%H%M"
    name = (
        f"digest-{datetime.fromtimestamp(since).strftime(stamp)}"
        f"-to-{datetime.fromtimestamp(until).strftime(stamp)}"
    )
    if folder:
        name += "-" + hashlib.sha256(os.path.abspath(folder).encode()).hexdigest()[:8]
    return name + ".md"


def render(
    since: float,
    until: float,
    rows: list[tuple[RecordingInfo, float, Summary | None]],
    out: Path,
    events: dict[int, int],
    folder: str | None = None,
) -> str:
    """The digest's Markdown for `out` (links to videos relative to where it lies)."""
    lines = [f"# framewatch digest: {_when(since)} to {_when(until)}", ""]
    where = f" under {md(folder)}" if folder else ""
    lines += [f"{len(rows)} recordings finished{where}.", ""]
    for rec, settled, summary in rows:
        name = Path(rec.path).name
        href = quote(os.path.relpath(rec.path, out.parent).replace(os.sep, "/"))
        title = summary.title if summary is not None else name
        lines += [f"## {md(title)}", ""]
        duration = hms(rec.duration_s) if rec.duration_s is not None else "unknown"
        lines += [
            f"- Source: [{md(name)}]({href})",
            f"- Finished: {_when(settled)}, duration {duration}, {events.get(rec.id, 0)} events",
            "",
        ]
        if summary is None:
            lines += ["No summary was made for this recording.", ""]
            continue
        lines += [md(summary.text), ""]
        for c in summary.chapters:
            lines.append(f"- [{hms(c.start_s)}]({href}#t={int(c.start_s)}) {md(c.title)}")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".digest-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def make_digest(
    store: Store, config: Config, since: float, until: float, folder: str | None = None
) -> DigestInfo:
    """Write the digest of the recordings finished in [since, until) (under `folder`) and say
    what it holds."""
    rows = store.summaries.finished(since, until, folder)
    out = config.digest_dir() / digest_name(since, until, folder)
    events = {rec.id: len(store.events.of(rec.id)) for rec, _, _ in rows}
    text = render(since, until, rows, out, events, folder)
    _write(out, text)
    log.info("digest_written", path=str(out), recordings=len(rows))
    return DigestInfo(
        path=str(out),
        since=since,
        until=until,
        markdown=text,
        recordings=tuple((r, s) for r, _, s in rows),
        folder=os.path.abspath(folder) if folder else None,
    )


def notify_digest(plugins: PluginManager, digest: DigestInfo) -> list[str]:
    """Call each plugin's `digest_ready` once; the names of those that took it."""
    told = []
    for name in plugins.subscribers("digest_ready"):
        try:
            plugins.call_one(name, "digest_ready", digest=digest)
        except Exception as exc:  # a plugin may fail in any way; the next digest is its retry
            log.warning("digest_notify_failed", plugin=name, error=f"{type(exc).__name__}: {exc}")
            continue
        told.append(name)
    return told


__all__ = ["digest_name", "make_digest", "md", "notify_digest", "render"]
