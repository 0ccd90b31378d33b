"""The summaries part of the store (revision 0007), on SQLite and PostgreSQL: one per recording,
replaced whole, dropped when the recording's events change, and what a digest covers."""

from __future__ import annotations

import time

import pytest

from daemon.models import Chapter, Summary
from daemon.store import Store
from tests.eventdata import populate, provenance, reanalyse
from tests.outbox import ev


def summary(rid: int, title: str = "A day", key: tuple[int, ...] = ()) -> Summary:
    return Summary(
        recording_id=rid,
        title=title,
        text="Someone came. Someone left.",
        chapters=(Chapter(0.0, 30.0, "arrival"), Chapter(30.0, 60.0, "departure")),
        key_events=key,
        provenance={"model": "m", "prompt_hash": "h", "batches": 1},
    )


def test_put_get_replace_delete(store: Store) -> None:
    rec = populate(store, "/v/a.mp4", [[ev(1, 2, "door", "opens"), ev(40, 41, "car", "leaves")]])
    ids = tuple(e.id for e in store.events.of(rec.id) if e.id is not None)
    assert store.summaries.get(rec.id) is None
    stored = store.summaries.put(summary(rec.id, key=ids[:1]))
    got = store.summaries.get(rec.id)
    assert got == stored
    assert got.title == "A day" and got.key_events == ids[:1]
    assert got.chapters == (Chapter(0.0, 30.0, "arrival"), Chapter(30.0, 60.0, "departure"))
    assert got.provenance["model"] == "m" and got.provenance["made_at"] > 0
    # Made again: replaced whole, still one row.
    store.summaries.put(summary(rec.id, "Another day", key=ids))
    again = store.summaries.get(rec.id)
    assert again is not None and again.title == "Another day" and again.key_events == ids
    assert store.summaries.delete(rec.id) is True
    assert store.summaries.get(rec.id) is None
    assert store.summaries.delete(rec.id) is False


def test_unknown_recording_is_refused(store: Store) -> None:
    with pytest.raises(KeyError):
        store.summaries.put(summary(12345))


def test_reanalysing_a_chunk_drops_the_stale_summary(store: Store) -> None:
    rec = populate(store, "/v/a.mp4", [[ev(1, 2, "door", "opens")], [ev(70, 71, "car", "x")]])
    store.summaries.put(summary(rec.id))
    other = populate(store, "/v/b.mp4", [[ev(1, 2, "dog", "barks")]])
    store.summaries.put(summary(other.id, "B"))
    reanalyse(store, rec.id, 1, [ev(75, 76, "bike", "passes")], provenance("p2"))
    assert store.summaries.get(rec.id) is None  # its events changed: the old ids are gone
    kept = store.summaries.get(other.id)
    assert kept is not None and kept.title == "B"


def test_finished_lists_done_recordings_of_a_period_with_summaries(store: Store) -> None:
    before = time.time() - 1
    a = populate(store, "/cam/front/a.mp4", [[ev(1, 2)]])
    b = populate(store, "/cam/back/b.mp4", [[ev(1, 2)]])
    populate(store, "/cam/front/c.mp4", [[ev(1, 2)]], finish="failed")
    store.summaries.put(summary(a.id, "front"))
    got = store.summaries.finished(before)
    assert [(r.id, s.title if s else None) for r, _, s in got] == [(a.id, "front"), (b.id, None)]
    assert [r.id for r, _, _ in store.summaries.finished(before, folder="/cam/front")] == [a.id]
    assert store.summaries.finished(time.time() + 60) == []
    assert store.summaries.finished(before, until=before + 0.5) == []
