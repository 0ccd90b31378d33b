"""Validation, clamping and overlap merging of what analyzers return."""

from __future__ import annotations

import pytest

from daemon.engine.events import Candidate, Counts, clean_text, merge_overlaps, normalize
from daemon.models import EventSpan


def ev(s: float, e: float, label: str = "door opens", d: str = "x") -> dict:
    return {"start_s": s, "end_s": e, "label": label, "description": d}


def test_inside_kept_with_evidence() -> None:
    out, c = normalize([ev(12, 14)], 10, 20, frame_times=[10.5, 11.5, 12.4, 13.5])
    assert [(x.start_s, x.end_s) for x in out] == [(12, 14)]
    assert out[0].evidence_s == 12.4
    assert c.kept == 1 and c.clamped == c.dropped == c.invalid == 0


def test_clamp_and_drop_are_counted() -> None:
    out, c = normalize([ev(8, 12), ev(19, 25), ev(0, 5), ev(30, 31)], 10, 20)
    assert [(x.start_s, x.end_s) for x in out] == [(10, 12), (19, 20)]
    assert c.clamped == 2 and c.dropped == 2 and c.kept == 2 and c.received == 4


def test_reversed_times_swapped() -> None:
    out, c = normalize([ev(15, 12)], 10, 20)
    assert (out[0].start_s, out[0].end_s) == (12, 15) and c.swapped == 1


@pytest.mark.parametrize(
    "bad",
    [
        None,
        3,
        "text",
        [],
        {"label": "x"},
        ev(float("nan"), 12),
        ev(11, 12, label="   "),
        {"start_s": True, "end_s": 12, "label": "a"},
    ],
)
def test_invalid_items_counted_not_raised(bad: object) -> None:
    out, c = normalize([bad], 10, 20)
    assert out == [] and c.invalid == 1


def test_missing_end_means_instant() -> None:
    out, _ = normalize([{"start_s": 12, "label": "flash"}], 10, 20)
    assert (out[0].start_s, out[0].end_s) == (12, 12)


def test_numeric_strings_accepted() -> None:
    out, _ = normalize([{"start_s": "12.5", "end_s": "13", "label": "a"}], 10, 20)
    assert out[0].start_s == 12.5


def test_exact_repeats_in_one_answer_merged() -> None:
    out, c = normalize([ev(12, 13), ev(12, 13, label="DOOR OPENS")], 10, 20)
    assert len(out) == 1 and c.merged == 1


def test_text_cleaned() -> None:
    assert clean_text("a\nb\x00\tc   d\u200f", 100) == "a b c d\u200f"
    assert len(clean_text("x" * 10_000, 200)) == 200


def test_merge_drops_duplicate_in_overlap_only() -> None:
    new = [Candidate(296.0, 298.0, "Door opens", "x"), Candidate(150.0, 151.0, "door opens", "y")]
    counts = Counts(kept=2)
    stored = [EventSpan(7, "door opens", 295.5, 297.0)]
    kept, widened = merge_overlaps(stored, new, [(295.0, 300.0)], 2.0, counts)
    assert [k.start_s for k in kept] == [150.0]  # the middle of the chunk is never merged away
    assert counts.merged == 1 and counts.kept == 1
    assert widened == {7: (295.5, 298.0)}  # the stored event now covers both reports


def test_merge_keeps_different_labels_and_distant_times() -> None:
    new = [Candidate(296.0, 296.5, "car", "x"), Candidate(299.0, 299.5, "door opens", "x")]
    kept, widened = merge_overlaps(
        [EventSpan(1, "door opens", 295.0, 295.5)], new, [(295.0, 300.0)], 2.0
    )
    assert len(kept) == 2 and widened == {}


def test_a_scene_across_three_overlapping_chunks_is_stored_once() -> None:
    """A green scene from 4 s to 8.5 s, chunks [0,5] [4,9] [8,12] with 1 s overlaps: chunk 0 saw
    its start (4.5-5), chunk 1 all of it, chunk 2 its end (8-8.5). Chunk 1 widens chunk 0's event
    instead of being merged away, so chunk 2 finds the whole scene and adds nothing."""
    first = EventSpan(1, "green", 4.5, 5.0)
    kept, widened = merge_overlaps([first], [Candidate(4.5, 8.5, "green", "")], [(4, 5), (8, 9)], 1)
    assert kept == [] and widened == {1: (4.5, 8.5)}
    whole = EventSpan(1, "green", *widened[1])
    kept, widened = merge_overlaps([whole], [Candidate(8.0, 8.5, "green", "")], [(8, 9)], 1)
    assert kept == [] and widened == {}
