"""Rollups by price version, with our count against the upstream's (chargeback and drift reports).

The rollup key gains a dimension, so rows made before cannot be split by it: they are cleared and
the rollups marked incomplete. Reports then read raw records (and say so) until
`tokenabacus db rollup --rebuild`; a ledger without records starts complete again.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_DRIFT = (
    "compared_requests",
    "compared_prompt_tokens",
    "compared_completion_tokens",
    "upstream_prompt_tokens",
    "upstream_completion_tokens",
    "mismatched_requests",
)

_META = sa.table("meta", sa.column("key"))


def upgrade() -> None:
    op.execute("DELETE FROM usage_rollups")
    op.execute(_META.delete().where(_META.c.key == "usage_rollups"))
    with op.batch_alter_table("usage_rollups") as t:
        t.add_column(sa.Column("price_version", sa.String(64), nullable=False, server_default=""))
        for c in _DRIFT:
            t.add_column(sa.Column(c, sa.BigInteger, nullable=False, server_default="0"))


def downgrade() -> None:
    op.execute("DELETE FROM usage_rollups")
    op.execute(_META.delete().where(_META.c.key == "usage_rollups"))
    with op.batch_alter_table("usage_rollups") as t:
        for c in reversed(_DRIFT):
            t.drop_column(c)
        t.drop_column("price_version")
