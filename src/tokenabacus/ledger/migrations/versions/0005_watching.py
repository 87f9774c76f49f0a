"""Watching the spend: leases (one alert evaluator and report sender across processes), the alert
history, and the scheduled reports sent.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_BIGINT_ID = sa.Integer().with_variant(sa.BigInteger(), "postgresql", "mysql", "mariadb")


def upgrade() -> None:
    op.create_table(
        "leases",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("holder", sa.String(100), nullable=False),
        sa.Column("expires_at", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "alert_events",
        sa.Column("id", _BIGINT_ID, primary_key=True, autoincrement=True),
        sa.Column("rule", sa.String(100), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("scope", sa.String(300), nullable=False),
        sa.Column("period", sa.String(64), nullable=False),
        sa.Column("fired_at", sa.BigInteger, nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("figure", sa.Float),
        sa.Column("baseline", sa.Float),
        sa.Column("threshold", sa.Float),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("deliveries", sa.Text, nullable=False),
    )
    op.create_index("ux_alert_events_once", "alert_events", ["rule", "scope", "period"], unique=True)
    op.create_index("ix_alert_events_fired", "alert_events", ["fired_at"])
    op.create_table(
        "report_runs",
        sa.Column("id", _BIGINT_ID, primary_key=True, autoincrement=True),
        sa.Column("schedule", sa.String(100), nullable=False),
        sa.Column("period", sa.String(64), nullable=False),
        sa.Column("sent_at", sa.BigInteger, nullable=False),
        sa.Column("deliveries", sa.Text, nullable=False),
    )
    op.create_index("ux_report_runs_once", "report_runs", ["schedule", "period"], unique=True)


def downgrade() -> None:
    op.drop_index("ux_report_runs_once", "report_runs")
    op.drop_table("report_runs")
    op.drop_index("ix_alert_events_fired", "alert_events")
    op.drop_index("ux_alert_events_once", "alert_events")
    op.drop_table("alert_events")
    op.drop_table("leases")
