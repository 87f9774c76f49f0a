"""`tokenabacus report`: usage grouped by any dimension, and the named reports finance and the
platform team ask for (top, peaks, models, suspicious, drift, chargeback), as a table, CSV, JSON
or an Excel workbook. Every figure comes from billing/ (the same code as /admin/reports)."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import orjson
import typer

from tokenabacus.billing.cells import visible
from tokenabacus.cli.common import ConfigOpt, DataDirOpt, open_store, settings_for
from tokenabacus.cli.output import fail

if TYPE_CHECKING:
    from tokenabacus.billing.named import Table, Window
    from tokenabacus.ledger.store import Store


class ReportFmt(StrEnum):
    table = "table"
    csv = "csv"
    json = "json"
    xlsx = "xlsx"


FmtOpt = Annotated[ReportFmt, typer.Option("--format", help="table, csv, json or xlsx.")]
OutputOpt = Annotated[
    Path | None, typer.Option("--output", "-o", help="Write to this file instead of standard output.")
]
FilterOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--filter",
        help="Only records where DIMENSION=VALUE (repeat; the same dimension twice allows either value; "
        "DIMENSION= is a missing value).",
    ),
]
TzOpt = Annotated[
    str | None,
    typer.Option(help="Time zone for dates, days and hours (default: governance.timezone, e.g. Asia/Shanghai)."),
]
SinceOpt = Annotated[str | None, typer.Option(help="From this date/time (YYYY-MM-DD[THH:MM]), inclusive.")]
UntilOpt = Annotated[str | None, typer.Option(help="Up to this date/time, exclusive (default: now).")]
TodayOpt = Annotated[bool, typer.Option("--today", help="Today (yesterday with --previous).")]
WeekOpt = Annotated[bool, typer.Option("--week", help="This week, from Monday (last week with --previous).")]
MonthOpt = Annotated[bool, typer.Option("--month", help="This month (last month with --previous).")]
PreviousOpt = Annotated[bool, typer.Option("--previous", help="The period before: yesterday, last week or month.")]


def register(app: typer.Typer) -> None:
    group = typer.Typer(
        help="Usage grouped by any dimension (`report --by ...`), and named reports for finance and operations.",
        invoke_without_command=True,
    )
    group.callback(invoke_without_command=True)(report)
    group.command("top")(top)
    group.command("peaks")(peaks)
    group.command("models")(models)
    group.command("suspicious")(suspicious)
    group.command("drift")(drift)
    group.command("chargeback")(chargeback)
    app.add_typer(group, name="report")


def report(
    ctx: typer.Context,
    by: Annotated[
        list[str],
        typer.Option(
            "--by",
            help="Group by department, project, user, key_id, model, status, currency, price_version, day, "
            "week (from Monday), month or hour (of day, 0-23); repeat or comma-separate.",
        ),
    ] = ["project"],  # noqa: B006
    since: SinceOpt = None,
    until: Annotated[str | None, typer.Option(help="Up to this date/time, exclusive.")] = None,
    status: Annotated[
        str | None, typer.Option(help="Only records with this status (ok, error, cancelled, rejected).")
    ] = None,
    filters: FilterOpt = None,
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
    fmt: FmtOpt = ReportFmt.table,
    output: OutputOpt = None,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Requests, tokens, cost, latency (average and p95), errors and cancellations grouped by any
    dimension, from the hourly rollups (raw records only where a range cuts an hour). Named
    reports: top, peaks, models, suspicious, drift, chargeback (`report NAME --help`)."""
    if ctx.invoked_subcommand is not None:
        return
    from tokenabacus.billing.reports import build_query, parse_filters, run_report

    dims = tuple(d.strip() for item in by for d in item.split(",") if d.strip())
    try:
        q = build_query(dims, since, until, tz, status, parse_filters(filters or []), sort)
    except ValueError as e:
        fail(str(e))
    _check_output(fmt, output)
    store = open_store(config, data_dir, create=False)
    try:
        rep = run_report(store, q)
    finally:
        store.close()
    if not rep.from_rollups:
        _note(
            "this ledger has records from before hourly rollups existed, so the report read raw records; "
            "`tokenabacus db rollup --rebuild` makes reports fast"
        )
    with_totals = totals if totals is not None else fmt in (ReportFmt.table, ReportFmt.xlsx)
    rows = rep.flat(with_totals)
    cols = (["row"] if with_totals else []) + rep.columns
    title = f"Usage by {', '.join(dims) or 'everything'}" + (f" since {since}" if since else "")
    title += (f" until {until}" if until else "") + (f" ({tz})" if tz.upper() != "UTC" else "")
    _write(rows, cols, fmt, title, output)


# Named reports ---------------------------------------------------------------------------------
def _run(
    config: str | None,
    data_dir: str | None,
    tz: str | None,
    fmt: ReportFmt,
    output: Path | None,
    filters: list[str] | None,
    pick: Callable[[str], Window],
    make: Callable[[Store, Window, dict[str, tuple[str, ...]]], Table],
) -> None:
    """What every named report does: check the arguments, read the ledger once, print or export."""
    from tokenabacus.calendar import zone_named

    s = settings_for(config, data_dir)
    zone = tz or s.governance.timezone
    try:
        zone_named(zone)
        wanted = _filters(filters)
        win = pick(zone)
    except ValueError as e:
        fail(str(e))
    _check_output(fmt, output)
    store = open_store(config, data_dir, settings=s, create=False)
    try:
        table = make(store, win, wanted)
    except ValueError as e:
        fail(str(e))
    finally:
        store.close()
    for n in table.notes:
        _note(n)
    _write(
        table.rows, (["row"] if any("row" in r for r in table.rows) else []) + table.columns, fmt, table.title, output
    )


def _filters(items: list[str] | None) -> dict[str, tuple[str, ...]]:
    """``--filter DIM=VALUE`` options as filters; ValueError names a bad dimension."""
    from tokenabacus.billing.reports import DIMENSIONS, parse_filters

    wanted = parse_filters(items or [])
    for dim in wanted:
        if dim not in DIMENSIONS:
            raise ValueError(f"cannot filter by {dim!r}; choose from {', '.join(DIMENSIONS)}")
    return wanted


def _period(
    today: bool, week: bool, month: bool, previous: bool, since: str | None, until: str | None, default: str
) -> Callable[[str], Window]:
    from tokenabacus.billing.named import window

    flags = [p for p, on in (("today", today), ("week", week), ("month", month)) if on]
    if len(flags) > 1:
        fail("give one of --today, --week and --month")
    if previous and since:
        fail("--previous goes with --today, --week or --month, not --since")

    def pick(tz: str) -> Window:
        if since:
            return window(tz, since=since, until=until)
        if until:
            raise ValueError("--until needs --since")
        return window(tz, flags[0] if flags else default, previous=previous)

    return pick


def top(
    by: Annotated[str, typer.Option(help="Rank department, project, user, key_id or model.")] = "department",
    rank: Annotated[str, typer.Option(help="Order by tokens or cost (both ranks are shown).")] = "tokens",
    limit: Annotated[int | None, typer.Option(min=1, help="Only the first N.")] = None,
    currency: Annotated[
        str | None, typer.Option(help="Costs in this currency (default: the one most requests were charged in).")
    ] = None,
    today: TodayOpt = False,
    week: WeekOpt = False,
    month: MonthOpt = False,
    previous: PreviousOpt = False,
    since: SinceOpt = None,
    until: UntilOpt = None,
    filters: FilterOpt = None,
    tz: TzOpt = None,
    fmt: FmtOpt = ReportFmt.table,
    output: OutputOpt = None,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """This period's ranking (default: this week) by tokens and by cost, with each one's share
    and its change against the period before."""
    from tokenabacus.billing import named

    pick = _period(today, week, month, previous, since, until, "week")
    _run(
        config,
        data_dir,
        tz,
        fmt,
        output,
        filters,
        pick,
        lambda st, w, f: named.top(st, by, w, f, rank, limit, currency),
    )


def peaks(
    metric: Annotated[str, typer.Option(help="The busiest hour by tokens or requests.")] = "tokens",
    today: TodayOpt = False,
    week: WeekOpt = False,
    month: MonthOpt = False,
    previous: PreviousOpt = False,
    since: SinceOpt = None,
    until: UntilOpt = None,
    filters: FilterOpt = None,
    tz: TzOpt = None,
    fmt: FmtOpt = ReportFmt.table,
    output: OutputOpt = None,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Each day's peak hour (local time) and its share of the day (default: this week)."""
    from tokenabacus.billing import named

    pick = _period(today, week, month, previous, since, until, "week")
    _run(config, data_dir, tz, fmt, output, filters, pick, lambda st, w, f: named.peaks(st, w, f, metric))


def models(
    today: TodayOpt = False,
    week: WeekOpt = False,
    month: MonthOpt = False,
    previous: PreviousOpt = False,
    since: SinceOpt = None,
    until: UntilOpt = None,
    filters: FilterOpt = None,
    tz: TzOpt = None,
    fmt: FmtOpt = ReportFmt.table,
    output: OutputOpt = None,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Cost per model, per 1k tokens and per request, with latency (default: this month)."""
    from tokenabacus.billing import named

    pick = _period(today, week, month, previous, since, until, "month")
    _run(config, data_dir, tz, fmt, output, filters, pick, named.models)


def suspicious(
    by: Annotated[str, typer.Option(help="Judge each key_id, user, project, department or client_ip.")] = "key_id",
    factor: Annotated[float, typer.Option(help="Flag a peak minute this many times the usual rate.")] = 5.0,
    min_requests: Annotated[
        int, typer.Option("--min-requests", min=1, help="...and at least this many requests in that minute.")
    ] = 30,
    min_tokens: Annotated[
        int, typer.Option("--min-tokens", min=1, help="...or at least this many tokens in that minute.")
    ] = 50_000,
    baseline_days: Annotated[int, typer.Option(min=1, max=90, help="Days of history the usual rate is from.")] = 7,
    today: TodayOpt = False,
    week: WeekOpt = False,
    month: MonthOpt = False,
    previous: PreviousOpt = False,
    since: SinceOpt = None,
    until: UntilOpt = None,
    filters: FilterOpt = None,
    tz: TzOpt = None,
    fmt: FmtOpt = ReportFmt.table,
    output: OutputOpt = None,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Callers whose busiest minute was far above their own usual rate (default: today), in
    requests or in tokens per minute."""
    from tokenabacus.billing import named

    pick = _period(today, week, month, previous, since, until, "today")
    _run(
        config,
        data_dir,
        tz,
        fmt,
        output,
        filters,
        pick,
        lambda st, w, f: named.suspicious(st, w, by, f, factor, min_requests, min_tokens, baseline_days),
    )


def drift(
    differences: Annotated[
        bool, typer.Option("--differences-only", help="Only the days where some record disagreed.")
    ] = False,
    today: TodayOpt = False,
    week: WeekOpt = False,
    month: MonthOpt = False,
    previous: PreviousOpt = False,
    since: SinceOpt = None,
    until: UntilOpt = None,
    filters: FilterOpt = None,
    tz: TzOpt = None,
    fmt: FmtOpt = ReportFmt.table,
    output: OutputOpt = None,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Our token count against the upstream's, per model and day (default: this month)."""
    from tokenabacus.billing import named

    pick = _period(today, week, month, previous, since, until, "month")
    _run(config, data_dir, tz, fmt, output, filters, pick, lambda st, w, f: named.drift(st, w, f, differences))


def chargeback(
    month: Annotated[str | None, typer.Option(help="The month, YYYY-MM (default: last month).")] = None,
    filters: FilterOpt = None,
    tz: TzOpt = None,
    fmt: FmtOpt = ReportFmt.table,
    output: OutputOpt = None,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """The month's chargeback per department: cost by project, user and model with sub-totals,
    the month's adjustments, the price versions that charged it and the hardware apportioned. As
    xlsx: a summary sheet, a sheet per department, price versions, adjustments, hardware."""
    from tokenabacus.billing import chargeback as cb
    from tokenabacus.billing.estimate import price_book
    from tokenabacus.billing.named import window

    s = settings_for(config, data_dir)
    zone = tz or s.governance.timezone
    try:
        wanted = _filters(filters)
        the_month = month or window(zone, "month", previous=True).label
        window(zone, month=the_month)
    except ValueError as e:
        fail(str(e))
    _check_output(fmt, output)
    store = open_store(config, data_dir, settings=s, create=False)
    try:
        book = price_book(s, store)
        result = cb.chargeback(store, the_month, zone, book.all_versions(), wanted)
    finally:
        store.close()
    for n in result.notes:
        _note(n)
    if fmt == ReportFmt.xlsx:
        _write_bytes(cb.workbook(result), output)
    elif fmt == ReportFmt.json:
        _write_text(orjson.dumps(result.as_json(), option=orjson.OPT_INDENT_2).decode() + "\n", output)
    else:
        _write(result.flat(), cb.COLUMNS, fmt, f"Chargeback {the_month} ({zone})", output)


# Output ----------------------------------------------------------------------------------------
def _note(text: str) -> None:
    typer.echo(f"note: {visible(text)}", err=True)


def _check_output(fmt: ReportFmt, output: Path | None) -> None:
    if fmt == ReportFmt.xlsx and output is None and sys.stdout.isatty():
        fail("an xlsx workbook is binary: give --output FILE or redirect standard output")


def _write_bytes(data: bytes, output: Path | None) -> None:
    try:
        if output is None:
            sys.stdout.buffer.write(data)
        else:
            output.write_bytes(data)
    except OSError as e:
        fail(f"cannot write {output}: {e.strerror or e}")


def _write_text(text: str, output: Path | None) -> None:
    _write_bytes(text.encode("utf-8"), output)


def _write(rows: list[dict], cols: list[str], fmt: ReportFmt, title: str, output: Path | None) -> None:
    from tokenabacus.billing.exports import Sheet, csv_text, xlsx_bytes

    if fmt == ReportFmt.xlsx:
        _write_bytes(xlsx_bytes([Sheet("report", cols, rows)], title), output)
    elif fmt == ReportFmt.csv:
        _write_text(csv_text(rows, cols), output)
    elif fmt == ReportFmt.json:
        _write_text(_json([{c: r.get(c) for c in cols} for r in rows]), output)
    else:
        with contextlib.ExitStack() as stack:
            if output is not None:
                try:
                    fh = stack.enter_context(open(output, "w", encoding="utf-8"))
                except OSError as e:
                    fail(f"cannot write {output}: {e.strerror or e}")
                stack.enter_context(contextlib.redirect_stdout(fh))
            _table(rows, cols, title)


def _json(out: Any) -> str:
    import json

    try:
        return orjson.dumps(out, option=orjson.OPT_INDENT_2).decode() + "\n"
    except TypeError:  # a sum past 64 bits (a ledger with absurd figures): orjson stops there
        return json.dumps(out, indent=2, ensure_ascii=False) + "\n"


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _table(rows: list[dict], cols: list[str], title: str) -> None:
    from rich.cells import cell_len
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    numeric = {c for c in cols if any(_is_number(r.get(c)) for r in rows)}

    def cell(r: dict, c: str) -> str:
        v = r.get(c)
        if v is None:
            return ""
        return f"{v:,}" if c in numeric and _is_number(v) and c != "hour" else visible(str(v))

    cells = [[cell(r, c) for c in cols] for r in rows]
    # A terminal gets Rich's fitting; piped or redirected output keeps every cell whole.
    widths = [max([cell_len(c)] + [cell_len(row[i]) for row in cells]) for i, c in enumerate(cols)]
    console = Console() if sys.stdout.isatty() else Console(width=sum(widths) + 3 * len(cols) + 1)
    if not rows or all(r.get("row") in ("total", "grand total") and not r.get("requests") for r in rows):
        console.print("[dim]no records[/dim]")
        return
    table = Table(title=Text(visible(title)))
    for c in cols:
        table.add_column(c, justify="right" if c in numeric else "left")
    for r, row in zip(rows, cells, strict=True):
        kind = r.get("row")
        if kind in ("total", "grand total") and table.rows:
            table.add_section()
        # Text, never Rich markup: "[/x]" in a model name is a name, not a closing tag.
        table.add_row(*map(Text, row), style="bold" if kind in ("subtotal", "total", "grand total") else None)
    console.print(table)
