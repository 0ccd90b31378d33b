"""The store on a real SQLite file: identity, claims, one-transaction commits, reaping."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon.engine.events import Candidate
from daemon.models import ChunkWindow
from daemon.store import Store
from tests.services import store_url_for


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """Every store test runs on a SQLite file and on a private PostgreSQL database."""
    with store_url_for(request.param, tmp_path) as url:
        st = Store(url)
        try:
            yield st
        finally:
            st.close()


def windows(n: int) -> list[ChunkWindow]:
    return [ChunkWindow(i, i * 9.0, i * 9.0 + 10, (i * 9.0 + 1, i * 9.0 + 2), 64, 64) for i in range(n)]


def test_wal_mode(store: Store) -> None:
    if store.engine.dialect.name != "sqlite":
        pytest.skip("WAL is SQLite's")
    with store.engine.connect() as c:
        assert c.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"


def test_same_bytes_second_name_is_same_recording(store: Store) -> None:
    a, new_a = store.register("/v/a.mp4", "fp1", 10, 1.0)
    b, new_b = store.register("/v/b.mp4", "fp1", 10, 2.0)
    c, new_c = store.register("/v/a.mp4", "fp2", 11, 3.0)  # changed bytes at the same path
    assert new_a and not new_b and new_c
    assert a.id == b.id != c.id
    assert store.find_recording("/v/b.mp4").id == a.id  # type: ignore[union-attr]
    assert store.find_recording("/v/a.mp4").id == c.id  # type: ignore[union-attr]


def test_plan_is_kept_on_resume(store: Store) -> None:
    rec, _ = store.register("/v/a.mp4", "fp", 1, 0)
    first = store.plan(rec.id, windows(3))
    again = store.plan(rec.id, windows(5))
    assert len(first) == len(again) == 3


def test_claim_commit_replace_and_skip(store: Store) -> None:
    rec, _ = store.register("/v/a.mp4", "fp", 1, 0)
    store.plan(rec.id, windows(2))
    c0 = store.claim(rec.id, "me:1", 60)
    assert c0 is not None and c0.index == 0
    c1 = store.claim(rec.id, "me:1", 60)
    assert c1 is not None and c1.index == 1
    assert store.claim(rec.id, "me:1", 60) is None
    ev = [Candidate(1.0, 2.0, "a", "b")]
    stored = store.commit_chunk(rec.id, 0, "me:1", ev, {"model": "m", "prompt_hash": "h"}, notify=["p1", "p2"])
    assert stored is not None and len(stored) == 1
    # A second commit of a done chunk stores nothing more (a redelivered chunk is idempotent).
    assert store.commit_chunk(rec.id, 0, "me:1", ev, {"model": "m", "prompt_hash": "h"}) is None
    # Someone else's lease: not ours to commit.
    assert store.commit_chunk(rec.id, 1, "other:2", ev, {}) is None
    assert len(store.events(rec.id)) == 1
    from daemon.store import Delivery

    with store.session() as s:
        rows = s.exec(__import__("sqlmodel").select(Delivery)).all()
        assert sorted(r.plugin for r in rows) == ["p1", "p2"]


def test_failed_commit_rolls_back_everything(store: Store) -> None:
    rec, _ = store.register("/v/a.mp4", "fp", 1, 0)
    store.plan(rec.id, windows(1))
    store.claim(rec.id, "me:1", 60)
    bad = [Candidate(1.0, 2.0, "a", "b"), Candidate(1.0, 2.0, None, "b")]  # type: ignore[arg-type]
    with pytest.raises(Exception):
        store.commit_chunk(rec.id, 0, "me:1", bad, {})
    assert store.events(rec.id) == []
    assert store.chunks(rec.id)[0].status == "running"


def test_reap_dead_local_owner_and_expired_lease(store: Store) -> None:
    rec, _ = store.register("/v/a.mp4", "fp", 1, 0)
    store.plan(rec.id, windows(3))
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    import socket

    store.claim(rec.id, f"{socket.gethostname()}:{dead.stdout.strip()}", 3600)  # dead process
    store.claim(rec.id, "elsewhere:1", -1)  # lease already over
    store.claim(rec.id, "elsewhere:2", 3600)  # alive elsewhere, lease valid
    assert store.reap() == 2
    assert [c.status for c in store.chunks(rec.id)] == ["pending", "pending", "running"]


def test_release_returns_chunk(store: Store) -> None:
    rec, _ = store.register("/v/a.mp4", "fp", 1, 0)
    store.plan(rec.id, windows(1))
    store.claim(rec.id, "me:1", 60)
    store.release_chunk(rec.id, 0, "me:1")
    c = store.chunks(rec.id)[0]
    assert c.status == "pending" and c.attempts == 0
