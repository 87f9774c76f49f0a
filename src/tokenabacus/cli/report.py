"""`tokenabacus report`: requests, tokens, cost and latency grouped by any dimension, as a table,
CSV, JSON or an Excel workbook."""

from __future__ import annotations

import contextlib
import sys
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from tokenabacus.cli.common import ConfigOpt, DataDirOpt, open_store
from tokenabacus.cli.output import NUMERIC, Fmt, emit, fail

if TYPE_CHECKING:
    from tokenabacus.billing.reports import Report

# Right-aligned with thousands separators in the table, besides output.NUMERIC.
_NUMBERS = NUMERIC | {"cached_tokens", "cost_micros", "unpriced_requests", "p95_duration_ms", "errors", "cancelled"}


class ReportFmt(StrEnum):
    table = "table"
    csv = "csv"
    json = "json"
    xlsx = "xlsx"


def register(app: typer.Typer) -> None:
    app.command("report")(report)


def report(
    by: Annotated[
        list[str],
        typer.Option(
            "--by",
            help="Group by department, project, user, key_id, model, status, currency, day, week (from Monday), "
            "month or hour (of day, 0-23); repeat or comma-separate.",
        ),
    ] = ["project"],  # noqa: B006
    since: Annotated[str | None, typer.Option(help="From this date/time (YYYY-MM-DD[THH:MM]), inclusive.")] = None,
    until: Annotated[str | None, typer.Option(help="Up to this date/time, exclusive.")] = None,
    status: Annotated[
        str | None, typer.Option(help="Only records with this status (ok, error, cancelled, rejected).")
    ] = None,
    filters: Annotated[
        list[str] | None,
        typer.Option(
            "--filter",
            help="Only records where DIMENSION=VALUE (repeat; the same dimension twice allows either value; "
            "DIMENSION= is a missing value).",
        ),
    ] = None,
    sort: Annotated[
        str | None, typer.Option(help="Order groups by this figure, largest first (e.g. cost_micros, total_tokens).")
    ] = None,
    totals: Annotated[
        bool | None,
        typer.Option(
            "--totals/--no-totals",
            help="Add sub-totals (by the first dimension) and a grand total, each row marked in a `row` column "
            "(default: in table and xlsx).",
        ),
    ] = None,
    tz: Annotated[
        str, typer.Option(help="Time zone for dates and day/week/month/hour buckets (e.g. Asia/Shanghai).")
    ] = "UTC",
    fmt: Annotated[ReportFmt, typer.Option("--format", help="table, csv, json or xlsx.")] = ReportFmt.table,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write to this file instead of standard output.")
    ] = None,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Requests, tokens, cost, latency (average and p95), errors and cancellations grouped by any
    dimension, from the hourly rollups (raw records only where a range cuts an hour)."""
    from tokenabacus.billing.reports import build_query, parse_filters, run_report

    dims = tuple(d.strip() for item in by for d in item.split(",") if d.strip())
    try:
        q = build_query(dims, since, until, tz, status, parse_filters(filters or []), sort)
    except ValueError as e:
        fail(str(e))
    if fmt == ReportFmt.xlsx and output is None and sys.stdout.isatty():
        fail("an xlsx workbook is binary: give --output FILE or redirect standard output")
    store = open_store(config, data_dir, create=False)
    try:
        rep = run_report(store, q)
    finally:
        store.close()
    if not rep.from_rollups:
        typer.echo(
            "note: this ledger has records from before hourly rollups existed, so the report read raw records; "
            "`tokenabacus db rollup --rebuild` makes reports fast",
            err=True,
        )
    with_totals = totals if totals is not None else fmt in (ReportFmt.table, ReportFmt.xlsx)
    rows = rep.flat(with_totals)
    cols = (["row"] if with_totals else []) + rep.columns
    title = f"Usage by {', '.join(dims) or 'everything'}" + (f" since {since}" if since else "")
    title += (f" until {until}" if until else "") + (f" ({tz})" if tz.upper() != "UTC" else "")
    try:
        _write(rep, rows, cols, fmt, title, output)
    except OSError as e:
        fail(f"cannot write {output}: {e.strerror or e}")


def _write(rep: Report, rows: list[dict], cols: list[str], fmt: ReportFmt, title: str, output: Path | None) -> None:
    if fmt == ReportFmt.xlsx:
        data = _xlsx(rows, cols, title)
        if output is None:
            sys.stdout.buffer.write(data)
        else:
            output.write_bytes(data)
        return
    with contextlib.ExitStack() as stack:
        if output is not None:
            stack.enter_context(contextlib.redirect_stdout(stack.enter_context(open(output, "w", encoding="utf-8"))))
        if fmt == ReportFmt.table:
            _table(rows, cols, title)
        else:
            emit(rows, cols, Fmt(fmt.value))


def _cell(row: dict, col: str) -> str:
    v = row.get(col)
    if v is None:
        return ""
    return f"{v:,}" if col in _NUMBERS and isinstance(v, int | float) else str(v)


def _table(rows: list[dict], cols: list[str], title: str) -> None:
    from rich.cells import cell_len
    from rich.console import Console
    from rich.table import Table

    cells = [[_cell(r, c) for c in cols] for r in rows]
    # A terminal gets Rich's fitting; piped or redirected output keeps every cell whole.
    widths = [max([cell_len(c)] + [cell_len(row[i]) for row in cells]) for i, c in enumerate(cols)]
    console = Console() if sys.stdout.isatty() else Console(width=sum(widths) + 3 * len(cols) + 1)
    if not rows or all(r.get("row") == "total" and not r["requests"] for r in rows):
        console.print("[dim]no records[/dim]")
        return
    table = Table(title=title)
    for c in cols:
        table.add_column(c, justify="right" if c in _NUMBERS else "left")
    for r, row in zip(rows, cells, strict=True):
        kind = r.get("row")
        if kind == "total":
            table.add_section()
        table.add_row(*row, style="bold" if kind in ("subtotal", "total") else None)
    console.print(table)


def _xlsx(rows: list[dict], cols: list[str], title: str) -> bytes:
    """One sheet: a header, the rows (numbers as numbers), sub-totals and the total in bold."""
    import io

    from openpyxl import Workbook
    from openpyxl.styles import Font

    wb = Workbook()
    ws = wb.active
    assert ws is not None
    ws.title = "report"
    ws.append(cols)
    bold = Font(bold=True)
    for cell in ws[1]:
        cell.font = bold
    for r in rows:
        ws.append([r.get(c) for c in cols])
        if r.get("row") in ("subtotal", "total"):
            for cell in ws[ws.max_row]:
                cell.font = bold
    ws.freeze_panes = "A2"
    wb.properties.title = title
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()
