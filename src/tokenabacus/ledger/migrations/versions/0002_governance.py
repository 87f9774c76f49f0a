"""Governance: roles and scopes on keys, the organization, quotas and quota requests.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("role", sa.String(16), nullable=False, server_default="member"))
        batch.add_column(sa.Column("scope_kind", sa.String(16)))
        batch.add_column(sa.Column("scope_value", sa.String(200)))
        batch.add_column(sa.Column("allow_ips", sa.Text))
    op.create_table(
        "departments",
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("created_at", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "projects",
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("department", sa.String(200)),
        sa.Column("created_at", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "users",
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("department", sa.String(200)),
        sa.Column("project", sa.String(200)),
        sa.Column("created_at", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "quotas",
        sa.Column("quota_id", sa.String(64), primary_key=True),
        sa.Column("scope_kind", sa.String(16), nullable=False),
        sa.Column("scope_value", sa.String(200)),
        sa.Column("model", sa.String(200)),
        sa.Column("metric", sa.String(16), nullable=False),
        sa.Column("period", sa.String(16), nullable=False),
        sa.Column("limit_value", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("created_by", sa.String(200)),
    )
    op.create_table(
        "quota_requests",
        sa.Column("request_id", sa.String(64), primary_key=True),
        sa.Column("scope_kind", sa.String(16), nullable=False),
        sa.Column("scope_value", sa.String(200)),
        sa.Column("model", sa.String(200)),
        sa.Column("metric", sa.String(16), nullable=False),
        sa.Column("amount", sa.BigInteger, nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("requested_by", sa.String(200)),
        sa.Column("requested_at", sa.BigInteger, nullable=False),
        sa.Column("granted", sa.BigInteger),
        sa.Column("decided_by", sa.String(200)),
        sa.Column("decided_at", sa.BigInteger),
        sa.Column("decision_reason", sa.Text),
    )
    op.create_index("ix_quota_requests_status", "quota_requests", ["status"])


def downgrade() -> None:
    op.drop_index("ix_quota_requests_status", "quota_requests")
    for name in ("quota_requests", "quotas", "users", "projects", "departments"):
        op.drop_table(name)
    with op.batch_alter_table("api_keys") as batch:
        for col in ("allow_ips", "scope_value", "scope_kind", "role"):
            batch.drop_column(col)
