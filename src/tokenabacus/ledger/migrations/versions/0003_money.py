"""Money: the price book, cost adjustments, hardware costs, and hourly usage rollups.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_BIGINT_ID = sa.Integer().with_variant(sa.BigInteger(), "postgresql", "mysql", "mariadb")


def upgrade() -> None:
    op.create_table(
        "price_versions",
        sa.Column("version_id", sa.String(64), primary_key=True),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("effective_from", sa.BigInteger, nullable=False),
        sa.Column("currency", sa.String(8), nullable=False),
        sa.Column("input_per_mtok_micros", sa.BigInteger, nullable=False),
        sa.Column("cached_per_mtok_micros", sa.BigInteger),
        sa.Column("output_per_mtok_micros", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("created_by", sa.String(200)),
        sa.Column("note", sa.Text),
    )
    op.create_index("ix_price_versions_model_from", "price_versions", ["model", "effective_from"])
    op.create_table(
        "cost_adjustments",
        sa.Column("adjustment_id", sa.String(64), primary_key=True),
        sa.Column("request_id", sa.String(64)),
        sa.Column("at", sa.BigInteger, nullable=False),
        sa.Column("model", sa.String(200)),
        sa.Column("department", sa.String(200)),
        sa.Column("project", sa.String(200)),
        sa.Column("user", sa.String(200)),
        sa.Column("amount_micros", sa.BigInteger, nullable=False),
        sa.Column("currency", sa.String(8), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("created_by", sa.String(200)),
    )
    op.create_index("ix_cost_adjustments_at", "cost_adjustments", ["at"])
    op.create_table(
        "hardware_costs",
        sa.Column("cost_id", sa.String(64), primary_key=True),
        sa.Column("pool", sa.String(200), nullable=False),
        sa.Column("models", sa.Text, nullable=False),
        sa.Column("monthly_micros", sa.BigInteger, nullable=False),
        sa.Column("currency", sa.String(8), nullable=False),
        sa.Column("effective_from", sa.BigInteger, nullable=False),
        sa.Column("basis", sa.String(16), nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("created_by", sa.String(200)),
        sa.Column("note", sa.Text),
    )
    op.create_table(
        "usage_rollups",
        sa.Column("id", _BIGINT_ID, primary_key=True, autoincrement=True),
        sa.Column("hour", sa.BigInteger, nullable=False),
        sa.Column("dims", sa.String(64), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("department", sa.String(200), nullable=False),
        sa.Column("project", sa.String(200), nullable=False),
        sa.Column("user", sa.String(200), nullable=False),
        sa.Column("key_id", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("currency", sa.String(8), nullable=False),
        sa.Column("requests", sa.BigInteger, nullable=False),
        sa.Column("prompt_tokens", sa.BigInteger, nullable=False),
        sa.Column("completion_tokens", sa.BigInteger, nullable=False),
        sa.Column("total_tokens", sa.BigInteger, nullable=False),
        sa.Column("cached_tokens", sa.BigInteger, nullable=False),
        sa.Column("cost_micros", sa.BigInteger, nullable=False),
        sa.Column("priced_requests", sa.BigInteger, nullable=False),
        sa.Column("duration_ms", sa.BigInteger, nullable=False),
        *(
            sa.Column(f"lat_le_{b}", sa.BigInteger, nullable=False)
            for b in (10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000, 100000, 200000, 500000)
        ),
        sa.Column("lat_over", sa.BigInteger, nullable=False),
        sa.Column("duration_max_ms", sa.BigInteger, nullable=False),
    )
    op.create_index(
        "ux_usage_rollups_dims",
        "usage_rollups",
        ["hour", "dims"],
        unique=True,
    )


def downgrade() -> None:
    op.drop_index("ux_usage_rollups_dims", "usage_rollups")
    op.drop_table("usage_rollups")
    op.drop_table("hardware_costs")
    op.drop_index("ix_cost_adjustments_at", "cost_adjustments")
    op.drop_table("cost_adjustments")
    op.drop_index("ix_price_versions_model_from", "price_versions")
    op.drop_table("price_versions")
