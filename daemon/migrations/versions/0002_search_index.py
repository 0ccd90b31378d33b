"""search index: FTS5 over event label/description on SQLite (kept by triggers), a GIN tsvector
index on PostgreSQL (DDL from daemon/search.py)

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


def upgrade() -> None:
    from daemon import search

    conn = op.get_bind()
    if conn.dialect.name == "sqlite":
        for ddl in search.sqlite_index_ddl():
            conn.exec_driver_sql(ddl)
        # Index the events a store already held (an upgraded one).
        conn.exec_driver_sql(search.SQLITE_REBUILD)
    elif conn.dialect.name == "postgresql":
        for ddl in search.postgres_index_ddl():
            conn.exec_driver_sql(ddl)


def downgrade() -> None:
    conn = op.get_bind()
    if conn.dialect.name == "sqlite":
        for trigger in ("event_fts_ai", "event_fts_ad", "event_fts_au"):
            conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {trigger}")
        conn.exec_driver_sql("DROP TABLE IF EXISTS event_fts")
    elif conn.dialect.name == "postgresql":
        conn.exec_driver_sql("DROP INDEX IF EXISTS event_search_idx")
