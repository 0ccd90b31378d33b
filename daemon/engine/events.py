"""Turn what an analyzer returned into trustworthy events: validate, clamp, merge overlaps."""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from daemon.models import Candidate, EventSpan

MAX_LABEL = 200
MAX_DESCRIPTION = 4000


@dataclass(slots=True)
class Counts:
    """What normalisation did to a chunk's raw answer (kept in the chunk's provenance)."""

    received: int = 0
    kept: int = 0
    invalid: int = 0  # not an object, missing or non-numeric times, empty label
    clamped: int = 0  # partly outside the chunk, cut to it
    dropped: int = 0  # wholly outside the chunk
    swapped: int = 0  # end before start
    merged: int = 0  # same event already stored from an overlapping chunk, or repeated

    def as_dict(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in self.__slots__}  # type: ignore[attr-defined]


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_SPACE = re.compile(r"\s+")


def clean_text(value: Any, limit: int) -> str:
    """Model text is untrusted: one line, no control characters, bounded length."""
    text = unicodedata.normalize("NFC", str(value))
    text = _CONTROL.sub(" ", text)
    text = _SPACE.sub(" ", text).strip()
    return text[:limit]


def as_number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        v = float(value)
    elif isinstance(value, str):
        try:
            v = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    return v if math.isfinite(v) else None


def nearest_time(times: Sequence[float], t: float) -> float | None:
    if not times:
        return None
    return min(times, key=lambda x: abs(x - t))


def normalize(
    raw: Iterable[Any], start_s: float, end_s: float, frame_times: Sequence[float] = ()
) -> tuple[list[Candidate], Counts]:
    """Validate raw analyzer items (times in seconds from the recording's start) against the
    chunk [start_s, end_s]: fix reversed times, clamp what sticks out, drop what lies outside,
    attach the nearest sampled frame time as evidence. Returns events ordered by time."""
    counts = Counts()
    out: list[Candidate] = []
    seen: set[tuple[str, float, float]] = set()
    for item in raw:
        counts.received += 1
        if not isinstance(item, dict):
            counts.invalid += 1
            continue
        s, e = as_number(item.get("start_s")), as_number(item.get("end_s"))
        if e is None and s is not None:
            e = s
        label = clean_text(item.get("label", ""), MAX_LABEL)
        if s is None or e is None or not label:
            counts.invalid += 1
            continue
        if e < s:
            s, e = e, s
            counts.swapped += 1
        if e < start_s or s > end_s:
            counts.dropped += 1
            continue
        if s < start_s or e > end_s:
            s, e = max(s, start_s), min(e, end_s)
            counts.clamped += 1
        description = clean_text(item.get("description", ""), MAX_DESCRIPTION)
        confidence = as_number(item.get("confidence"))
        if confidence is not None:
            confidence = min(max(confidence, 0.0), 1.0)
        key = (label.casefold(), round(s, 3), round(e, 3))
        if key in seen:
            counts.merged += 1
            continue
        seen.add(key)
        extra = {
            k: v
            for k, v in item.items()
            if k not in ("start_s", "end_s", "label", "description", "confidence")
            and isinstance(v, (str, int, float, bool))
        }
        out.append(
            Candidate(
                start_s=round(s, 3),
                end_s=round(e, 3),
                label=label,
                description=description,
                confidence=confidence,
                evidence_s=nearest_time(frame_times, s),
                extra=extra,
            )
        )
    out.sort(key=lambda c: (c.start_s, c.end_s, c.label))
    counts.kept = len(out)
    return out, counts


def same_event(
    a_label: str, a_start: float, a_end: float, b: Candidate, tolerance_s: float
) -> bool:
    """Two reports of one moment: same label (case-insensitive) and times that overlap or lie
    within `tolerance_s` of each other."""
    if a_label.casefold() != b.label.casefold():
        return False
    gap = max(a_start, b.start_s) - min(a_end, b.end_s)
    return gap <= tolerance_s


def merge_overlaps(
    stored: Iterable[EventSpan],
    new: Sequence[Candidate],
    overlap: Sequence[tuple[float, float]],
    tolerance_s: float,
    counts: Counts | None = None,
) -> tuple[list[Candidate], dict[int, tuple[float, float]]]:
    """Merge new events into what other chunks already stored for the same moment.

    `stored` are the events other chunks stored around this chunk's window; `overlap` the time
    ranges this chunk shares with its neighbours. Only events touching an overlap can be
    duplicates, so the middle of a chunk is never merged away. A new event that repeats a stored
    one is not stored again; where it reaches further (a scene that began at the end of the
    previous chunk and goes on in this one), the stored event is widened to cover both, so the
    next chunk compares against the whole scene. Returns the events to store and the widened
    spans ({stored event id: (start_s, end_s)}), both for the chunk's commit."""
    spans = list(stored)
    kept: list[Candidate] = []
    widened: dict[int, tuple[float, float]] = {}
    for cand in new:
        in_overlap = any(cand.start_s <= hi and cand.end_s >= lo for lo, hi in overlap)
        i = next(
            (
                i
                for i, sp in enumerate(spans)
                if in_overlap and same_event(sp.label, sp.start_s, sp.end_s, cand, tolerance_s)
            ),
            None,
        )
        if i is None:
            kept.append(cand)
            continue
        if counts is not None:
            counts.merged += 1
            counts.kept -= 1
        sp = spans[i]
        lo, hi = min(sp.start_s, cand.start_s), max(sp.end_s, cand.end_s)
        if (lo, hi) != (sp.start_s, sp.end_s):
            spans[i] = replace(sp, start_s=lo, end_s=hi)
            widened[sp.id] = (lo, hi)
    return kept, widened
