"""Hourly rollups of the usage records: kept by the writer, rebuilt on demand, read by reports.

A rollup row sums the records of one UTC hour that share every dimension (model, department,
project, user, key_id, status, currency; a missing value is ''). The writer adds the records it
actually inserted to their rows in the same transaction as the records themselves, so a replayed
duplicate (ignored by the insert) is never counted twice and a record refused as data is never
counted at all: the rollups always equal the raw rows.

Latency is kept as a fixed histogram (``LATENCY_BOUNDS``, 1-2-5 steps in ms) plus the longest
duration, so a report can give a p95 for any set of rows; see ``p95``.

``aggregate`` is the one query reports are made of, over rollups (whole hours) or over raw records
(the edges of a range that do not fill an hour); both give the same figures, in ``FIGURES`` order.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from bisect import bisect_left
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

from sqlalchemy import Column, Connection, and_, case, column, delete, exc, func, literal_column, or_, select, table
from sqlalchemy.dialects.mysql import insert as mysql_insert
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.sql.elements import ColumnElement

from tokenabacus.ledger.database import Database
from tokenabacus.ledger.schema import meta
from tokenabacus.ledger.schema import usage_records as raw
from tokenabacus.ledger.schema import usage_rollups as ru
from tokenabacus.ledger.schema import usage_rollups_daily as rd

HOUR_MS = 3_600_000
DIMENSIONS = ("model", "department", "project", "user", "key_id", "status", "currency", "price_version")
# Upper bounds (ms) of the latency buckets, as the schema names its columns (lat_le_N).
LATENCY_BOUNDS: tuple[int, ...] = tuple(
    int(c.name.removeprefix("lat_le_")) for c in ru.columns if c.name.startswith("lat_le_")
)
LATENCY_COLUMNS = (*(f"lat_le_{b}" for b in LATENCY_BOUNDS), "lat_over")
# Our count against the upstream's, over the records that kept both (usage_source "tokenizer" with
# upstream figures): the records compared, each side's prompt and completion sums, and how many
# records disagreed. A record billed from the upstream's figures kept no count of ours to compare,
# unless its claim was capped at what the request could use (metering.bounds): billed below the
# claim, it is compared as well.
DRIFT = (
    "compared_requests",
    "compared_prompt_tokens",
    "compared_completion_tokens",
    "upstream_prompt_tokens",
    "upstream_completion_tokens",
    "mismatched_requests",
)
COMPARED_SOURCE = "tokenizer"
CAPPED_SOURCE = "upstream"  # compared only when billed below the claim
# The additive figures of a rollup row; FIGURES adds the longest duration (merged by max).
SUMS = (
    "requests",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "cached_tokens",
    "cost_micros",
    "priced_requests",
    "duration_ms",
    *DRIFT,
    *LATENCY_COLUMNS,
)
FIGURES = (*SUMS, "duration_max_ms")
# What the accumulator reads from each record, in this order.
INPUT = (
    "timestamp",
    *DIMENSIONS,
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "cached_tokens",
    "cost_micros",
    "duration_ms",
    "usage_source",
    "upstream_prompt_tokens",
    "upstream_completion_tokens",
)
COMPLETE_KEY = "usage_rollups"  # meta: the rollups hold every record (a new ledger, or rebuilt)
DAILY_KEY = "usage_rollups_daily"  # meta: so do the daily rollups (added later: rebuilt to be complete)
DAY_MS = 24 * HOUR_MS
_ROW_COLUMNS = ("hour", "dims", *DIMENSIONS, *FIGURES)
_FIRST_BUCKET = SUMS.index(LATENCY_COLUMNS[0])
_FIRST_DRIFT = SUMS.index(DRIFT[0])

Source = Literal["rollups", "daily", "raw"]
# A group key computed from the source's time column (UTC ms: the hour, or the record's timestamp).
TimeKey = Callable[[ColumnElement[Any]], ColumnElement[Any]]


def digest(dims: Sequence[str]) -> str:
    """The rollup row's key for these dimension values (length-prefixed, so no two tuples meet)."""
    text = "".join(f"{len(v)}:{v}" for v in dims)
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def p95(buckets: Sequence[int], longest: int) -> int | None:
    """The nearest-rank 95th percentile of a latency histogram, as the upper bound of the bucket
    that holds it, capped by the longest duration: never below the exact value, at most one
    bucket step (2x, or 2.5x from 2 to 5) above it. None without timed records."""
    n = sum(buckets)
    if not n:
        return None
    rank = -(-n * 95 // 100)  # ceil(0.95 n) in integers
    seen = 0
    for i, count in enumerate(buckets):
        seen += count
        if seen >= rank:
            return min(LATENCY_BOUNDS[i], longest) if i < len(LATENCY_BOUNDS) else longest
    return longest  # not reached: the counts add up to n


class Accumulator:
    """Sums records (tuples in ``INPUT`` order) into rollup rows, in memory."""

    def __init__(self) -> None:
        self.groups: dict[tuple, list[int]] = {}
        self.records = 0

    def add(self, rows: Iterable[Sequence[Any]]) -> None:
        # The writer's hot loop: locals, no function calls per figure.
        groups, bounds, width, first = self.groups, LATENCY_BOUNDS, len(FIGURES), _FIRST_BUCKET
        d0 = _FIRST_DRIFT
        n = 0
        for (
            ts, model, dept, project, user, key_id, status, currency, version,
            pt, ct, tt, cached, cost, dur, source, up_p, up_c,
        ) in rows:  # fmt: skip
            n += 1
            key = (
                ts - ts % HOUR_MS,
                model or "",
                dept or "",
                project or "",
                user or "",
                key_id or "",
                status or "",
                currency or "",
                version or "",
            )
            acc = groups.get(key)
            if acc is None:
                acc = groups[key] = [0] * width
            acc[0] += 1
            if pt is not None:
                acc[1] += pt
            if ct is not None:
                acc[2] += ct
            if tt is not None:
                acc[3] += tt
            if cached is not None:
                acc[4] += cached
            if cost is not None:
                acc[5] += cost
                acc[6] += 1
            if dur is not None:
                acc[7] += dur
                acc[first + bisect_left(bounds, dur)] += 1
                if dur > acc[-1]:
                    acc[-1] = dur
            if up_p is not None and up_c is not None:
                differs = pt != up_p or ct != up_c
                if source == COMPARED_SOURCE or (differs and source == CAPPED_SOURCE):
                    acc[d0] += 1
                    acc[d0 + 1] += pt or 0
                    acc[d0 + 2] += ct or 0
                    acc[d0 + 3] += up_p
                    acc[d0 + 4] += up_c
                    if differs:
                        acc[d0 + 5] += 1
        self.records += n

    def rows(self) -> list[tuple]:
        """Rows in ``_ROW_COLUMNS`` order, sorted by (hour, dims): concurrent writers then lock
        the rows they share in the same order and cannot deadlock."""
        out = [(key[0], digest(key[1:]), *key[1:], *acc) for key, acc in self.groups.items()]
        out.sort(key=lambda r: (r[0], r[1]))
        return out


# Writes ----------------------------------------------------------------------------------------
_QUOTED = ", ".join(f'"{c}"' for c in _ROW_COLUMNS)


def _upsert_sql(table_name: str, mark: str, greatest: str) -> str:
    """Add to the row of the same (hour, dims) if there is one (MySQL's form is in upsert())."""
    add = ", ".join(f'"{c}" = {table_name}."{c}" + excluded."{c}"' for c in SUMS)
    return (
        f"INSERT INTO {table_name} ({_QUOTED}) VALUES ({', '.join(mark for _ in _ROW_COLUMNS)}) "
        f"ON CONFLICT (hour, dims) DO UPDATE SET {add}, "
        f"duration_max_ms = {greatest}({table_name}.duration_max_ms, excluded.duration_max_ms)"
    )


_SQLITE_UPSERT = {t.name: _upsert_sql(t.name, "?", "max") for t in (ru, rd)}
_PG_UPSERT = {t.name: _upsert_sql(t.name, "%s", "GREATEST") for t in (ru, rd)}


def daily(rows: Sequence[tuple]) -> list[tuple]:
    """Hourly rollup rows (``_ROW_COLUMNS`` order) summed per UTC day and names, in the same
    order (day, dims): the daily table's rows for the same records."""
    width = len(FIGURES)
    out: dict[tuple[int, str], list] = {}
    for r in rows:
        day = r[0] - r[0] % DAY_MS
        acc = out.get((day, r[1]))
        if acc is None:
            out[(day, r[1])] = [day, *r[1:]]
            continue
        for i in range(len(acc) - width, len(acc) - 1):
            acc[i] += r[i]
        acc[-1] = max(acc[-1], r[-1])
    return [tuple(v) for _, v in sorted(out.items())]


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
    params = [dict(zip(_ROW_COLUMNS, r, strict=True)) for r in rows]
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


# Completeness ----------------------------------------------------------------------------------
def is_complete(conn: Connection, key: str = COMPLETE_KEY) -> bool:
    """Whether the rollups (``key``: DAILY_KEY for the daily ones) hold every record: false for a
    ledger written before they existed, until ``rebuild`` runs (reports then read the raw records,
    or the hourly rollups, instead)."""
    return conn.execute(select(meta.c.value).where(meta.c.key == key)).first() is not None


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


# Reads -----------------------------------------------------------------------------------------
_TEMP = "tokenabacus_report_groups"  # SQLite: a connection's scratch table for summing rollups
_SCAN_PARTS = min(4, os.cpu_count() or 1)  # SQLite: rollup scans run in this many threads


def sql_int(v: int) -> ColumnElement[Any]:
    """An integer inlined in the SQL: group expressions must be identical in SELECT and GROUP BY."""
    return literal_column(str(int(v)))


_LOW32 = 0xFFFFFFFF


def _raw_figure_specs() -> list[tuple[ColumnElement[Any], bool]]:
    """FIGURES as expressions over raw records, each marked when it sums token or money figures
    (large enough to overflow SQLite's sum(); counts cannot)."""
    r = raw.c
    d = r.duration_ms
    zero = sql_int(0)
    differs = or_(
        func.coalesce(r.prompt_tokens, -1) != r.upstream_prompt_tokens,
        func.coalesce(r.completion_tokens, -1) != r.upstream_completion_tokens,
    )
    compared = and_(
        r.upstream_prompt_tokens.is_not(None),
        r.upstream_completion_tokens.is_not(None),
        or_(r.usage_source == COMPARED_SOURCE, and_(r.usage_source == CAPPED_SOURCE, differs)),
    )
    mismatched = and_(compared, differs)

    def when(cond: ColumnElement[bool], v: ColumnElement[Any]) -> ColumnElement[Any]:
        return case((cond, v), else_=zero)

    buckets: list[tuple[ColumnElement[Any], bool]] = []
    low = None
    for b in LATENCY_BOUNDS:
        cond = d <= sql_int(b) if low is None else and_(d > sql_int(low), d <= sql_int(b))
        buckets.append((func.sum(when(cond, sql_int(1))), False))
        low = b
    buckets.append((func.sum(when(d > sql_int(LATENCY_BOUNDS[-1]), sql_int(1))), False))
    return [
        (func.count(), False),
        *((r[c], True) for c in ("prompt_tokens", "completion_tokens", "total_tokens", "cached_tokens", "cost_micros")),
        (func.count(r.cost_micros), False),
        (d, True),
        (func.sum(when(compared, sql_int(1))), False),
        (when(compared, func.coalesce(r.prompt_tokens, 0)), True),
        (when(compared, func.coalesce(r.completion_tokens, 0)), True),
        (when(compared, r.upstream_prompt_tokens), True),
        (when(compared, r.upstream_completion_tokens), True),
        (func.sum(when(mismatched, sql_int(1))), False),
        *buckets,
        (func.max(when(d > 0, d)), False),
    ]


_RAW_SPLIT = tuple(summed for _, summed in _raw_figure_specs())


def _raw_figures(split: bool) -> list[ColumnElement[Any]]:
    """FIGURES computed from raw records. ``split`` (SQLite): each sum is taken as a high and a low
    32-bit half, joined exactly in Python (``_joined``), because SQLite's sum() fails on a 64-bit
    overflow, which a ledger holding absurd figures (written before the writer checked them)
    reaches with two records; PostgreSQL and MySQL sum into wider types already."""
    out: list[ColumnElement[Any]] = []
    for e, summed in _raw_figure_specs():
        if not summed:
            out.append(func.coalesce(e, 0))
        elif split:
            out += [func.coalesce(func.sum(e.op(">>")(32)), 0), func.coalesce(func.sum(e.op("&")(_LOW32)), 0)]
        else:
            out.append(func.coalesce(func.sum(e), 0))
    return out


def _joined(values: Sequence[Any]) -> list[int]:
    """The figures of a split row (``_raw_figures(split=True)``), halves put back together."""
    v = [int(x) for x in values]
    out, at = [], 0
    for summed in _RAW_SPLIT:
        if summed:
            out.append((v[at] << 32) + v[at + 1])
            at += 2
        else:
            out.append(v[at])
            at += 1
    return out


def aggregate(
    db: Database,
    source: Source,
    keys: Mapping[str, TimeKey | None],
    windows: Sequence[tuple[int, int]],
    filters: Mapping[str, Sequence[str]] | None = None,
    exclude_hours: Sequence[int] = (),
    only: Collection[str] | None = None,
) -> list[tuple]:
    """Figures per group over the time ``windows`` ([from, to) in UTC ms, OR'ed): rows of
    (*key values, status, currency, *FIGURES). ``keys`` are dimensions (None) or time keys
    computed from the time column. Missing dimension values are ''; ``filters`` keep the rows
    whose dimension is one of the values. Rollups: the windows must be whole hours. A group may
    come in several rows (parts of the range summed apart): callers add them up. ``only``: the
    figures the caller reads; rollups sum just those (a third of the columns for money
    reports) and the others come back 0."""
    if not windows:
        return []
    names = [c for c in FIGURES if only is None or c in only]
    t = rd if source == "daily" else ru
    if source != "raw":
        tcol = t.c.hour

        def dim(name: str) -> ColumnElement[Any]:
            return t.c[name]

        figures: list[ColumnElement[Any]] = [
            func.max(t.c[c]) if c == "duration_max_ms" else func.sum(t.c[c]) for c in names
        ]
    else:
        tcol = raw.c.timestamp
        empty: ColumnElement[Any] = literal_column("''")

        def dim(name: str) -> ColumnElement[Any]:
            return func.coalesce(raw.c[name], empty)

        figures = _raw_figures(split=db.dialect == "sqlite")
        names = list(FIGURES)
    groups = [fn(tcol) if fn is not None else dim(k) for k, fn in keys.items()]
    groups += [dim("status"), dim("currency")]

    def where(windows: Sequence[tuple[int, int]]) -> list[ColumnElement[bool]]:
        conds: list[ColumnElement[bool]] = [or_(*(and_(tcol >= a, tcol < b) for a, b in windows))]
        if exclude_hours:
            conds.append(tcol.not_in(list(exclude_hours)))
        for name, values in (filters or {}).items():
            conds.append(dim(name).in_(list(values)))
        return conds

    width = len(groups)
    if db.dialect == "sqlite" and source != "raw":
        # SQLite scans on one core: a long range is cut in parts summed on connections of their own
        # (the driver lets go of the GIL while SQLite works); callers add up a group's rows.
        parts = _parts(windows, _SCAN_PARTS)

        def summed(part: Sequence[tuple[int, int]]) -> list:
            with db.connect() as conn:
                return _summed_in_temp(conn, t, groups, where(part), names)

        with ThreadPoolExecutor(len(parts)) as pool:
            return [r for rows in pool.map(summed, parts) for r in rows]  # SQLite's sums are ints
    with db.connect() as conn:
        if conn.dialect.name == "postgresql":
            # A few thousand groups out of a million rows: a hash in memory rather than a sort
            # spilled to disk (work_mem's 4 MB default), and no JIT compiling (~90 ms a query,
            # never earned back here); 1.2 s -> 0.7 s for a month by day and hour of 10M records.
            conn.exec_driver_sql("SET LOCAL work_mem = '64MB'")
            conn.exec_driver_sql("SET LOCAL jit = off")
        stmt = select(*groups, *figures).where(*where(windows)).group_by(*groups)
        found = list(conn.execute(stmt))
    if source == "raw" and db.dialect == "sqlite":
        return [(*r[:width], *_joined(r[width:])) for r in found]
    # PostgreSQL and MySQL sum into decimals: ints for every database.
    return _padded(found, width, names)


def _padded(found: Sequence[Sequence[Any]], width: int, names: Sequence[str]) -> list[tuple]:
    """Rows of (*keys, *figures in ``names``) as rows of (*keys, *FIGURES), ints, 0 where not read."""
    if len(names) == len(FIGURES):
        return [(*r[:width], *(int(v) for v in r[width:])) for r in found]
    at = [FIGURES.index(n) for n in names]
    out = []
    for r in found:
        figs = [0] * len(FIGURES)
        for i, v in zip(at, r[width:], strict=True):
            figs[i] = int(v)
        out.append((*r[:width], *figs))
    return out


def _parts(windows: Sequence[tuple[int, int]], n: int) -> list[list[tuple[int, int]]]:
    """Whole-hour windows cut into at most ``n`` parts of about the same number of hours; ranges
    under two days stay whole (threads would cost more than they save)."""
    hours = sum(b - a for a, b in windows) // HOUR_MS
    if n < 2 or hours < 48:
        return [list(windows)]
    size = -(-hours // n) * HOUR_MS
    parts: list[list[tuple[int, int]]] = [[]]
    room = size
    for a, b in windows:
        while b - a > room:
            parts[-1].append((a, a + room))
            a, room = a + room, size
            parts.append([])
        if b > a:
            parts[-1].append((a, b))
            room -= b - a
    return [p for p in parts if p]


def _summed_in_temp(
    conn: Connection,
    t: Any,
    groups: list[ColumnElement[Any]],
    conds: list[ColumnElement[bool]],
    names: Sequence[str],
) -> list:
    """Rollup rows summed per group on SQLite, whose GROUP BY sorts every row it reads with all its
    figures: its largest cost here. Summing into a temporary table keyed by the group skips the
    sort (a month of 10M records, ~800k rollup rows into a few dozen groups: 1.7 s -> 1.2 s). The
    table is WITHOUT ROWID: its rows live in the key's own B-tree, one lookup per upsert, not two."""
    keys = [f"k{i}" for i in range(len(groups))]
    figs = [f"f{i}" for i in range(len(names))]
    pk = keys
    cols = keys + figs
    sel = [*groups, *(t.c[c] for c in names)]
    # Grouping by many name columns (a chargeback: department, project, user, model, ...), key the
    # sums by the rows' one-column digest of all their names instead: each upsert then compares
    # one short string, not six (1.75 -> 1.56 s).
    by_digest = len(groups) >= 6 and all(isinstance(g, Column) for g in groups)
    if by_digest:
        pk = ["d"]
        cols = ["d", *cols]
        sel = [t.c.dims, *sel]
    conn.exec_driver_sql(f"DROP TABLE IF EXISTS temp.{_TEMP}")
    conn.exec_driver_sql(f"CREATE TEMP TABLE {_TEMP} ({', '.join(cols)}, PRIMARY KEY ({', '.join(pk)})) WITHOUT ROWID")
    try:
        tmp = table(_TEMP, *(column(c) for c in cols))
        ins = sqlite_insert(tmp).from_select(cols, select(*sel).where(*conds))
        summed = {
            # the longest duration merges by max, everything else adds up
            f: func.max(tmp.c[f], ins.excluded[f]) if n == "duration_max_ms" else tmp.c[f] + ins.excluded[f]
            for f, n in zip(figs, names, strict=True)
        }
        conn.execute(ins.on_conflict_do_update(index_elements=pk, set_=summed))
        # Rows of (*keys, *FIGURES), 0 for the figures not read: no padding in Python. By digest,
        # a group comes in a row per digest: the caller adds them up, as it does the parts'.
        col = dict(zip(names, figs, strict=True))
        final = select(*(tmp.c[k] for k in keys), *(tmp.c[col[n]] if n in col else sql_int(0) for n in FIGURES))
        # Read through the driver: plain tuples, without a result row object per row (tens of
        # thousands of rows of 30-odd columns: ~0.2 s of Python saved).
        sql = str(final.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True}))
        driver = conn.connection.driver_connection
        assert driver is not None
        return driver.execute(sql).fetchall()
    finally:
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS temp.{_TEMP}")


def span(db: Database) -> tuple[int, int] | None:
    """The first and last record's timestamps (the index answers both), or None when empty."""
    with db.connect() as conn:
        # Two statements: SQLite answers a lone min() or max() from the index, not both at once.
        lo = conn.execute(select(func.min(raw.c.timestamp))).scalar()
        hi = conn.execute(select(func.max(raw.c.timestamp))).scalar()
    return None if lo is None or hi is None else (int(lo), int(hi))


def complete(db: Database) -> bool:
    with db.connect() as conn:
        return is_complete(conn)


def daily_complete(db: Database) -> bool:
    with db.connect() as conn:
        return is_complete(conn, DAILY_KEY)
