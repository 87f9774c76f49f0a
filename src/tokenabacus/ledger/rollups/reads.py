"""Reading the usage figures: ``aggregate``, the one query reports are made of, over the hourly
rollups (whole hours), the daily ones (whole UTC days) or the raw records (the edges of a range
that do not fill an hour); all give the same figures, in ``FIGURES`` order. Groups are dimensions
or time keys (``time_key``: local days, weeks, months, hours of day) computed in the database.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

from sqlalchemy import Column, Connection, and_, case, column, func, literal_column, or_, select, table
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.sql.elements import ColumnElement

from tokenabacus.calendar import DAY_MS, HOUR_MS
from tokenabacus.ledger.database import Database
from tokenabacus.ledger.rollups.accumulator import CAPPED_SOURCE, COMPARED_SOURCE, FIGURES, LATENCY_BOUNDS
from tokenabacus.ledger.schema import usage_records as raw
from tokenabacus.ledger.schema import usage_rollups as ru
from tokenabacus.ledger.schema import usage_rollups_daily as rd

Source = Literal["rollups", "daily", "raw"]
# A group key computed from the source's time column (UTC ms: the hour, or the record's timestamp).
TimeKey = Callable[[ColumnElement[Any]], ColumnElement[Any]]
WEEK_MS = 7 * DAY_MS
MONDAY_SHIFT_MS = 3 * DAY_MS  # 1970-01-01 was a Thursday: shifted by 3 days, weeks start on Mondays


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


# Time keys -----------------------------------------------------------------------------------
def _local(t: ColumnElement[Any], offsets: Sequence[tuple[int, int]]) -> ColumnElement[Any]:
    """Local wall time in ms since 1970-01-01 (local): UTC ms plus the offset in force."""
    i = sql_int
    if len(offsets) == 1:
        return t + i(offsets[0][1])
    whens = [(t < i(nxt), i(off)) for (_, off), (nxt, _) in zip(offsets, offsets[1:], strict=False)]
    return t + case(*whens, else_=i(offsets[-1][1]))


def time_key(dim: str, offsets: Sequence[tuple[int, int]], months: Sequence[int]) -> TimeKey:
    """The group key of a local ``day``, ``week`` (its Monday) or ``month`` as the local ms of its
    start, or of an ``hour`` of day as ms since local midnight; ``offsets`` are the zone's UTC
    offset as (from UTC ms, offset ms) pieces, ``months`` the local month starts in range."""
    i = sql_int

    def key(t: ColumnElement[Any]) -> ColumnElement[Any]:
        loc = _local(t, offsets)
        if dim == "day":
            return loc - loc % i(DAY_MS)
        if dim == "week":
            return loc - (loc + i(MONDAY_SHIFT_MS)) % i(WEEK_MS)
        if dim == "hour":
            return loc % i(DAY_MS) - loc % i(HOUR_MS)
        # month: calendar months are not arithmetic, so the starts of the months in range
        return case(*[(loc < i(nxt), i(m)) for m, nxt in zip(months, months[1:], strict=False)], else_=i(months[-1]))

    return key
