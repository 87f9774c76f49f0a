"""How `tokenabacus report` writes what it answers: a terminal table, CSV, JSON or an Excel
workbook, to standard output or a file, and notes on standard error."""

from __future__ import annotations

import contextlib
import sys
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import typer

from tokenabacus.billing.cells import visible
from tokenabacus.billing.exports import money_cells
from tokenabacus.cli.output import fail

if TYPE_CHECKING:
    from tokenabacus.billing.catalog import Answer


class ReportFmt(StrEnum):
    table = "table"
    csv = "csv"
    json = "json"
    xlsx = "xlsx"


def note(text: str) -> None:
    typer.echo(f"note: {visible(text)}", err=True)


def write_answer(answer: Answer, fmt: str, output: Path | None, wide: bool = False) -> None:
    """A named report's answer: its notes on standard error, then the answer in ``fmt``."""
    for n in answer.notes:
        note(n)
    if fmt == ReportFmt.xlsx and answer.workbook is not None:
        write_bytes(answer.workbook(), output)
    elif fmt == ReportFmt.json and answer.document:
        write_text(as_json(answer.body), output)
    else:
        write(answer.rows, answer.columns, fmt, answer.title, output, wide)


def check_output(fmt: str, output: Path | None) -> None:
    if fmt == ReportFmt.xlsx and output is None and sys.stdout.isatty():
        fail("an xlsx workbook is binary: give --output FILE or redirect standard output")


def write_bytes(data: bytes, output: Path | None) -> None:
    try:
        if output is None:
            sys.stdout.buffer.write(data)
        else:
            output.write_bytes(data)
    except OSError as e:
        fail(f"cannot write {output}: {e.strerror or e}")


def write_text(text: str, output: Path | None) -> None:
    write_bytes(text.encode("utf-8"), output)


def write(rows: list[dict], cols: list[str], fmt: str, title: str, output: Path | None, wide: bool = False) -> None:
    from tokenabacus.billing.exports import Sheet, csv_text, xlsx_bytes

    if fmt == ReportFmt.xlsx:
        write_bytes(xlsx_bytes([Sheet("report", cols, rows)], title), output)
    elif fmt == ReportFmt.csv:
        write_text(csv_text(rows, cols), output)
    elif fmt == ReportFmt.json:
        write_text(as_json([{c: r.get(c) for c in cols} for r in rows]), output)
    else:
        with contextlib.ExitStack() as stack:
            if output is not None:
                try:
                    fh = stack.enter_context(open(output, "w", encoding="utf-8"))
                except OSError as e:
                    fail(f"cannot write {output}: {e.strerror or e}")
                stack.enter_context(contextlib.redirect_stdout(fh))
            _table(money_cells(rows, cols, for_person=True), cols, title, wide or output is not None)


def as_json(out: Any) -> str:
    import json

    try:
        # NON_STR_KEYS: a column named like a reserved word comes back as a str subclass.
        return orjson.dumps(out, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode() + "\n"
    except TypeError:  # a sum past 64 bits (a ledger with absurd figures): orjson stops there
        return json.dumps(out, indent=2, ensure_ascii=False) + "\n"


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _table(rows: list[dict], cols: list[str], title: str, wide: bool = False) -> None:
    from rich.console import Console

    from tokenabacus.cli.output import table

    if not rows or all(r.get("row") in ("total", "grand total") and not r.get("requests") for r in rows):
        Console().print("[dim]no records[/dim]")
        return
    numeric = {c for c in cols if any(_is_number(r.get(c)) for r in rows)}

    def cell(r: dict, c: str) -> str:
        v = r.get(c)
        if v is None:
            return ""
        return f"{v:,}" if c in numeric and _is_number(v) and c != "hour" else visible(str(v))

    kinds = [r.get("row") for r in rows]
    money = [c for c in cols if any(f"{c}_micros" in r for r in rows) or (c == "cost" and "cost_micros" not in cols)]
    table(
        cols,
        [[cell(r, c) for c in cols] for r in rows],
        title,
        numeric | set(money),
        styles=["bold" if k in ("subtotal", "total", "grand total") else None for k in kinds],
        sections=[k in ("total", "grand total") for k in kinds],
        wide=wide,
        money=money,
    )
