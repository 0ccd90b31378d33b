"""Alembic on both backends: an empty database and one made before Alembic (create_all, the
previous schema) both reach the newest revision with no manual step, and match the tables."""

from __future__ import annotations

import time
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlmodel import SQLModel

from daemon.store import Store, migrations
from daemon.store.db import make_engine


def schema_diff(store: Store) -> list[object]:
    with store.db.engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"include_object": migrations.include_object})
        return list(compare_metadata(ctx, SQLModel.metadata))


def test_empty_database_is_upgraded_to_head(url: str) -> None:
    store = Store(url)
    try:
        with store.db.engine.connect() as conn:
            assert migrations.current(conn) == migrations.head()
        assert schema_diff(store) == []
        rec, created = store.recordings.register("/v/a.mp4", "fp", 1, 0.0)
        assert created and store.recordings.get(rec.id).path == "/v/a.mp4"
        # Opening a current database is one query, not a migration run (tests open many stores).
        t0 = time.perf_counter()
        Store(url).close()
        assert time.perf_counter() - t0 < 0.3
    finally:
        store.close()


def test_database_from_before_alembic_is_adopted_and_keeps_its_rows(url: str) -> None:
    engine = make_engine(url)
    SQLModel.metadata.create_all(engine)  # what Store() did before this revision
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO recording (fingerprint, path, size, status, chunks_total, attempts, created_at, "
                "updated_at, settings) VALUES ('fp0', '/old.mp4', 5, 'done', 0, 0, 1.0, 1.0, '{}')"
            )
        )
        assert not inspect(conn).has_table("alembic_version")
    engine.dispose()
    store = Store(url)
    try:
        with store.db.engine.connect() as conn:
            assert migrations.current(conn) == migrations.head()
        assert schema_diff(store) == []
        (old,) = [r for r, _, _ in store.recordings.list()]
        assert (old.path, old.status) == ("/old.mp4", "done")
    finally:
        store.close()


def test_the_baseline_revision_is_the_pre_alembic_schema(tmp_path: Path) -> None:
    """Adoption stamps BASELINE on a create_all database: valid only while the revision creates
    exactly those tables; a later schema change belongs in a new revision, not in 0001."""
    from alembic import command

    engine = make_engine(f"sqlite:///{tmp_path / 'base.db'}")
    with engine.begin() as conn:
        command.upgrade(migrations.alembic_config(conn), migrations.BASELINE)
    with engine.connect() as conn:
        tables = set(inspect(conn).get_table_names()) - {"alembic_version"}
    assert tables >= {"recording", "recording_path", "chunk", "event", "delivery"}
    engine.dispose()


def test_head_constant_is_alembics_newest_revision() -> None:
    assert migrations.head_from_scripts() == migrations.HEAD, (
        "move migrations.HEAD to the new revision"
    )
