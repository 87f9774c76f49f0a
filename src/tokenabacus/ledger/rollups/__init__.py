"""Hourly (and daily) rollups of the usage records: kept by the writer, rebuilt on demand, read by
reports. One module per job:

- ``accumulator``: the rollup rows' figures, and summing records into them in memory;
- ``upserts``: adding rows to the rollup tables, each database's own way;
- ``rebuild``: whether the rollups hold every record, and recomputing them from the raw records;
- ``reads``: ``aggregate``, the figures per group over rollups or raw records, and time keys;
- ``plan``: the read planner, ``usage_figures``: which hours come from which source.

This package's names are those of its modules, so callers write ``rollups.rebuild(db)``.
"""

from tokenabacus.calendar import DAY_MS, HOUR_MS
from tokenabacus.ledger.rollups.accumulator import (
    CAPPED_SOURCE,
    COMPARED_SOURCE,
    DIMENSIONS,
    DRIFT,
    FIGURES,
    INPUT,
    LATENCY_BOUNDS,
    LATENCY_COLUMNS,
    ROW_COLUMNS,
    SUMS,
    Accumulator,
    daily,
    digest,
    p95,
)
from tokenabacus.ledger.rollups.plan import MAX_CUT_HOURS, TIME_KEYS, Figures, usage_figures
from tokenabacus.ledger.rollups.reads import Source, TimeKey, aggregate, span, sql_int, time_key
from tokenabacus.ledger.rollups.rebuild import (
    COMPLETE_KEY,
    DAILY_KEY,
    complete,
    daily_complete,
    is_complete,
    mark_if_new,
    rebuild,
    status,
)
from tokenabacus.ledger.rollups.upserts import add_records, upsert, upsert_sqlite

__all__ = [
    "CAPPED_SOURCE",
    "COMPARED_SOURCE",
    "COMPLETE_KEY",
    "DAILY_KEY",
    "DAY_MS",
    "DIMENSIONS",
    "DRIFT",
    "FIGURES",
    "HOUR_MS",
    "INPUT",
    "LATENCY_BOUNDS",
    "LATENCY_COLUMNS",
    "MAX_CUT_HOURS",
    "ROW_COLUMNS",
    "SUMS",
    "TIME_KEYS",
    "Accumulator",
    "Figures",
    "Source",
    "TimeKey",
    "add_records",
    "aggregate",
    "complete",
    "daily",
    "daily_complete",
    "digest",
    "is_complete",
    "mark_if_new",
    "p95",
    "rebuild",
    "span",
    "sql_int",
    "status",
    "time_key",
    "upsert",
    "upsert_sqlite",
    "usage_figures",
]
