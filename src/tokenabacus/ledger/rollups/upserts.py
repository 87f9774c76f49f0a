"""Adding rows to the rollups: each database's own upsert, summing into an existing row.

The writer adds the records it actually inserted to their rows in the same transaction as the
records themselves, so a replayed duplicate (ignored by the insert) is never counted twice and a
record refused as data is never counted at all: the rollups always equal the raw rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Connection, exc, func
from sqlalchemy.dialects.mysql import insert as mysql_insert
from sqlalchemy.dialects.postgresql import insert as pg_insert

from tokenabacus.ledger.rollups.accumulator import ROW_COLUMNS, SUMS, Accumulator, daily
from tokenabacus.ledger.schema import usage_rollups as ru
from tokenabacus.ledger.schema import usage_rollups_daily as rd

_QUOTED = ", ".join(f'"{c}"' for c in ROW_COLUMNS)


def _upsert_sql(table_name: str, mark: str, greatest: str) -> str:
    """Add to the row of the same (hour, dims) if there is one (MySQL's form is in upsert())."""
    add = ", ".join(f'"{c}" = {table_name}."{c}" + excluded."{c}"' for c in SUMS)
    return (
        f"INSERT INTO {table_name} ({_QUOTED}) VALUES ({', '.join(mark for _ in ROW_COLUMNS)}) "
        f"ON CONFLICT (hour, dims) DO UPDATE SET {add}, "
        f"duration_max_ms = {greatest}({table_name}.duration_max_ms, excluded.duration_max_ms)"
    )


_SQLITE_UPSERT = {t.name: _upsert_sql(t.name, "?", "max") for t in (ru, rd)}
_PG_UPSERT = {t.name: _upsert_sql(t.name, "%s", "GREATEST") for t in (ru, rd)}


def upsert_sqlite(cursor: Any, rows: list[tuple]) -> None:
    """Add rows to the hourly and daily rollups through the SQLite driver (the writer's fast path)."""
    if rows:
        cursor.executemany(_SQLITE_UPSERT[ru.name], rows)
        cursor.executemany(_SQLITE_UPSERT[rd.name], daily(rows))


def upsert(conn: Connection, rows: list[tuple]) -> None:
    """Add hourly rows to the rollups, and their days to the daily ones: each database's own
    upsert, summing into an existing row."""
    if not rows:
        return
    if conn.dialect.name == "sqlite":
        driver = conn.connection.driver_connection
        assert driver is not None
        upsert_sqlite(driver.cursor(), rows)
        return
    _upsert(conn, ru, rows)
    _upsert(conn, rd, daily(rows))


def _upsert(conn: Connection, t: Any, rows: list[tuple]) -> None:
    name = conn.dialect.name
    if conn.dialect.driver == "psycopg":  # pipelined, as UsageRecords inserts: ~2x SQLAlchemy's batches
        cur = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        dbapi = conn.dialect.loaded_dbapi
        sql = _PG_UPSERT[t.name]
        try:
            cur.executemany(sql, rows)
        except dbapi.Error as e:  # as SQLAlchemy would raise it: the writer tells data from outages
            raise exc.DBAPIError.instance(sql, None, e, dbapi.Error) from e
        return
    params = [dict(zip(ROW_COLUMNS, r, strict=True)) for r in rows]
    if name == "postgresql":
        pg = pg_insert(t)
        pg_set = {c: t.c[c] + pg.excluded[c] for c in SUMS}
        pg_set["duration_max_ms"] = func.greatest(t.c.duration_max_ms, pg.excluded.duration_max_ms)
        conn.execute(pg.on_conflict_do_update(index_elements=["hour", "dims"], set_=pg_set), params)
    elif name in ("mysql", "mariadb"):
        my = mysql_insert(t)
        # Each assignment reads only its own column, so MySQL's left-to-right evaluation is harmless.
        my_set = {c: t.c[c] + my.inserted[c] for c in SUMS}
        my_set["duration_max_ms"] = func.greatest(t.c.duration_max_ms, my.inserted.duration_max_ms)
        conn.execute(my.on_duplicate_key_update(my_set), params)
    else:
        raise ValueError(f"unsupported database: {name}")


def add_records(conn: Connection, rows: Iterable[Sequence[Any]]) -> int:
    """Roll up records (tuples in ``INPUT`` order) inside the caller's transaction."""
    acc = Accumulator()
    acc.add(rows)
    upsert(conn, acc.rows())
    return acc.records
