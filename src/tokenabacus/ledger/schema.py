"""Database tables (SQLAlchemy Core). One schema for SQLite, PostgreSQL and MySQL/MariaDB."""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Column, Index, Integer, MetaData, String, Table, Text

metadata = MetaData()

usage_records = Table(
    "usage_records",
    metadata,
    Column(
        "id",
        Integer().with_variant(BigInteger(), "postgresql", "mysql", "mariadb"),
        primary_key=True,
        autoincrement=True,
    ),
    Column("request_id", String(64), nullable=False, unique=True),
    Column("timestamp", BigInteger, nullable=False),
    Column("duration_ms", Integer),
    Column("ttft_ms", Integer),
    Column("model", String(200)),
    Column("model_version", String(200)),
    Column("engine", String(32)),
    Column("endpoint", String(64)),
    Column("stream", Boolean, nullable=False, default=False),
    Column("status", String(16), nullable=False),
    Column("error_code", String(64)),
    Column("prompt_tokens", Integer),
    Column("completion_tokens", Integer),
    Column("total_tokens", Integer),
    Column("cached_tokens", Integer),
    Column("usage_source", String(16)),
    Column("upstream_prompt_tokens", Integer),
    Column("upstream_completion_tokens", Integer),
    Column("key_id", String(64)),
    Column("user", String(200)),
    Column("project", String(200)),
    Column("department", String(200)),
    Column("client_ip", String(64)),
    Column("user_agent", String(500)),
    Column("price_version", String(64)),
    Column("cost_micros", BigInteger),
    Column("currency", String(8)),
    Column("prev_hash", String(128)),
    Column("hash", String(128)),
)
Index("ix_usage_timestamp", usage_records.c.timestamp)
Index("ix_usage_project_ts", usage_records.c.project, usage_records.c.timestamp)

api_keys = Table(
    "api_keys",
    metadata,
    Column("key_id", String(64), primary_key=True),
    Column("key_hash", String(128), nullable=False, unique=True),
    Column("prefix", String(32), nullable=False),
    Column("user", String(200)),
    Column("project", String(200)),
    Column("department", String(200)),
    Column("name", String(200)),
    Column("created_at", BigInteger, nullable=False),
    Column("revoked_at", BigInteger),
)

meta = Table(
    "meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)
