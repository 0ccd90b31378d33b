"""summaries: one row per recording with its title, summary text, chapters, key events and how
it was made (the text pass over the stored events, issue 15)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 05:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A database made by create_all of today's tables (adopted and stamped 0001) has the table.
    if not sa.inspect(op.get_bind()).has_table("summary"):
        op.create_table(
            "summary",
            sa.Column(
                "recording_id",
                sa.Integer(),
                sa.ForeignKey("recording.id"),
                primary_key=True,
                nullable=False,
            ),
            sa.Column("title", sa.String(), nullable=False),
            sa.Column("text", sa.String(), nullable=False),
            sa.Column("chapters", sa.JSON(), nullable=False),
            sa.Column("key_events", sa.JSON(), nullable=False),
            sa.Column("provenance", sa.JSON(), nullable=False),
            sa.Column("made_at", sa.Float(), nullable=False),
        )


def downgrade() -> None:
    op.drop_table("summary")
