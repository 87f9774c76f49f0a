"""Admin events (who changed or deleted which quota, who decided which request, when, from where,
with the row before and after), and the last change on each quota row.

Quotas set before this revision keep no history: their ``updated_*`` stay empty until changed.

Revision ID: 0009
Revises: 0007
Create Date: 2026-12-09
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_BIGINT_ID = sa.Integer().with_variant(sa.BigInteger(), "postgresql", "mysql", "mariadb")


def upgrade() -> None:
    op.create_table(
        "admin_events",
        sa.Column("id", _BIGINT_ID, primary_key=True, autoincrement=True),
        sa.Column("at_ms", sa.BigInteger, nullable=False),
        sa.Column("actor_key_id", sa.String(64)),
        sa.Column("actor_name", sa.String(200)),
        sa.Column("client_ip", sa.String(64)),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("target_id", sa.String(200)),
        sa.Column("before_json", sa.Text),
        sa.Column("after_json", sa.Text),
    )
    op.create_index("ix_admin_events_at", "admin_events", ["at_ms"])
    op.create_index("ix_admin_events_target", "admin_events", ["target_id"])
    with op.batch_alter_table("quotas") as t:
        t.add_column(sa.Column("updated_at", sa.BigInteger))
        t.add_column(sa.Column("updated_by", sa.String(200)))


def downgrade() -> None:
    with op.batch_alter_table("quotas") as t:
        t.drop_column("updated_by")
        t.drop_column("updated_at")
    op.drop_index("ix_admin_events_target", "admin_events")
    op.drop_index("ix_admin_events_at", "admin_events")
    op.drop_table("admin_events")
