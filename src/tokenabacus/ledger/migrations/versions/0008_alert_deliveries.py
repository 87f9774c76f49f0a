"""Alert deliveries: one row per alert and channel, so what is still to send survives a restart and
the history shows each channel's outcome; the alert keeps its title and unit to rebuild the message.

Alerts fired before keep their outcomes in ``alert_events.deliveries`` (JSON), read as before.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-09
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_BIGINT_ID = sa.Integer().with_variant(sa.BigInteger(), "postgresql", "mysql", "mariadb")


def upgrade() -> None:
    op.add_column("alert_events", sa.Column("title", sa.Text))
    op.add_column("alert_events", sa.Column("unit", sa.String(32)))
    op.create_table(
        "alert_deliveries",
        sa.Column("id", _BIGINT_ID, primary_key=True, autoincrement=True),
        sa.Column("alert_id", sa.BigInteger, nullable=False),
        sa.Column("channel", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("idempotency_key", sa.String(64), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_at", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
        sa.Column("error", sa.String(300)),
    )
    op.create_index("ux_alert_deliveries_channel", "alert_deliveries", ["alert_id", "channel"], unique=True)
    op.create_index("ix_alert_deliveries_due", "alert_deliveries", ["state", "channel", "next_at"])


def downgrade() -> None:
    op.drop_index("ix_alert_deliveries_due", "alert_deliveries")
    op.drop_index("ux_alert_deliveries_channel", "alert_deliveries")
    op.drop_table("alert_deliveries")
    with op.batch_alter_table("alert_events") as batch:
        batch.drop_column("unit")
        batch.drop_column("title")
