"""What commands print: rows as a table, JSON or CSV; times; and one-line errors."""

from __future__ import annotations

import json
import sys
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
from tokenabacus.billing.exports import csv_text

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


def emit(rows: list[dict], cols: list[str], fmt: Fmt, title: str | None = None) -> None:
    if fmt == Fmt.json:
        _json(rows, cols)
    elif fmt == Fmt.csv:
        _csv(rows, cols)
    else:
        _table(rows, cols, title)


def _json(rows: list[dict], cols: list[str]) -> None:
    out = [{c: r.get(c) for c in cols} for r in rows]
    try:
        sys.stdout.write(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode() + "\n")
    except TypeError:  # a sum past 64 bits (a ledger with absurd figures): orjson stops there
        sys.stdout.write(json.dumps(out, indent=2, ensure_ascii=False) + "\n")


def _csv(rows: list[dict], cols: list[str]) -> None:
    sys.stdout.write(csv_text(rows, cols))  # the exports' writer: no cell is a formula


def _table(rows: list[dict], cols: list[str], title: str | None) -> None:
    cells = [
        [
            ""
            if r.get(c) is None
            else (f"{r[c]:,}" if isinstance(r.get(c), int) and c in NUMERIC else visible(str(r[c])))
            for c in cols
        ]
        for r in rows
    ]
    # A terminal gets Rich's fitting; piped or redirected output keeps every cell whole.
    widths = [max([cell_len(c)] + [cell_len(row[i]) for row in cells]) for i, c in enumerate(cols)]
    console = Console() if sys.stdout.isatty() else Console(width=sum(widths) + 3 * len(cols) + 1)
    if not rows:
        console.print("[dim]no records[/dim]")
        return
    table = Table(title=Text(visible(title)) if title else None)
    for c in cols:
        table.add_column(c, justify="right" if c in NUMERIC else "left")
    for row in cells:
        table.add_row(*map(Text, row))  # text, never Rich markup: "[/x]" in a model name is a name
    console.print(table)
