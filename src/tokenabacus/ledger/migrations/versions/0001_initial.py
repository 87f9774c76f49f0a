"""The first schema: usage records, API keys, meta.

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_BIGINT_ID = sa.Integer().with_variant(sa.BigInteger(), "postgresql", "mysql", "mariadb")


def upgrade() -> None:
    op.create_table(
        "usage_records",
        sa.Column("id", _BIGINT_ID, primary_key=True, autoincrement=True),
        sa.Column("request_id", sa.String(64), nullable=False, unique=True),
        sa.Column("timestamp", sa.BigInteger, nullable=False),
        sa.Column("duration_ms", sa.Integer),
        sa.Column("ttft_ms", sa.Integer),
        sa.Column("model", sa.String(200)),
        sa.Column("model_version", sa.String(200)),
        sa.Column("engine", sa.String(32)),
        sa.Column("endpoint", sa.String(64)),
        sa.Column("stream", sa.Boolean, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error_code", sa.String(64)),
        sa.Column("prompt_tokens", sa.Integer),
        sa.Column("completion_tokens", sa.Integer),
        sa.Column("total_tokens", sa.Integer),
        sa.Column("cached_tokens", sa.Integer),
        sa.Column("usage_source", sa.String(16)),
        sa.Column("upstream_prompt_tokens", sa.Integer),
        sa.Column("upstream_completion_tokens", sa.Integer),
        sa.Column("key_id", sa.String(64)),
        sa.Column("user", sa.String(200)),
        sa.Column("project", sa.String(200)),
        sa.Column("department", sa.String(200)),
        sa.Column("client_ip", sa.String(64)),
        sa.Column("user_agent", sa.String(500)),
        sa.Column("price_version", sa.String(64)),
        sa.Column("cost_micros", sa.BigInteger),
        sa.Column("currency", sa.String(8)),
        sa.Column("prev_hash", sa.String(128)),
        sa.Column("hash", sa.String(128)),
    )
    op.create_index("ix_usage_timestamp", "usage_records", ["timestamp"])
    op.create_index("ix_usage_project_ts", "usage_records", ["project", "timestamp"])
    op.create_table(
        "api_keys",
        sa.Column("key_id", sa.String(64), primary_key=True),
        sa.Column("key_hash", sa.String(128), nullable=False, unique=True),
        sa.Column("prefix", sa.String(32), nullable=False),
        sa.Column("user", sa.String(200)),
        sa.Column("project", sa.String(200)),
        sa.Column("department", sa.String(200)),
        sa.Column("name", sa.String(200)),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("revoked_at", sa.BigInteger),
    )
    op.create_table(
        "meta",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("meta")
    op.drop_table("api_keys")
    op.drop_index("ix_usage_project_ts", "usage_records")
    op.drop_index("ix_usage_timestamp", "usage_records")
    op.drop_table("usage_records")
