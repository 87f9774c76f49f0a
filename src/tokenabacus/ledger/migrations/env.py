"""Alembic environment: always run from tokenabacus.ledger.migrate with a live connection."""

from __future__ import annotations

from alembic import context

from tokenabacus.ledger.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations with `tokenabacus db upgrade` (tokenabacus.ledger.migrate)")

context.configure(connection=connection, target_metadata=metadata, render_as_batch=connection.dialect.name == "sqlite")
with context.begin_transaction():
    context.run_migrations()
