"""Speech segments of overlapping chunks: one copy of what both chunks heard.

The rule of events (daemon/engine/events.py) for speech: a new segment that touches a range
where the chunk overlaps a neighbour, and shares at least half of the shorter one's time with a
segment that neighbour already stored, is that segment. Both chunks read context beyond their
ends, so a border-crossing segment comes out of both with nearly the same times; a copy one
chunk's detector split differently lies inside the other's and is dropped too. A segment in the
middle of a chunk is never dropped.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol, TypeVar

MIN_SHARE = 0.5


class Timed(Protocol):
    @property
    def start_s(self) -> float: ...
    @property
    def end_s(self) -> float: ...


T = TypeVar("T", bound=Timed)


def same_speech(a: Timed, b: Timed, min_share: float = MIN_SHARE) -> bool:
    """Two reports of one utterance: they share at least `min_share` of the shorter one's time."""
    shared = min(a.end_s, b.end_s) - max(a.start_s, b.start_s)
    shorter = max(min(a.end_s - a.start_s, b.end_s - b.start_s), 1e-6)
    return shared / shorter >= min_share


def merge_speech(
    stored: Iterable[Timed],
    new: Sequence[T],
    overlaps: Sequence[tuple[float, float]],
    min_share: float = MIN_SHARE,
) -> tuple[list[T], int]:
    """`new` without what the neighbouring chunks already `stored` (see the module), and how
    many were dropped."""
    neighbours = list(stored)
    kept = [
        seg
        for seg in new
        if not (
            any(seg.start_s <= hi and seg.end_s >= lo for lo, hi in overlaps)
            and any(same_speech(o, seg, min_share) for o in neighbours)
        )
    ]
    return kept, len(new) - len(kept)
