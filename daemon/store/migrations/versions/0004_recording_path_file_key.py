"""recording_path.file_key: the device and inode ("dev:ino") of the file registered at a path, so
a reader (the web plugin's video route) can tell the registered file from another one put there

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 03:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A database made by create_all of today's tables (adopted and stamped 0001) has it already.
    columns = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("recording_path")}
    if "file_key" not in columns:
        with op.batch_alter_table("recording_path") as batch:
            batch.add_column(sa.Column("file_key", sa.String(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("recording_path") as batch:
        batch.drop_column("file_key")
