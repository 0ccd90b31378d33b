"""speech: the segments said in each chunk, stored with its events, and their search index (FTS5
over the text on SQLite, kept by triggers; a GIN tsvector index on PostgreSQL)

The PostgreSQL index expression must stay spelled exactly as daemon/store/search.py's
PG_SPEECH_DOCUMENT (the planner uses the index only then); a test checks it.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 04:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SQLITE_DDL = (
    "CREATE VIRTUAL TABLE IF NOT EXISTS speech_fts USING fts5("
    "text, content='speech', content_rowid='id', "
    "tokenize='porter unicode61 remove_diacritics 2')",
    "CREATE TRIGGER IF NOT EXISTS speech_fts_ai AFTER INSERT ON speech BEGIN "
    "INSERT INTO speech_fts(rowid, text) VALUES (new.id, new.text); END",
    "CREATE TRIGGER IF NOT EXISTS speech_fts_ad AFTER DELETE ON speech BEGIN "
    "INSERT INTO speech_fts(speech_fts, rowid, text) VALUES ('delete', old.id, old.text); END",
    "CREATE TRIGGER IF NOT EXISTS speech_fts_au AFTER UPDATE OF text ON speech BEGIN "
    "INSERT INTO speech_fts(speech_fts, rowid, text) VALUES ('delete', old.id, old.text); "
    "INSERT INTO speech_fts(rowid, text) VALUES (new.id, new.text); END",
    "INSERT INTO speech_fts(speech_fts) VALUES ('rebuild')",
)
PG_SPEECH_DOCUMENT = "setweight(to_tsvector('english'::regconfig, text), 'B')"
POSTGRES_DDL = (
    f"CREATE INDEX IF NOT EXISTS speech_search_idx ON speech USING GIN (({PG_SPEECH_DOCUMENT}))",
)


def upgrade() -> None:
    conn = op.get_bind()
    # A database made by create_all of today's tables (adopted and stamped 0001) has the table.
    if not sa.inspect(conn).has_table("speech"):
        op.create_table(
            "speech",
            sa.Column("id", sa.Integer(), primary_key=True, nullable=False),
            sa.Column("recording_id", sa.Integer(), sa.ForeignKey("recording.id"), nullable=False),
            sa.Column("chunk_id", sa.Integer(), sa.ForeignKey("chunk.id"), nullable=False),
            sa.Column("chunk_index", sa.Integer(), nullable=False),
            sa.Column("start_s", sa.Float(), nullable=False),
            sa.Column("end_s", sa.Float(), nullable=False),
            sa.Column("text", sa.String(), nullable=False),
            sa.Column("language", sa.String(), nullable=True),
            sa.Column("model", sa.String(), nullable=False),
            sa.Column("settings", sa.JSON(), nullable=False),
        )
    op.create_index("ix_speech_recording_id", "speech", ["recording_id"], if_not_exists=True)
    op.create_index("ix_speech_chunk_id", "speech", ["chunk_id"], if_not_exists=True)
    op.create_index(
        "ix_speech_listing", "speech", ["recording_id", "start_s", "id"], if_not_exists=True
    )
    ddl = {"sqlite": SQLITE_DDL, "postgresql": POSTGRES_DDL}.get(conn.dialect.name, ())
    for statement in ddl:
        conn.exec_driver_sql(statement)


def downgrade() -> None:
    conn = op.get_bind()
    if conn.dialect.name == "sqlite":
        for trigger in ("speech_fts_ai", "speech_fts_ad", "speech_fts_au"):
            conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {trigger}")
        conn.exec_driver_sql("DROP TABLE IF EXISTS speech_fts")
    op.drop_table("speech")
