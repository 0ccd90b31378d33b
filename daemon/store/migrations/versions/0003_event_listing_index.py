"""event listing index: (recording_id, start_s, id), the order `framewatch events` reads in, so
100,000 events list without a sort (daemon/listing.py)

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25 17:40:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # if_not_exists: a database made by create_all of today's tables (before Alembic, then
    # stamped 0001 on adoption) already has it.
    op.create_index(
        "ix_event_listing", "event", ["recording_id", "start_s", "id"], if_not_exists=True
    )


def downgrade() -> None:
    op.drop_index("ix_event_listing", table_name="event", if_exists=True)
