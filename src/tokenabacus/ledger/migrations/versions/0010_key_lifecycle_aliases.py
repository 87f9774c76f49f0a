"""Key lifecycle and model aliases: a key may expire (``expires_at``) and be rotated (its previous
secret's hash stays valid until ``previous_until``); a usage record keeps the alias the client
asked for (``model_alias``) beside the model it was billed under.

Keys and records made before this revision never expire and carry no alias.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as t:
        t.add_column(sa.Column("expires_at", sa.BigInteger))
        t.add_column(sa.Column("previous_hash", sa.String(128)))
        t.add_column(sa.Column("previous_until", sa.BigInteger))
    with op.batch_alter_table("usage_records") as t:
        t.add_column(sa.Column("model_alias", sa.String(200)))


def downgrade() -> None:
    with op.batch_alter_table("usage_records") as t:
        t.drop_column("model_alias")
    with op.batch_alter_table("api_keys") as t:
        t.drop_column("previous_until")
        t.drop_column("previous_hash")
        t.drop_column("expires_at")
