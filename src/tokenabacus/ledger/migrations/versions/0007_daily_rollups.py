"""Daily rollups: the hourly rollups' figures per UTC day, for month-wide reports.

A ledger that already holds records gets the table empty and not marked complete: reports keep
reading hourly rollups (as correct, slower) until `tokenabacus db rollup --rebuild` fills both.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_BIGINT_ID = sa.Integer().with_variant(sa.BigInteger(), "postgresql", "mysql", "mariadb")
_NAMES = ("model", "department", "project", "user")
_SUMS = (
    "requests",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "cached_tokens",
    "cost_micros",
    "priced_requests",
    "duration_ms",
    "compared_requests",
    "compared_prompt_tokens",
    "compared_completion_tokens",
    "upstream_prompt_tokens",
    "upstream_completion_tokens",
    "mismatched_requests",
    *(
        f"lat_le_{b}"
        for b in (10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000, 100000, 200000, 500000)
    ),
    "lat_over",
    "duration_max_ms",
)


def upgrade() -> None:
    op.create_table(
        "usage_rollups_daily",
        sa.Column("id", _BIGINT_ID, primary_key=True, autoincrement=True),
        sa.Column("hour", sa.BigInteger, nullable=False),
        sa.Column("dims", sa.String(64), nullable=False),
        *(sa.Column(c, sa.String(200), nullable=False) for c in _NAMES),
        sa.Column("key_id", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("currency", sa.String(8), nullable=False),
        sa.Column("price_version", sa.String(64), nullable=False, server_default=""),
        *(sa.Column(c, sa.BigInteger, nullable=False, server_default="0") for c in _SUMS),
    )
    op.create_index("ux_usage_rollups_daily_dims", "usage_rollups_daily", ["hour", "dims"], unique=True)


def downgrade() -> None:
    op.drop_index("ux_usage_rollups_daily_dims", "usage_rollups_daily")
    op.drop_table("usage_rollups_daily")
    op.execute(sa.table("meta", sa.column("key")).delete().where(sa.column("key") == "usage_rollups_daily"))
