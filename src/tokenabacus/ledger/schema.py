"""Database tables (SQLAlchemy Core). One schema for SQLite, PostgreSQL and MySQL/MariaDB."""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Column, Float, Index, Integer, MetaData, String, Table, Text

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
    Column("model_alias", String(200)),  # the name the client asked for, when it was an alias of model
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
    # member (calls /v1), viewer (reads one department's or project's data), admin (everything)
    Column("role", String(16), nullable=False, server_default="member"),
    Column("scope_kind", String(16)),  # a viewer's scope: department | project
    Column("scope_value", String(200)),
    Column("allow_ips", Text),  # JSON list of CIDRs the key may be used from; null: anywhere
    Column("expires_at", BigInteger),  # refused from this time on; null: never
    # A rotated key's old secret (its hash) stays valid until previous_until, then only the new one.
    Column("previous_hash", String(128)),
    Column("previous_until", BigInteger),
)

# The organization: department -> project -> user. Records carry the names, so these rows are the
# directory (what exists, who belongs where), not foreign keys of the ledger.
departments = Table(
    "departments",
    metadata,
    Column("name", String(200), primary_key=True),
    Column("created_at", BigInteger, nullable=False),
)
projects = Table(
    "projects",
    metadata,
    Column("name", String(200), primary_key=True),
    Column("department", String(200)),
    Column("created_at", BigInteger, nullable=False),
)
users = Table(
    "users",
    metadata,
    Column("name", String(200), primary_key=True),
    Column("department", String(200)),
    Column("project", String(200)),
    Column("created_at", BigInteger, nullable=False),
)

# Quotas set at run time (the config file's are not stored). A limit's use is counted per identity
# (scope, model, metric, period), so setting a new number for the same identity keeps its use.
quotas = Table(
    "quotas",
    metadata,
    Column("quota_id", String(64), primary_key=True),
    Column("scope_kind", String(16), nullable=False),  # key | user | project | department | global
    Column("scope_value", String(200)),
    Column("model", String(200)),  # null: every model
    Column("metric", String(16), nullable=False),  # tokens | requests (cost once prices exist)
    Column("period", String(16), nullable=False),  # minute | day | week | month | total
    Column("limit_value", BigInteger, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("created_by", String(200)),
    Column("updated_at", BigInteger),  # the last change (its number); admin_events holds every change
    Column("updated_by", String(200)),
)

# Requests for more quota, and their decisions; an approved one is a grant for one period.
quota_requests = Table(
    "quota_requests",
    metadata,
    Column("request_id", String(64), primary_key=True),
    Column("scope_kind", String(16), nullable=False),
    Column("scope_value", String(200)),
    Column("model", String(200)),
    Column("metric", String(16), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("reason", Text),
    Column("status", String(16), nullable=False),  # pending | approved | denied
    Column("requested_by", String(200)),
    Column("requested_at", BigInteger, nullable=False),
    Column("granted", BigInteger),
    Column("decided_by", String(200)),
    Column("decided_at", BigInteger),
    Column("decision_reason", Text),
)
Index("ix_quota_requests_status", quota_requests.c.status)

# Admin actions (quota changes and decisions so far): when, who (the admin key, or "cli" and the OS
# user), from where, and the row before and after as JSON. Only ever appended, in the same
# transaction as the change: the start of the audit trail (DESIGN.md "Audit").
admin_events = Table(
    "admin_events",
    metadata,
    Column(
        "id",
        Integer().with_variant(BigInteger(), "postgresql", "mysql", "mariadb"),
        primary_key=True,
        autoincrement=True,
    ),
    Column("at_ms", BigInteger, nullable=False),  # UTC ms
    Column("actor_key_id", String(64)),  # the admin key's id; "cli" for the command line
    Column("actor_name", String(200)),  # the key's name, or the OS user who ran the command
    Column("client_ip", String(64)),  # the address the admin API judged (none for the CLI)
    Column("action", String(64), nullable=False),  # quota.create, quota.update, quota.delete, ...
    Column("target_id", String(200)),  # the quota's or quota request's id
    Column("before_json", Text),  # null: the row did not exist
    Column("after_json", Text),  # null: the row was deleted
)
Index("ix_admin_events_at", admin_events.c.at_ms)
Index("ix_admin_events_target", admin_events.c.target_id)

meta = Table(
    "meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

# The price book: a model's price from a moment on (money in integer micro-units per 1M tokens).
# A record stores the version it was charged at; a new version never changes a past cost.
price_versions = Table(
    "price_versions",
    metadata,
    Column("version_id", String(64), primary_key=True),
    Column("model", String(200), nullable=False),
    Column("effective_from", BigInteger, nullable=False),
    Column("currency", String(8), nullable=False),
    Column("input_per_mtok_micros", BigInteger, nullable=False),
    Column("cached_per_mtok_micros", BigInteger),  # null: cached input at the input price
    Column("output_per_mtok_micros", BigInteger, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("created_by", String(200)),
    Column("note", Text),
)
Index("ix_price_versions_model_from", price_versions.c.model, price_versions.c.effective_from)

# Corrections to cost: separate signed entries with who, when and why; records are never rewritten.
cost_adjustments = Table(
    "cost_adjustments",
    metadata,
    Column("adjustment_id", String(64), primary_key=True),
    Column("request_id", String(64)),  # the record corrected, if one
    Column("at", BigInteger, nullable=False),  # the time the adjustment counts in (reports, periods)
    Column("model", String(200)),
    Column("department", String(200)),
    Column("project", String(200)),
    Column("user", String(200)),
    Column("amount_micros", BigInteger, nullable=False),
    Column("currency", String(8), nullable=False),
    Column("reason", Text, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("created_by", String(200)),
)
Index("ix_cost_adjustments_at", cost_adjustments.c.at)

# Self-hosted hardware: a monthly cost per GPU pool, apportioned by share of tokens or busy time.
hardware_costs = Table(
    "hardware_costs",
    metadata,
    Column("cost_id", String(64), primary_key=True),
    Column("pool", String(200), nullable=False),
    Column("models", Text, nullable=False),  # JSON list of the models the pool serves
    Column("monthly_micros", BigInteger, nullable=False),
    Column("currency", String(8), nullable=False),
    Column("effective_from", BigInteger, nullable=False),
    Column("basis", String(16), nullable=False),  # tokens | busy_time
    Column("created_at", BigInteger, nullable=False),
    Column("created_by", String(200)),
    Column("note", Text),
)


# Hourly aggregates kept by the writer in the same transaction as the raw rows, so reports over
# months read these and can never disagree with the records. Missing dimensions are '' (a unique
# index treats NULLs as distinct).
def _rollups(name: str) -> Table:
    """A rollup table: figures summed per time bucket (``hour``: the bucket's start, UTC ms) and
    combination of names (``dims``, their digest)."""
    return Table(
        name,
        metadata,
        Column(
            "id",
            Integer().with_variant(BigInteger(), "postgresql", "mysql", "mariadb"),
            primary_key=True,
            autoincrement=True,
        ),
        Column("hour", BigInteger, nullable=False),  # UTC ms at the start of the hour
        # A digest of the dimensions below: one short unique key on every database (MySQL's index
        # length limit rules out a unique index over the six name columns themselves).
        Column("dims", String(64), nullable=False),
        Column("model", String(200), nullable=False),
        Column("department", String(200), nullable=False),
        Column("project", String(200), nullable=False),
        Column("user", String(200), nullable=False),
        Column("key_id", String(64), nullable=False),
        Column("status", String(16), nullable=False),
        Column("currency", String(8), nullable=False),
        Column("price_version", String(64), nullable=False, server_default=""),
        Column("requests", BigInteger, nullable=False),
        Column("prompt_tokens", BigInteger, nullable=False),
        Column("completion_tokens", BigInteger, nullable=False),
        Column("total_tokens", BigInteger, nullable=False),
        Column("cached_tokens", BigInteger, nullable=False),
        Column("cost_micros", BigInteger, nullable=False),
        Column("priced_requests", BigInteger, nullable=False),  # requests with a known cost
        Column("duration_ms", BigInteger, nullable=False),  # sum, for averages
        # Our count against the upstream's (rollups.DRIFT): for `report drift`.
        *(
            Column(c, BigInteger, nullable=False, server_default="0")
            for c in (
                "compared_requests",
                "compared_prompt_tokens",
                "compared_completion_tokens",
                "upstream_prompt_tokens",
                "upstream_completion_tokens",
                "mismatched_requests",
            )
        ),
        # Latency histogram for p95, fixed log buckets in 1-2-5 steps: lat_le_N counts the records that
        # took at most N ms (and more than the bound before); lat_over those longer than the last bound.
        *(
            Column(f"lat_le_{b}", BigInteger, nullable=False)
            for b in (10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000, 100000, 200000, 500000)
        ),
        Column("lat_over", BigInteger, nullable=False),
        Column("duration_max_ms", BigInteger, nullable=False),  # the longest (0 if none), caps p95
    )


# Per UTC hour: every report's source for whole hours.
usage_rollups = _rollups("usage_rollups")
Index("ux_usage_rollups_dims", usage_rollups.c.hour, usage_rollups.c.dims, unique=True)
# Per UTC day (``hour`` holds the day's start): month-wide reports without time buckets read whole
# days here, about 4x fewer rows than hours, and the hourly rows only at the edges.
usage_rollups_daily = _rollups("usage_rollups_daily")
Index("ux_usage_rollups_daily_dims", usage_rollups_daily.c.hour, usage_rollups_daily.c.dims, unique=True)

# One holder at a time across processes and replicas (the alert evaluator, the report sender).
leases = Table(
    "leases",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("holder", String(100), nullable=False),
    Column("expires_at", BigInteger, nullable=False),  # UTC ms
)

# Every alert fired, once per (rule, scope, period): the unique key is the deduplication.
alert_events = Table(
    "alert_events",
    metadata,
    Column("id", Integer().with_variant(BigInteger(), "postgresql", "mysql", "mariadb"), primary_key=True),
    Column("rule", String(100), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("scope", String(300), nullable=False),
    Column("period", String(64), nullable=False),
    Column("fired_at", BigInteger, nullable=False),
    Column("severity", String(16), nullable=False),
    Column("figure", Float),
    Column("baseline", Float),
    Column("threshold", Float),
    Column("message", Text, nullable=False),
    # Before 0008, JSON: channel -> "sent" or the error; since, "{}" and a row per channel below.
    Column("deliveries", Text, nullable=False),
    Column("title", Text),  # 0008: with ``unit``, what rebuilds the message a delivery sends
    Column("unit", String(32)),
)
Index("ux_alert_events_once", alert_events.c.rule, alert_events.c.scope, alert_events.c.period, unique=True)
Index("ix_alert_events_fired", alert_events.c.fired_at)

# One row per alert and channel, written with the alert: what is still to send survives a stop or
# a crash, and the history shows each channel's outcome. ``idempotency_key`` is the key every
# attempt carries; ``next_at`` is when the next attempt may start (an attempt under way pushes it
# past its own deadline, so no other sender takes the row meanwhile).
alert_deliveries = Table(
    "alert_deliveries",
    metadata,
    Column("id", Integer().with_variant(BigInteger(), "postgresql", "mysql", "mariadb"), primary_key=True),
    Column("alert_id", BigInteger, nullable=False),
    Column("channel", String(64), nullable=False),
    Column("state", String(16), nullable=False),  # pending | delivered | failed
    Column("idempotency_key", String(64), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("next_at", BigInteger, nullable=False),  # UTC ms
    Column("updated_at", BigInteger, nullable=False),  # UTC ms
    Column("error", String(300)),  # the last failure's reason (never a secret: notifiers scrub it)
)
Index("ux_alert_deliveries_channel", alert_deliveries.c.alert_id, alert_deliveries.c.channel, unique=True)
Index("ix_alert_deliveries_due", alert_deliveries.c.state, alert_deliveries.c.channel, alert_deliveries.c.next_at)

# Scheduled reports sent, once per (schedule, period).
report_runs = Table(
    "report_runs",
    metadata,
    Column("id", Integer().with_variant(BigInteger(), "postgresql", "mysql", "mariadb"), primary_key=True),
    Column("schedule", String(100), nullable=False),
    Column("period", String(64), nullable=False),
    Column("sent_at", BigInteger, nullable=False),
    Column("deliveries", Text, nullable=False),
)
Index("ux_report_runs_once", report_runs.c.schedule, report_runs.c.period, unique=True)

# Web console sessions: only a hash of the cookie's token is stored, so a copy of the database
# signs no one in; the key a session acts as is re-checked on every request (revoking it ends
# the session).
console_sessions = Table(
    "console_sessions",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("key_hash", String(128), nullable=False),
    Column("key_id", String(64), nullable=False),
    Column("csrf", String(64), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=False),
)
Index("ix_console_sessions_expires", console_sessions.c.expires_at)
