"""What commands print: rows as a table, JSON or CSV; times; and one-line errors."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, tzinfo
from enum import StrEnum
from typing import NoReturn

import orjson
import typer
from rich.cells import cell_len
from rich.console import Console
from rich.table import Table
from rich.text import Text

from tokenabacus.billing.cells import visible
from tokenabacus.billing.exports import csv_text, money_cells

# Right-aligned in tables, with thousands separators.
NUMERIC = frozenset(
    {"requests", "prompt_tokens", "completion_tokens", "total_tokens", "avg_duration_ms", "duration_ms"}
)


class Fmt(StrEnum):
    table = "table"
    json = "json"
    csv = "csv"


def fail(message: str, code: int = 2) -> NoReturn:
    """Every error is one line on stderr and exit code 2: no traceback reaches the user."""
    typer.echo(f"error: {visible(message)}", err=True)
    raise typer.Exit(code)


def iso(ms: int | None, zone: tzinfo = UTC) -> str | None:
    """Epoch milliseconds as an ISO date-time to the second, in ``zone``."""
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, zone).isoformat(timespec="seconds")


def emit(
    rows: list[dict],
    cols: list[str],
    fmt: Fmt,
    title: str | None = None,
    wide: bool = False,
    drop: Sequence[str] | None = None,
) -> None:
    """``drop``: the columns a narrow terminal loses first (default: from the right)."""
    if fmt == Fmt.json:
        _json(rows, cols)
    elif fmt == Fmt.csv:
        _csv(rows, cols)
    else:
        _table(money_cells(rows, cols, for_person=True), cols, title, wide, drop)


def _json(rows: list[dict], cols: list[str]) -> None:
    out = [{c: r.get(c) for c in cols} for r in rows]
    try:
        sys.stdout.write(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode() + "\n")
    except TypeError:  # a sum past 64 bits (a ledger with absurd figures): orjson stops there
        sys.stdout.write(json.dumps(out, indent=2, ensure_ascii=False) + "\n")


def _csv(rows: list[dict], cols: list[str]) -> None:
    sys.stdout.write(csv_text(rows, cols))  # the exports' writer: no cell is a formula


def _table(rows: list[dict], cols: list[str], title: str | None, wide: bool, drop: Sequence[str] | None) -> None:
    cells = [
        [
            ""
            if r.get(c) is None
            else (f"{r[c]:,}" if isinstance(r.get(c), int) and c in NUMERIC else visible(str(r[c])))
            for c in cols
        ]
        for r in rows
    ]
    if not rows:
        Console().print("[dim]no records[/dim]")
        return
    money = [c for c in cols if any(f"{c}_micros" in r for r in rows)]
    table(cols, cells, title, {c for c in cols if c in NUMERIC} | set(money), wide=wide, drop=drop, money=money)


def table(
    cols: list[str],
    cells: list[list[str]],
    title: str | None,
    numeric: set[str],
    styles: Sequence[str | None] | None = None,
    sections: Sequence[bool] | None = None,
    wide: bool = False,
    drop: Sequence[str] | None = None,
    money: Sequence[str] = (),
) -> None:
    """Print rows of ready cells. A cell is never cut: on a terminal too narrow for every column,
    columns are left out (``drop`` first, else from the right) and a line says which and how to
    see them; piped or redirected output, and ``wide``, keep every column."""
    widths = {c: max([cell_len(c)] + [cell_len(row[i]) for row in cells]) for i, c in enumerate(cols)}
    shown = list(cols)
    if sys.stdout.isatty() and not wide and _width(cols, widths) > Console().width:
        room = Console().width
        order = [c for c in (drop or default_drop(cols, money)) if c in widths and c != cols[0]]
        keep = [c for c in cols if c not in order]
        for c in reversed(order):  # the most wanted first, each while it still fits
            if _width([*keep, c], widths) <= room:
                keep.append(c)
        shown = [c for c in cols if c in keep]
    console = Console(width=max(_width(shown, widths), cell_len(title or "")))
    out = Table(title=Text(visible(title)) if title else None)
    for c in shown:
        out.add_column(c, justify="right" if c in numeric else "left", no_wrap=True, min_width=widths[c])
    idx = [cols.index(c) for c in shown]
    for n, row in enumerate(cells):
        if sections and sections[n] and out.rows:
            out.add_section()
        # Text, never Rich markup: "[/x]" in a model name is a name, not a closing tag.
        out.add_row(*(Text(row[i]) for i in idx), style=styles[n] if styles else None)
    console.print(out)
    hidden = [c for c in cols if c not in shown]
    if hidden:
        console.print(
            Text(f"{len(hidden)} more columns ({', '.join(hidden)}): --wide, or --format json or csv", style="dim")
        )


# Detail a narrow terminal gives up first, in this order; then the rest from the right, and the
# money a person came for last.
DETAIL_FIRST = (
    "unpriced_requests",
    "cancelled",
    "errors",
    "p95_duration_ms",
    "avg_duration_ms",
    "duration_ms",
    "usage_source",
    "cached_tokens",
    "prompt_tokens",
    "completion_tokens",
    "created_by",
    "created_at",
    "request_id",
    "currency",
)


def default_drop(cols: Sequence[str], money: Sequence[str]) -> list[str]:
    micros = [c for c in cols if c.endswith("_micros")]
    detail = [c for c in DETAIL_FIRST if c in cols]
    rest = [c for c in cols[::-1] if c not in micros and c not in detail and c not in money]
    return micros + detail + rest + [c for c in money if c in cols][::-1]


def _width(cols: list[str], widths: dict[str, int]) -> int:
    return sum(widths[c] for c in cols) + 3 * len(cols) + 1  # Rich's borders and padding
