"""Helpers the built-in output plugins share: model text is untrusted, files are replaced whole."""

from __future__ import annotations

import os
import re
import tempfile
import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from daemon.models import EventInfo

# Bidirectional controls can make text display in another order than it is stored (the
# "Trojan Source" trick); line and paragraph separators would break line-based formats.
_BIDI = re.compile("[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_SPACE = re.compile(r"\s+")


def one_line(value: object, limit: int | None = None) -> str:
    """Untrusted text as a single visible line: no controls, bidi overrides or line breaks,
    whitespace collapsed, at most `limit` characters (an ellipsis marks a cut)."""
    text = _BIDI.sub("", unicodedata.normalize("NFC", str(value)))
    text = "".join(" " if unicodedata.category(ch) in ("Cc", "Zl", "Zp") else ch for ch in text)
    text = _SPACE.sub(" ", text).strip()
    if limit is not None and len(text) > limit:
        text = text[: max(0, limit - 1)].rstrip() + "…"
    return text


@dataclass(frozen=True, slots=True)
class Chapter:
    """A stretch of the recording: its events, and the most frequent label as a title."""

    start_s: float
    end_s: float
    title: str
    events: tuple[EventInfo, ...]


def chapters(
    events: Sequence[EventInfo], gap_s: float = 60.0, min_s: float = 120.0
) -> list[Chapter]:
    """Group events into chapters: a new one begins after a quiet gap of at least `gap_s`, or
    where the label changes once the current chapter has lasted `min_s` (so a lecture's slides
    or a meeting's topics become chapters without one per event). Fewer than two chapters means
    the events do not allow chapters: [] then."""
    ordered = sorted(events, key=lambda e: (e.start_s, e.end_s))
    groups: list[list[EventInfo]] = []
    end = float("-inf")
    for e in ordered:
        if groups:
            current = groups[-1]
            quiet = e.start_s - end >= gap_s
            new_topic = (
                e.label.casefold() != current[-1].label.casefold()
                and e.start_s - current[0].start_s >= min_s
            )
            if not (quiet or new_topic):
                current.append(e)
                end = max(end, e.end_s)
                continue
        groups.append([e])
        end = e.end_s
    if len(groups) < 2:
        return []
    out = []
    for i, g in enumerate(groups):
        start = g[0].start_s
        stop = max(e.end_s for e in g)
        if i + 1 < len(groups):
            stop = min(stop, groups[i + 1][0].start_s)  # chapters must not overlap
        if stop <= start:
            stop = (
                groups[i + 1][0].start_s
                if i + 1 < len(groups) and groups[i + 1][0].start_s > start
                else start + 1.0
            )
        counts = Counter(e.label.casefold() for e in g)
        top = max(counts.values())
        title = next(e.label for e in g if counts[e.label.casefold()] == top)
        out.append(Chapter(start, stop, title, tuple(g)))
    return out


def write_atomically(path: Path, text: str) -> None:
    """Readers see the old report or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
