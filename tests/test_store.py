"""The store on a real SQLite file: identity, claims, one-transaction commits, reaping."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy.exc import IntegrityError

from daemon.models import Candidate, ChunkWindow
from daemon.store import Store
from daemon.store.migrations import HEAD


def windows(n: int) -> list[ChunkWindow]:
    return [
        ChunkWindow(i, i * 9.0, i * 9.0 + 10, (i * 9.0 + 1, i * 9.0 + 2), 64, 64) for i in range(n)
    ]


def test_sqlite_runs_in_wal_mode(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'fw.db'}")
    with store.db.engine.connect() as c:
        assert c.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert c.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000


def test_same_bytes_second_name_is_same_recording(store: Store) -> None:
    a, new_a = store.recordings.register("/v/a.mp4", "fp1", 10, 1.0)
    b, new_b = store.recordings.register("/v/b.mp4", "fp1", 10, 2.0)
    c, new_c = store.recordings.register(
        "/v/a.mp4", "fp2", 11, 3.0
    )  # changed bytes at the same path
    assert new_a and not new_b and new_c
    assert a.id == b.id != c.id
    assert store.recordings.find("/v/b.mp4").id == a.id  # type: ignore[union-attr]
    assert store.recordings.find("/v/a.mp4").id == c.id  # type: ignore[union-attr]


def test_plan_is_kept_on_resume(store: Store) -> None:
    rec, _ = store.recordings.register("/v/a.mp4", "fp", 1, 0)
    first = store.chunks.plan(rec.id, windows(3))
    again = store.chunks.plan(rec.id, windows(5))
    assert len(first) == len(again) == 3


def test_claim_commit_replace_and_skip(store: Store) -> None:
    rec, _ = store.recordings.register("/v/a.mp4", "fp", 1, 0)
    store.chunks.plan(rec.id, windows(2))
    c0 = store.chunks.claim(rec.id, "me:1", 60)
    assert c0 is not None and c0.index == 0
    c1 = store.chunks.claim(rec.id, "me:1", 60)
    assert c1 is not None and c1.index == 1
    assert store.chunks.claim(rec.id, "me:1", 60) is None
    ev = [Candidate(1.0, 2.0, "a", "b")]
    stored = store.chunks.commit(
        rec.id, 0, "me:1", ev, {"model": "m", "prompt_hash": "h"}, notify=["p1", "p2"]
    )
    assert stored is not None and len(stored) == 1
    # A second commit of a done chunk stores nothing more (a redelivered chunk is idempotent).
    assert store.chunks.commit(rec.id, 0, "me:1", ev, {"model": "m", "prompt_hash": "h"}) is None
    # Someone else's lease: not ours to commit.
    assert store.chunks.commit(rec.id, 1, "other:2", ev, {}) is None
    assert len(store.events.of(rec.id)) == 1
    from daemon.store.tables import Delivery

    with store.db.session() as s:
        rows = s.exec(__import__("sqlmodel").select(Delivery)).all()
        assert sorted(r.plugin for r in rows) == ["p1", "p2"]


def test_failed_commit_rolls_back_everything(store: Store) -> None:
    rec, _ = store.recordings.register("/v/a.mp4", "fp", 1, 0)
    store.chunks.plan(rec.id, windows(1))
    store.chunks.claim(rec.id, "me:1", 60)
    bad = [Candidate(1.0, 2.0, "a", "b"), Candidate(1.0, 2.0, None, "b")]  # type: ignore[arg-type]
    with pytest.raises(IntegrityError):  # label NOT NULL
        store.chunks.commit(rec.id, 0, "me:1", bad, {})
    assert store.events.of(rec.id) == []
    assert store.chunks.of(rec.id)[0].status == "running"


def test_reap_dead_local_owner_and_expired_lease(store: Store) -> None:
    rec, _ = store.recordings.register("/v/a.mp4", "fp", 1, 0)
    store.chunks.plan(rec.id, windows(3))
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    import socket

    store.chunks.claim(
        rec.id, f"{socket.gethostname()}:{dead.stdout.strip()}", 3600
    )  # dead process
    store.chunks.claim(rec.id, "elsewhere:1", -1)  # lease already over
    store.chunks.claim(rec.id, "elsewhere:2", 3600)  # alive elsewhere, lease valid
    assert store.chunks.reap() == 2
    assert [c.status for c in store.chunks.of(rec.id)] == ["pending", "pending", "running"]


def test_release_returns_chunk(store: Store) -> None:
    rec, _ = store.recordings.register("/v/a.mp4", "fp", 1, 0)
    store.chunks.plan(rec.id, windows(1))
    store.chunks.claim(rec.id, "me:1", 60)
    store.chunks.release(rec.id, 0, "me:1")
    c = store.chunks.of(rec.id)[0]
    assert c.status == "pending" and c.attempts == 0


def test_many_boxes_register_one_file_one_creator(store: Store) -> None:
    """Boxes that see the same file at once: exactly one creates (and so enqueues) the recording."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(4) as pool:
        results = list(
            pool.map(
                lambda i: store.recordings.register(f"/box{i}/a.mp4", "same", 1, 0.0), range(8)
            )
        )
    assert sum(created for _, created in results) == 1
    assert len({rec.id for rec, _ in results}) == 1
    rid = results[0][0].id
    store.chunks.plan(rid, windows(2))
    with ThreadPoolExecutor(4) as pool:
        moved = list(
            pool.map(
                lambda _: store.recordings.start_analysis(rid, 20.0, {"profile": "general"}),
                range(6),
            )
        )
    assert moved.count(True) == 1


def test_queue_side_methods(store: Store) -> None:
    rec, _ = store.recordings.register("/v/a.mp4", "fp", 1, 0)
    store.chunks.plan(rec.id, windows(3))
    store.recordings.start_analysis(rec.id, 27.0, {})
    assert store.chunks.unfinished() == [(rec.id, 0), (rec.id, 1), (rec.id, 2)]
    assert store.chunks.claim(rec.id, "a:1", 60, 0) is not None
    # The queue handed it to b (a's lease ran out): b takes it, a's late commit is refused.
    assert store.chunks.claim(rec.id, "b:2", 60, 0) is not None
    assert store.chunks.commit(rec.id, 0, "a:1", [Candidate(1.0, 2.0, "x", "y")], {}) is None
    assert (
        store.chunks.commit(rec.id, 0, "b:2", [Candidate(1.0, 2.0, "x", "y")], {}, notify=["p"])
        is not None
    )
    assert store.chunks.claim(rec.id, "c:3", 60, 0) is None  # done: a redelivery is acknowledged
    store.chunks.claim(rec.id, "b:2", 60, 1)
    store.chunks.fail(rec.id, 1, "flaky", owner="b:2", requeue=True)
    assert store.chunks.of(rec.id)[1].status == "pending"
    assert store.recordings.settle(rec.id, ["p"], ["p"]).status == "analyzing"  # chunks left
    store.chunks.fail(rec.id, 1, "gave up after 3 deliveries")
    store.chunks.claim(rec.id, "b:2", 60, 2)
    store.chunks.commit(rec.id, 2, "b:2", [], {})
    settled = store.recordings.settle(rec.id, ["p"], ["p"])
    assert settled.status == "failed" and "chunk 1: gave up" in (settled.reason or "")
    assert store.recordings.settle(rec.id, ["p"], ["p"]).status == "failed"  # settles once
    counts = store.outbox.counts()
    assert counts["pending"] == 2 and counts["plugins"]["p"]["pending"] == 2  # chunk 0 + failed


def test_outbox_calibration_and_housekeeping(store: Store) -> None:
    rec, _ = store.recordings.register("/v/a.mp4", "fp", 1, 5.0)
    assert store.recordings.paths() == {"/v/a.mp4": (1, 5.0)}
    store.outbox.add(
        [("p", "recording_finished", rec.id, None), ("q", "recording_finished", rec.id, None)]
    )
    claimed = store.outbox.claim(["p", "q"], 10, 60)
    assert len(claimed) == 2 and store.outbox.claim(["p", "q"], 10, 60) == []
    assert store.outbox.renew(claimed[0].id, claimed[0].lease, claimed[0].lease + 5)
    store.outbox.done(claimed[0].id)
    store.outbox.failed(claimed[1].id, "boom", None)
    assert store.outbox.counts()["delivered"] == 1 and store.outbox.counts()["dead"] == 1
    assert store.outbox.block("p", "h", "gone") == 0
    assert store.outbox.blocked("p") == ("h", "gone") and store.outbox.unblock("p")
    assert store.calibration.record("m", "gpu", 2.0, 1.0) == 2.0
    assert store.calibration.ratio("m", "gpu") == 2.0
    store.chunks.plan(rec.id, windows(1))
    store.chunks.claim(rec.id, "me:1", 60)
    assert [r[:3] for r in store.chunks.running()] == [(rec.id, 0, "me:1")]
    store.chunks.fail(rec.id, 0, "x", owner="me:1")
    assert store.chunks.retry_failed(max_attempts=3, backoff_s=0.0) == [rec.id]
    assert store.recordings.defer(rec.id, "err", 100).attempts == 1
    assert store.recordings.due() == []


# -- read-only: `framewatch serve` (issue 14, item 10) --------------------------------------------


def test_read_only_store_reads_everything_and_writes_nothing(store: Store, url: str) -> None:
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    from tests.eventdata import CAMERA, populate

    rec = populate(store, "/v/camera.mp4", CAMERA, chunk_s=600)
    reader = Store(url, read_only=True)
    try:
        # Every read the web plugin makes, against what the writer sees.
        assert reader.recordings.list() == store.recordings.list()
        assert reader.recordings.get(rec.id) == rec
        assert reader.recordings.files(rec.id) == store.recordings.files(rec.id)
        assert reader.chunks.of(rec.id) == store.chunks.of(rec.id)
        assert reader.chunks.running() == store.chunks.running()
        assert reader.events.of(rec.id) == store.events.of(rec.id)
        assert [h.event for h in reader.events.search("red")] == [
            h.event for h in store.events.search("red")
        ]
        assert reader.outbox.counts() == store.outbox.counts()
        assert reader.stats() == store.stats()
        # The database itself refuses the reader's writes, on both backends.
        with pytest.raises(DBAPIError, match="(?i)read-?only"):
            reader.recordings.register("/v/new.mp4", "fp-new", 1, 0.0)
        with pytest.raises(DBAPIError, match="(?i)read-?only"):
            reader.recordings.set_status(rec.id, "failed", "written by a reader")
        assert store.recordings.get(rec.id).status == "done"
        # What a writer commits meanwhile, the reader sees in its next transaction.
        store.recordings.register("/v/later.mp4", "fp-later", 1, 0.0)
        assert store.recordings.find("/v/later.mp4") == reader.recordings.find("/v/later.mp4")
    finally:
        reader.close()
    with store.db.engine.connect() as c:
        assert c.execute(text("SELECT version_num FROM alembic_version")).scalar() == HEAD


def test_read_only_store_refuses_an_older_schema_without_migrating(store: Store, url: str) -> None:
    from sqlalchemy import text

    from daemon.store import ReadOnlyStoreError

    with store.db.engine.begin() as c:
        c.execute(text("UPDATE alembic_version SET version_num = '0003'"))
    # A password in the URL (PostgreSQL's trust authentication ignores it) is never shown.
    with_password = url.replace("postgres@", "postgres:hunter2-pw@")
    with pytest.raises(ReadOnlyStoreError) as ei:
        Store(with_password, read_only=True)
    message = str(ei.value)
    assert "schema revision 0003" in message and "never migrates" in message
    assert "\n" not in message and "hunter2" not in message
    with store.db.engine.connect() as c:
        assert c.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0003"
    with store.db.engine.begin() as c:
        c.execute(text("UPDATE alembic_version SET version_num = '0099'"))
    with pytest.raises(ReadOnlyStoreError, match="newer than this framewatch knows"):
        Store(url, read_only=True)


def test_read_only_store_creates_nothing(tmp_path: Path) -> None:
    from daemon.store import ReadOnlyStoreError

    missing = tmp_path / "state" / "fw.db"
    with pytest.raises(ReadOnlyStoreError, match="no store at"):
        Store(f"sqlite:///{missing}", read_only=True)
    assert not missing.parent.exists()
    Store(f"sqlite:///{tmp_path / 'fw.db'}").close()  # a writer's clean close removes its WAL
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert set(before) == {"fw.db"}
    reader = Store(f"sqlite:///{tmp_path / 'fw.db'}", read_only=True)
    assert reader.recordings.list() == []
    reader.close()
    # No -wal or -shm (immutable=1 without a writer), not one byte changed.
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
