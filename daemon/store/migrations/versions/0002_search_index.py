"""search index: FTS5 over event label/description on SQLite (kept by triggers), a GIN tsvector
index on PostgreSQL

The DDL is written out here, as this revision created it: a revision is history, and must not
change when the search code does. The PostgreSQL index expression must stay spelled exactly as
daemon/store/search.py's PG_DOCUMENT (the planner uses the index only then); a test checks it.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 12:52:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


SQLITE_DDL = (
    "CREATE VIRTUAL TABLE IF NOT EXISTS event_fts USING fts5("
    "label, description, content='event', content_rowid='id', "
    "tokenize='porter unicode61 remove_diacritics 2')",
    "CREATE TRIGGER IF NOT EXISTS event_fts_ai AFTER INSERT ON event BEGIN "
    "INSERT INTO event_fts(rowid, label, description) "
    "VALUES (new.id, new.label, new.description); END",
    "CREATE TRIGGER IF NOT EXISTS event_fts_ad AFTER DELETE ON event BEGIN "
    "INSERT INTO event_fts(event_fts, rowid, label, description) "
    "VALUES ('delete', old.id, old.label, old.description); END",
    "CREATE TRIGGER IF NOT EXISTS event_fts_au AFTER UPDATE OF label, description ON event "
    "BEGIN INSERT INTO event_fts(event_fts, rowid, label, description) "
    "VALUES ('delete', old.id, old.label, old.description); "
    "INSERT INTO event_fts(rowid, label, description) "
    "VALUES (new.id, new.label, new.description); END",
    # Index the events a store already held (an upgraded one).
    "INSERT INTO event_fts(event_fts) VALUES ('rebuild')",
)
PG_DOCUMENT = (
    "(setweight(to_tsvector('english'::regconfig, label), 'A') || "
    "setweight(to_tsvector('english'::regconfig, description), 'B'))"
)
POSTGRES_DDL = (f"CREATE INDEX IF NOT EXISTS event_search_idx ON event USING GIN ({PG_DOCUMENT})",)


def upgrade() -> None:
    conn = op.get_bind()
    ddl = {"sqlite": SQLITE_DDL, "postgresql": POSTGRES_DDL}.get(conn.dialect.name, ())
    for statement in ddl:
        conn.exec_driver_sql(statement)


def downgrade() -> None:
    conn = op.get_bind()
    if conn.dialect.name == "sqlite":
        for trigger in ("event_fts_ai", "event_fts_ad", "event_fts_au"):
            conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {trigger}")
        conn.exec_driver_sql("DROP TABLE IF EXISTS event_fts")
    elif conn.dialect.name == "postgresql":
        conn.exec_driver_sql("DROP INDEX IF EXISTS event_search_idx")
