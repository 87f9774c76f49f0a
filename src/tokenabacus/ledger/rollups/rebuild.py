"""Whether the rollups hold every record, and rebuilding them from the raw records.

A ledger written before the rollups (or the daily rollups) existed has none for its old records:
its rollups are marked incomplete, and reports read the raw records (or the hourly rollups)
instead, until ``rebuild`` recomputes them all with the writers held off.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from sqlalchemy import Connection, delete, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert

from tokenabacus.calendar import HOUR_MS
from tokenabacus.ledger.database import Database
from tokenabacus.ledger.rollups.accumulator import INPUT, Accumulator
from tokenabacus.ledger.rollups.upserts import upsert
from tokenabacus.ledger.schema import meta
from tokenabacus.ledger.schema import usage_records as raw
from tokenabacus.ledger.schema import usage_rollups as ru
from tokenabacus.ledger.schema import usage_rollups_daily as rd

COMPLETE_KEY = "usage_rollups"  # meta: the rollups hold every record (a new ledger, or rebuilt)
DAILY_KEY = "usage_rollups_daily"  # meta: so do the daily rollups (added later: rebuilt to be complete)


def is_complete(conn: Connection, key: str = COMPLETE_KEY) -> bool:
    """Whether the rollups (``key``: DAILY_KEY for the daily ones) hold every record: false for a
    ledger written before they existed, until ``rebuild`` runs (reports then read the raw records,
    or the hourly rollups, instead)."""
    return conn.execute(select(meta.c.value).where(meta.c.key == key)).first() is not None


def complete(db: Database) -> bool:
    with db.connect() as conn:
        return is_complete(conn)


def daily_complete(db: Database) -> bool:
    with db.connect() as conn:
        return is_complete(conn, DAILY_KEY)


def _mark_complete(conn: Connection) -> None:
    name = conn.dialect.name
    for key in (COMPLETE_KEY, DAILY_KEY):
        values = {"key": key, "value": "complete"}
        if name == "postgresql":
            conn.execute(pg_insert(meta).values(**values).on_conflict_do_nothing(index_elements=["key"]))
        else:  # another process may have marked it first: ignore the conflict
            conn.execute(meta.insert().prefix_with("OR IGNORE" if name == "sqlite" else "IGNORE").values(**values))


def mark_if_new(db: Database) -> None:
    """Before a process first writes: a ledger without records gets its rollups from the start,
    so they are complete. One written before rollups existed stays unmarked until ``rebuild``."""
    with db.begin() as conn:
        if not (is_complete(conn) and is_complete(conn, DAILY_KEY)):
            if conn.execute(select(raw.c.id).limit(1)).first() is None:
                _mark_complete(conn)


@contextlib.contextmanager
def _writers_held(db: Database) -> Iterator[Connection]:
    """A transaction during which no other process can add records (they wait, their records stay
    in their spools), so rollups rebuilt in it match the raw rows exactly."""
    if db.dialect in ("mysql", "mariadb"):
        with db.connect() as conn:
            # LOCK TABLES commits what is open and must name every table the session then uses.
            conn.exec_driver_sql(
                "LOCK TABLES usage_records READ, usage_rollups WRITE, usage_rollups_daily WRITE, meta WRITE"
            )
            try:
                yield conn
                conn.commit()
            except BaseException:
                conn.rollback()
                raise
            finally:
                conn.exec_driver_sql("UNLOCK TABLES")
        return
    with db.begin() as conn:
        if db.dialect == "sqlite":
            conn.exec_driver_sql("BEGIN IMMEDIATE")  # the write lock, taken now rather than at the first write
        elif db.dialect == "postgresql":
            conn.exec_driver_sql("LOCK TABLE usage_records IN SHARE ROW EXCLUSIVE MODE")
        yield conn


def rebuild(db: Database, window_ms: int = 24 * HOUR_MS) -> tuple[int, int]:
    """Recompute every rollup from the raw records in one transaction, a window of records at a
    time (memory stays bounded); returns (records, rollup rows). Writers wait until it ends."""
    cols = [raw.c[c] for c in INPUT]
    records = rows = 0
    with _writers_held(db) as conn:
        conn.execute(delete(ru))
        conn.execute(delete(rd))
        start = conn.execute(select(func.min(raw.c.timestamp))).scalar()
        while start is not None:
            start -= start % HOUR_MS
            end = start + window_ms
            acc = Accumulator()
            acc.add(conn.execute(select(*cols).where(raw.c.timestamp >= start, raw.c.timestamp < end)))
            out = acc.rows()
            upsert(conn, out)
            records, rows = records + acc.records, rows + len(out)
            start = conn.execute(select(func.min(raw.c.timestamp)).where(raw.c.timestamp >= end)).scalar()
        _mark_complete(conn)
    return records, rows


def status(db: Database) -> dict[str, Any]:
    """What `tokenabacus db rollup` shows: completeness, and records counted against raw rows."""
    with db.connect() as conn:
        counted = conn.execute(select(func.coalesce(func.sum(ru.c.requests), 0), func.count())).one()
        records = conn.execute(select(func.count()).select_from(raw)).scalar_one()
        days = conn.execute(select(func.count()).select_from(rd)).scalar_one()
        return {
            "complete": is_complete(conn),
            "daily_complete": is_complete(conn, DAILY_KEY),
            "rollup_rows": int(counted[1]),
            "daily_rows": int(days),
            "records_counted": int(counted[0]),
            "records": int(records),
        }
