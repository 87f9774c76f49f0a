"""Usage records in the ledger database: batched idempotent inserts that keep the hourly rollups
(ledger/rollups/) in the same transaction, the latest records, and what a quota scope used.

All methods are synchronous; the gateway calls them from worker threads only.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from functools import cache
from operator import itemgetter
from typing import Any

from sqlalchemy import Connection, String, and_, exc, func, select
from sqlalchemy.dialects.mysql import insert as mysql_insert
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from tokenabacus.ledger import rollups
from tokenabacus.ledger.database import Database
from tokenabacus.ledger.record import FIELDS
from tokenabacus.ledger.schema import usage_records as t

_LENGTHS: dict[str, int] = {c.name: c.type.length for c in t.columns if isinstance(c.type, String) and c.type.length}

# (position in FIELDS, column length) of the length-limited columns.
_LIMITS = [(i, _LENGTHS[f]) for i, f in enumerate(FIELDS) if f in _LENGTHS]

_REQUEST_ID = FIELDS.index("request_id")
# A row's values as the rollups read them (rollups.INPUT).
_ROLLUP_INPUT = itemgetter(*(FIELDS.index(c) for c in rollups.INPUT))
_COLUMNS = ", ".join(f'"{f}"' for f in FIELDS)
_ONE_ROW = "(" + ", ".join("?" for _ in FIELDS) + ")"
_PG_INSERT = (
    f"INSERT INTO usage_records ({_COLUMNS}) VALUES ({', '.join('%s' for _ in FIELDS)}) "
    "ON CONFLICT (request_id) DO NOTHING RETURNING request_id"
)


@cache
def _sqlite_insert(n: int) -> str:
    """One INSERT of ``n`` rows that answers the request_ids it really inserted (RETURNING, SQLite
    3.35+): a replayed duplicate is ignored by the insert, and so by the rollups."""
    return f"INSERT OR IGNORE INTO usage_records ({_COLUMNS}) VALUES {', '.join([_ONE_ROW] * n)} RETURNING request_id"


def _first_of(rows: list[list], inserted: set[str]) -> list[list]:
    """The rows the database took: one per inserted request_id, the first in the batch, as the
    insert kept it."""
    out = []
    for row in rows:
        rid = row[_REQUEST_ID]
        if rid in inserted:
            inserted.discard(rid)
            out.append(row)
    return out


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


class UsageRecords:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._rollups_checked = False

    # Writes ------------------------------------------------------------------------------------
    def insert(self, records: Iterable[dict]) -> int:
        """Insert records, ignoring request_ids already present (replays are harmless), and add
        the ones inserted to the hourly rollups in the same transaction; returns how many were
        inserted. Strings are clipped to their column so one odd value cannot wedge the writer
        on a database that enforces lengths (PostgreSQL, MySQL)."""
        if not self._rollups_checked:
            rollups.mark_if_new(self.db)
            self._rollups_checked = True
        rows = [_row(r) for r in records]
        if not rows:
            return 0
        if self.db.dialect == "sqlite":
            return self._insert_sqlite(rows)
        with self.db.begin() as conn:
            fresh = _first_of(rows, self._inserted(conn, rows))
            rollups.add_records(conn, map(_ROLLUP_INPUT, fresh))
            return len(fresh)

    def _inserted(self, conn: Connection, rows: list[list]) -> set[str]:
        """Insert, ignoring known request_ids; the request_ids this insert added."""
        if conn.dialect.driver == "psycopg":
            # psycopg's pipelined executemany answers RETURNING per row: ~10x SQLAlchemy's
            # multi-row VALUES, which PostgreSQL must parse and plan anew for every batch.
            cur = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
            dbapi = conn.dialect.loaded_dbapi
            got: set[str] = set()
            try:
                cur.executemany(_PG_INSERT, rows, returning=True)
                while True:
                    got.update(rid for (rid,) in cur.fetchall())
                    if not cur.nextset():
                        return got
            except dbapi.Error as e:  # as SQLAlchemy would raise it: the writer tells data from outages
                raise exc.DBAPIError.instance(_PG_INSERT, None, e, dbapi.Error) from e
        params = [dict(zip(FIELDS, r, strict=True)) for r in rows]
        if conn.dialect.insert_executemany_returning:  # MariaDB 10.5+
            return {rid for (rid,) in conn.execute(self._insert_ignore().returning(t.c.request_id), params)}
        # MySQL has no RETURNING: lock the ids first (InnoDB's gap locks also hold back another
        # writer inserting one of the absent ones), so what was absent is what this insert adds.
        ids = list({r[_REQUEST_ID] for r in rows})
        present: set[str] = set()
        for i in range(0, len(ids), 1000):
            q = select(t.c.request_id).where(t.c.request_id.in_(ids[i : i + 1000])).with_for_update()
            present.update(rid for (rid,) in conn.execute(q))
        conn.execute(self._insert_ignore(), params)
        return set(ids) - present

    def _insert_ignore(self):
        name = self.db.dialect
        if name == "sqlite":
            return sqlite_insert(t).on_conflict_do_nothing(index_elements=["request_id"])
        if name == "postgresql":
            return pg_insert(t).on_conflict_do_nothing(index_elements=["request_id"])
        if name in ("mysql", "mariadb"):
            return mysql_insert(t).prefix_with("IGNORE")
        raise ValueError(f"unsupported database: {name}")

    def _insert_sqlite(self, rows: list[list]) -> int:
        # The writer's hottest loop: plain DB-API calls skip SQLAlchemy's per-row parameter
        # processing, which cost more than SQLite itself.
        with self.db.begin() as conn:
            driver = conn.connection.driver_connection
            assert driver is not None
            per = max(1, min(500, driver.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // len(FIELDS)))
            cur = driver.cursor()
            inserted: set[str] = set()
            for i in range(0, len(rows), per):
                part = rows[i : i + per]
                cur.execute(_sqlite_insert(len(part)), [v for row in part for v in row])
                inserted.update(rid for (rid,) in cur.fetchall())
            fresh = _first_of(rows, inserted)
            acc = rollups.Accumulator()
            acc.add(map(_ROLLUP_INPUT, fresh))
            rollups.upsert_sqlite(cur, acc.rows())
            return len(fresh)

    # Reads -------------------------------------------------------------------------------------
    def count(self) -> int:
        with self.db.connect() as conn:
            return conn.execute(select(func.count()).select_from(t)).scalar_one()

    def latest(
        self,
        limit: int = 20,
        since_ms: int | None = None,
        until_ms: int | None = None,
        offset: int = 0,
        **filters: str | None,
    ) -> list[dict]:
        """The newest records first, every contract field, from ``since_ms`` (inclusive) to
        ``until_ms`` (exclusive), skipping ``offset``; ``filters`` are column == value (None: no
        filter)."""
        q = select(*[t.c[f] for f in FIELDS]).order_by(t.c.timestamp.desc(), t.c.id.desc())
        if since_ms is not None:
            q = q.where(t.c.timestamp >= since_ms)
        if until_ms is not None:
            q = q.where(t.c.timestamp < until_ms)
        for k, v in filters.items():
            if v is not None:
                q = q.where(t.c[k] == v)
        q = q.limit(limit).offset(offset)
        with self.db.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(q)]

    def one(self, request_id: str) -> dict | None:
        """A record by its request id, every contract field."""
        q = select(*[t.c[f] for f in FIELDS]).where(t.c.request_id == request_id)
        with self.db.connect() as conn:
            r = conn.execute(q).first()
        return dict(r._mapping) if r is not None else None

    def request_ids(self) -> set[str]:
        with self.db.connect() as conn:
            return {r[0] for r in conn.execute(select(t.c.request_id))}


# The record column each quota scope matches.
SCOPE_COLUMNS = {"key": t.c.key_id, "user": t.c.user, "project": t.c.project, "department": t.c.department}


def used_since(
    db: Database, scope_kind: str, scope_value: str | None, model: str | None, metric: str, since_ms: int
) -> int:
    """What the ledger says a limit's scope used from ``since_ms`` on: total tokens, the number of
    admitted requests (refusals use nothing), or for ``cost:CUR`` the micro-units charged in CUR."""
    conds = [t.c.timestamp >= since_ms, t.c.status != "rejected"]
    if scope_kind != "global":
        conds.append(SCOPE_COLUMNS[scope_kind] == scope_value)
    if model is not None:
        conds.append(t.c.model == model)
    what: Any
    if metric.startswith("cost:"):
        conds.append(t.c.currency == metric[5:])
        what = func.coalesce(func.sum(t.c.cost_micros), 0)
    elif metric == "tokens":
        what = func.coalesce(func.sum(t.c.total_tokens), 0)
    else:
        what = func.count()
    with db.connect() as conn:
        return int(conn.execute(select(what).where(and_(*conds))).scalar_one())


def held_ids(db: Database, ids: Iterable[str], chunk: int = 500) -> set[str]:
    """Which of ``ids`` the ledger holds (records a quota seed must not count twice)."""
    ids = list(ids)
    out: set[str] = set()
    with db.connect() as conn:
        for i in range(0, len(ids), chunk):
            part = ids[i : i + chunk]
            out.update(r[0] for r in conn.execute(select(t.c.request_id).where(t.c.request_id.in_(part))))
    return out
