"""Usage records in the ledger database: batched idempotent inserts, the latest records, and the
grouped totals reports are made of.

All methods are synchronous; the gateway calls them from worker threads only.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlalchemy import String, and_, func, literal, select
from sqlalchemy.dialects.mysql import insert as mysql_insert
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from tokenabacus.ledger.database import Database
from tokenabacus.ledger.record import FIELDS
from tokenabacus.ledger.schema import usage_records as t

# Time buckets a report can group by, and their size.
TIME_BUCKETS = {"day": 86_400_000, "hour": 3_600_000}
TOKEN_SUMS = ("prompt_tokens", "completion_tokens", "total_tokens")
_LOW32 = 0xFFFFFFFF

_LENGTHS: dict[str, int] = {c.name: c.type.length for c in t.columns if isinstance(c.type, String) and c.type.length}

# (position in FIELDS, column length) of the length-limited columns.
_LIMITS = [(i, _LENGTHS[f]) for i, f in enumerate(FIELDS) if f in _LENGTHS]

_SQLITE_INSERT = (
    "INSERT OR IGNORE INTO usage_records ("
    + ", ".join(f'"{f}"' for f in FIELDS)
    + ") VALUES ("
    + ", ".join("?" for _ in FIELDS)
    + ")"
)


def _row(record: dict) -> list:
    """The record's values in FIELDS order, strings clipped to their column's length and rid of
    NUL characters, which PostgreSQL refuses in text (a client can put one in a model name)."""
    row = [record.get(f) for f in FIELDS]
    for i, n in _LIMITS:
        v = row[i]
        if type(v) is str:
            if len(v) > n:
                v = v[:n]
            if "\x00" in v:
                v = v.replace("\x00", "\ufffd")
            row[i] = v
    return row


def _bucket(name: str, offset_ms: int):
    size = TIME_BUCKETS[name]
    shifted = t.c.timestamp + literal(offset_ms)
    return (shifted - shifted % size).label(name)


def _sums(split: bool) -> list:
    """Token sums that cannot overflow. SQLite's sum() fails on a 64-bit overflow, which a
    ledger holding absurd figures (written before the writer checked them) reaches with two
    records; so there (``split``) each value is summed as a high and a low 32-bit half, put back
    together exactly in Python. PostgreSQL and MySQL sum integers into wider types already."""
    if not split:
        return [func.coalesce(func.sum(t.c[k]), 0).label(k) for k in TOKEN_SUMS]
    out = []
    for k in TOKEN_SUMS:
        out.append(func.coalesce(func.sum(t.c[k].op(">>")(32)), 0).label(f"{k}_hi"))
        out.append(func.coalesce(func.sum(t.c[k].op("&")(_LOW32)), 0).label(f"{k}_lo"))
    return out


class UsageRecords:
    def __init__(self, db: Database) -> None:
        self.db = db

    # Writes ------------------------------------------------------------------------------------
    def insert(self, records: Iterable[dict]) -> int:
        """Insert records, ignoring request_ids already present (replays are harmless).
        Strings are clipped to their column so one odd value cannot wedge the writer on a
        database that enforces lengths (PostgreSQL, MySQL)."""
        if self.db.dialect == "sqlite":
            return self._insert_sqlite(records)
        rows = [dict(zip(FIELDS, _row(r), strict=True)) for r in records]
        if not rows:
            return 0
        with self.db.begin() as conn:
            res = conn.execute(self._insert_ignore(), rows)
            return res.rowcount if res.rowcount is not None and res.rowcount >= 0 else len(rows)

    def _insert_ignore(self):
        name = self.db.dialect
        if name == "sqlite":
            return sqlite_insert(t).on_conflict_do_nothing(index_elements=["request_id"])
        if name == "postgresql":
            return pg_insert(t).on_conflict_do_nothing(index_elements=["request_id"])
        if name in ("mysql", "mariadb"):
            return mysql_insert(t).prefix_with("IGNORE")
        raise ValueError(f"unsupported database: {name}")

    def _insert_sqlite(self, records: Iterable[dict]) -> int:
        # The writer's hottest loop: plain DB-API executemany skips SQLAlchemy's per-row
        # parameter processing, which cost more than SQLite itself.
        rows = [_row(r) for r in records]
        if not rows:
            return 0
        with self.db.begin() as conn:
            driver = conn.connection.driver_connection
            assert driver is not None
            cur = driver.cursor()
            cur.executemany(_SQLITE_INSERT, rows)
            return cur.rowcount if cur.rowcount >= 0 else len(rows)

    # Reads -------------------------------------------------------------------------------------
    def count(self) -> int:
        with self.db.connect() as conn:
            return conn.execute(select(func.count()).select_from(t)).scalar_one()

    def latest(self, limit: int = 20, since_ms: int | None = None, **filters: str | None) -> list[dict]:
        """The newest records first, every contract field; ``filters`` are column == value
        (None: no filter)."""
        q = select(*[t.c[f] for f in FIELDS]).order_by(t.c.timestamp.desc(), t.c.id.desc())
        if since_ms is not None:
            q = q.where(t.c.timestamp >= since_ms)
        for k, v in filters.items():
            if v is not None:
                q = q.where(t.c[k] == v)
        q = q.limit(limit)
        with self.db.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(q)]

    def request_ids(self) -> set[str]:
        with self.db.connect() as conn:
            return {r[0] for r in conn.execute(select(t.c.request_id))}

    def totals(
        self,
        by: Sequence[str],
        since_ms: int | None = None,
        until_ms: int | None = None,
        status: str | None = None,
        utc_offset_ms: int = 0,
    ) -> list[dict]:
        """Requests, token sums and average duration per group, ordered by the groups.

        ``by`` names columns or time buckets (TIME_BUCKETS), cut at ``utc_offset_ms`` from UTC; a
        bucket's value is its start in UTC epoch ms. Token sums are exact ints of any size;
        ``avg_duration_ms`` is a float, or None when no record has a duration."""
        for d in by:
            if d not in TIME_BUCKETS and d not in t.c:
                raise ValueError(f"usage records have no column {d!r}")
        split = self.db.dialect == "sqlite"
        cols = [_bucket(d, utc_offset_ms) if d in TIME_BUCKETS else t.c[d].label(d) for d in by]
        aggs = [func.count().label("requests"), *_sums(split), func.avg(t.c.duration_ms).label("avg_duration_ms")]
        conds = []
        if since_ms is not None:
            conds.append(t.c.timestamp >= since_ms)
        if until_ms is not None:
            conds.append(t.c.timestamp < until_ms)
        if status:
            conds.append(t.c.status == status)
        stmt = select(*cols, *aggs)
        if conds:
            stmt = stmt.where(and_(*conds))
        if cols:
            stmt = stmt.group_by(*cols).order_by(*cols)
        with self.db.connect() as conn:
            raw = [dict(r._mapping) for r in conn.execute(stmt)]
        return [_total(r, by, split, utc_offset_ms) for r in raw]


def _total(r: dict, by: Sequence[str], split: bool, offset_ms: int) -> dict:
    out: dict = {}
    for d in by:
        v = r[d]
        out[d] = int(v) - offset_ms if d in TIME_BUCKETS and v is not None else v
    out["requests"] = int(r["requests"])
    for k in TOKEN_SUMS:
        out[k] = (int(r[f"{k}_hi"]) << 32) + int(r[f"{k}_lo"]) if split else int(r[k])
    avg = r["avg_duration_ms"]
    # PostgreSQL and MySQL answer a Decimal: one type for every database.
    out["avg_duration_ms"] = float(avg) if avg is not None else None
    return out


# The record column each quota scope matches.
SCOPE_COLUMNS = {"key": t.c.key_id, "user": t.c.user, "project": t.c.project, "department": t.c.department}


def used_since(
    db: Database, scope_kind: str, scope_value: str | None, model: str | None, metric: str, since_ms: int
) -> int:
    """What the ledger says a limit's scope used from ``since_ms`` on: total tokens, or the number
    of admitted requests (refusals use nothing)."""
    conds = [t.c.timestamp >= since_ms, t.c.status != "rejected"]
    if scope_kind != "global":
        conds.append(SCOPE_COLUMNS[scope_kind] == scope_value)
    if model is not None:
        conds.append(t.c.model == model)
    what = func.coalesce(func.sum(t.c.total_tokens), 0) if metric == "tokens" else func.count()
    with db.connect() as conn:
        return int(conn.execute(select(what).where(and_(*conds))).scalar_one())
