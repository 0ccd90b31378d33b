"""alerts: each alert rule's candidate and its outcome (the second look, the thumbnail), and
delivery.alert_id, the alert an alert_fired outbox row announces

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 04:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Named, so the downgrade can drop it on every backend (SQLite's batch mode included).
DELIVERY_ALERT_FK = "fk_delivery_alert_id_alert"


def upgrade() -> None:
    # A database made by create_all of today's tables (adopted and stamped 0001) has them already.
    inspector = sa.inspect(op.get_bind())
    if not inspector.has_table("alert"):
        op.create_table(
            "alert",
            sa.Column("id", sa.Integer(), nullable=False),
            sa.Column("recording_id", sa.Integer(), nullable=False),
            sa.Column("chunk_index", sa.Integer(), nullable=False),
            sa.Column("rule", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
            sa.Column("severity", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
            sa.Column("state", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
            sa.Column("reason", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
            sa.Column("fired", sa.Boolean(), nullable=False),
            sa.Column("start_s", sa.Float(), nullable=False),
            sa.Column("end_s", sa.Float(), nullable=False),
            sa.Column("why", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
            sa.Column("owner", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
            sa.Column("lease_until", sa.Float(), nullable=True),
            sa.Column("attempts", sa.Integer(), nullable=False),
            sa.Column("verification", sa.JSON(), nullable=False),
            sa.Column("provenance", sa.JSON(), nullable=False),
            sa.Column("thumbnail", sa.LargeBinary(), nullable=True),
            sa.Column("thumbnail_s", sa.Float(), nullable=True),
            sa.Column("created_at", sa.Float(), nullable=False),
            sa.Column("decided_at", sa.Float(), nullable=True),
            sa.ForeignKeyConstraint(["recording_id"], ["recording.id"]),
            sa.PrimaryKeyConstraint("id"),
        )
        with op.batch_alter_table("alert") as batch:
            batch.create_index("ix_alert_recording_id", ["recording_id"], unique=False)
            batch.create_index(
                "ix_alert_recording_rule", ["recording_id", "rule", "start_s"], unique=False
            )
            batch.create_index("ix_alert_state", ["state"], unique=False)
    columns = {c["name"] for c in inspector.get_columns("delivery")}
    if "alert_id" not in columns:
        with op.batch_alter_table("delivery") as batch:
            batch.add_column(sa.Column("alert_id", sa.Integer(), nullable=True))
            batch.create_index("ix_delivery_alert_id", ["alert_id"], unique=False)
            batch.create_foreign_key(DELIVERY_ALERT_FK, "alert", ["alert_id"], ["id"])


def downgrade() -> None:
    with op.batch_alter_table("delivery") as batch:
        batch.drop_constraint(DELIVERY_ALERT_FK, type_="foreignkey")
        batch.drop_index("ix_delivery_alert_id")
        batch.drop_column("alert_id")
    op.drop_table("alert")
