"""`framewatch events` plain listing (SQLAlchemy Core, daemon/listing.py: no ORM) and --recording,
on SQLite and PostgreSQL; the listing reads in index order and never holds the write lock."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.cli import main
from daemon.models import Candidate, ChunkWindow
from daemon.store import Store, listing
from daemon.store.db import read_only


def _commit(store: Store, rec_id: int, index: int, times: list[float]) -> None:
    store.chunks.plan(rec_id, [ChunkWindow(index, 0.0, 4000.0, (1.0, 2.0), 64, 64)])
    chunk = store.chunks.claim(rec_id, "t", 60)
    assert chunk is not None
    events = [Candidate(start_s=t, end_s=t + 2, label=f"l{t:g}", description="d") for t in times]
    store.chunks.commit(rec_id, chunk.index, "t", events, {"model": "m", "prompt_hash": "h"})


def test_plain_listing_in_order_and_filtered(
    url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = Store(url)
    for name, times in (("b.mp4", [3725.0, 5.0]), ("a.mp4", [1.0])):
        rec, _ = store.recordings.register(str(tmp_path / name), f"fp-{name}", 1, 0.0)
        _commit(store, rec.id, 0, times)
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'[storage]\nurl = "{url}"\n')
    capsys.readouterr()  # the store's own log lines
    assert main(["events", "--config", str(cfg)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        f"{tmp_path / 'b.mp4'} [00:00:05-00:00:07] l5: d",
        f"{tmp_path / 'b.mp4'} [01:02:05-01:02:07] l3725: d",
        f"{tmp_path / 'a.mp4'} [00:00:01-00:00:03] l1: d",
    ]
    assert main(["events", "--config", str(cfg), "--recording", str(tmp_path / "a.mp4")]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"{tmp_path / 'a.mp4'} [00:00:01-00:00:03] l1: d"
    ]
    assert main(["events", "--config", str(cfg), "--recording", str(tmp_path / "none.mp4")]) == 0
    assert capsys.readouterr().out == ""
    # The same bytes seen under a new name: the listing follows the name to the recording.
    store.recordings.register(str(tmp_path / "renamed.mp4"), "fp-a.mp4", 1, 0.0)
    assert main(["events", "--config", str(cfg), "--recording", str(tmp_path / "renamed.mp4")]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"{tmp_path / 'a.mp4'} [00:00:01-00:00:03] l1: d"
    ]
    # The listing and the Store's own reading agree, event for event.
    with read_only(store.db.engine) as conn, conn.begin():
        rows = [tuple(r) for r in listing.event_lines(conn)]
    assert rows == [
        (p, e.start_s, e.end_s, e.label, e.description) for e, p in store.events.with_paths()
    ]
    store.close()


def test_listing_reads_in_index_order_without_a_sort(tmp_path: Path) -> None:
    """The order is the ix_event_listing index's (revision 0003): SQLite reads it, never sorts."""
    store = Store(f"sqlite:///{tmp_path / 'fw.db'}")
    with store.db.engine.connect() as conn:
        for stmt, params in (
            (listing.ALL_LINES, {}),
            (listing.RECORDING_LINES, {"recording_id": 1}),
        ):
            sql = str(stmt.compile(dialect=conn.dialect))
            plan = " | ".join(
                row[-1]
                for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql, tuple(params.values()))
            )
            assert "ix_event_listing" in plan and "TEMP B-TREE" not in plan, plan
    store.close()


def test_listing_never_takes_the_write_lock(tmp_path: Path) -> None:
    """A listing reads one snapshot with a deferred transaction: a writer commits while it is
    open (an IMMEDIATE one would make the writer wait out the 30 s busy timeout and fail)."""
    store = Store(f"sqlite:///{tmp_path / 'fw.db'}")
    rec, _ = store.recordings.register(str(tmp_path / "a.mp4"), "fp-a", 1, 0.0)
    _commit(store, rec.id, 0, [1.0])
    with read_only(store.db.engine) as conn, conn.begin():
        assert len(listing.event_lines(conn)) == 1
        other, _ = store.recordings.register(str(tmp_path / "b.mp4"), "fp-b", 1, 0.0)
        _commit(store, other.id, 0, [2.0])
        assert len(listing.event_lines(conn)) == 1  # still the snapshot it began with
    with read_only(store.db.engine) as conn, conn.begin():
        assert len(listing.event_lines(conn)) == 2
    store.close()
