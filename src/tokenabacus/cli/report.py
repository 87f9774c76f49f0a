"""`tokenabacus report`: usage grouped by any dimension, and the named reports finance and the
platform team ask for (top, peaks, models, suspicious, drift, chargeback), as a table, CSV, JSON
or an Excel workbook. Every figure comes from billing/ (the same code as /admin/reports); each
named report's command is generated from its entry in billing/catalog.py."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from tokenabacus.billing.arguments import as_option, message
from tokenabacus.billing.catalog import REPORTS, NamedReport, Source
from tokenabacus.cli.common import ConfigOpt, DataDirOpt, cli_actor, open_store, settings_for
from tokenabacus.cli.output import fail
from tokenabacus.cli.report_output import ReportFmt, check_output, note, write, write_answer

if TYPE_CHECKING:
    from tokenabacus.billing.windows import Window

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
WideOpt = Annotated[bool, typer.Option("--wide", help="Every table column, however wide the terminal.")]
SinceOpt = Annotated[str | None, typer.Option(help="From this date/time (YYYY-MM-DD[THH:MM]), inclusive.")]
UntilOpt = Annotated[str | None, typer.Option(help="Up to this date/time, exclusive (default: now).")]
TodayOpt = Annotated[bool, typer.Option("--today", help="Today (yesterday with --previous).")]
WeekOpt = Annotated[bool, typer.Option("--week", help="This week, from Monday (last week with --previous).")]
MonthOpt = Annotated[bool, typer.Option("--month", help="This month (last month with --previous).")]
PreviousOpt = Annotated[bool, typer.Option("--previous", help="The period before: yesterday, last week or month.")]
TheMonthOpt = Annotated[str | None, typer.Option(help="The month, YYYY-MM (default: last month).")]


def register(app: typer.Typer) -> None:
    group = typer.Typer(
        help="Usage grouped by any dimension (`report --by ...`), and named reports for finance and operations.",
        invoke_without_command=True,
    )
    group.callback(invoke_without_command=True)(report)
    for entry in REPORTS:
        group.command(entry.name)(command_for(entry))
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
    tz: TzOpt = None,
    fmt: FmtOpt = ReportFmt.table,
    output: OutputOpt = None,
    wide: WideOpt = False,
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
    s = settings_for(config, data_dir)
    tz = tz or s.governance.timezone  # days are cut where the operator's named reports cut them
    try:
        q = build_query(dims, since, until, tz, status, parse_filters(filters or []), sort)
    except ValueError as e:
        fail(str(e))
    check_output(fmt, output)
    store = open_store(config, data_dir, s, create=False)
    try:
        rep = run_report(store, q)
    finally:
        store.close()
    if not rep.from_rollups:
        note(
            "this ledger has records from before hourly rollups existed, so the report read raw records; "
            "`tokenabacus db rollup --rebuild` makes reports fast"
        )
    with_totals = totals if totals is not None else fmt in (ReportFmt.table, ReportFmt.xlsx)
    rows = rep.flat(with_totals)
    cols = (["row"] if with_totals else []) + rep.columns
    if fmt == ReportFmt.table and "cost_micros" in cols:  # a person reads the amount, not micros
        cols = [c for c in cols if c != "currency"]
        cols[cols.index("cost_micros")] = "cost"
    title = f"Usage by {', '.join(dims) or 'everything'}" + (f" since {since}" if since else "")
    title += (f" until {until}" if until else "") + (f" ({tz})" if tz.upper() != "UTC" else "")
    write(rows, cols, fmt, title, output, wide)


# Named reports: one command per catalog entry --------------------------------------------------
def _option(name: str, annotation: Any, default: Any) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=default)


def _formats(entry: NamedReport) -> type[StrEnum]:
    """The --format choices the entry allows, as the enum Typer lists."""
    if entry.formats == tuple(ReportFmt):
        return ReportFmt
    return StrEnum("ReportFmt", {f: f for f in entry.formats})  # type: ignore[return-value]


def _options(entry: NamedReport) -> list[inspect.Parameter]:
    """The command's options, in --help's order: the report's own, its window, then the shared."""
    own = [
        _option(p.name, Annotated[p.type, typer.Option(as_option(p.name), help=p.help, min=p.ge, max=p.le)], p.default)
        for p in entry.params
    ]
    if entry.period:
        span = [
            _option("today", TodayOpt, False),
            _option("week", WeekOpt, False),
            _option("month", MonthOpt, False),
            _option("previous", PreviousOpt, False),
            _option("since", SinceOpt, None),
            _option("until", UntilOpt, None),
        ]
    else:
        span = [_option("month", TheMonthOpt, None)]
    fmts = _formats(entry)
    *first, last = entry.formats
    formats = f"{', '.join(first)} or {last}." if first else f"{last}."
    shared = [
        _option("filters", FilterOpt, None),
        _option("tz", TzOpt, None),
        _option("fmt", Annotated[fmts, typer.Option("--format", help=formats)], fmts(entry.formats[0])),
        _option("output", OutputOpt, None),
        *([_option("wide", WideOpt, False)] if "table" in entry.formats else []),
        _option("config", ConfigOpt, None),
        _option("data_dir", DataDirOpt, None),
    ]
    return own + span + shared


def command_for(entry: NamedReport) -> Callable[..., None]:
    """The `report NAME` command of a catalog entry."""

    def command(**given: Any) -> None:
        _run(entry, given)

    command.__name__ = entry.name
    command.__doc__ = entry.help
    command.__signature__ = inspect.Signature(_options(entry))  # type: ignore[attr-defined]
    return command


def _run(entry: NamedReport, given: dict[str, Any]) -> None:
    """What every named report does: check the arguments, read the ledger once, print or export."""
    from tokenabacus.billing.estimate import price_book
    from tokenabacus.calendar import zone_named
    from tokenabacus.ledger.admin_events import CHARGEBACK_EXPORTED

    own = {p.name: given[p.name] for p in entry.params}
    pick = _window(given, entry.period)
    config, data_dir, output, fmt = given["config"], given["data_dir"], given["output"], given["fmt"]
    s = settings_for(config, data_dir)
    zone = given["tz"] or s.governance.timezone
    try:
        zone_named(zone)
        wanted = _filters(given["filters"])
        win = pick(zone)
        if entry.check is not None:
            entry.check(own)
    except ValueError as e:
        fail(message(e, as_option))
    check_output(fmt, output)
    store = open_store(config, data_dir, settings=s, create=False)
    try:
        answer = entry.run(Source(store, lambda: price_book(s, store).all_versions()), win, wanted, own)
        if entry.name == "chargeback" and fmt != "table":  # finance holds a copy: later corrections say so
            month = datetime.fromtimestamp(win.since_ms / 1000, zone_named(zone)).strftime("%Y-%m")
            store.events.append(cli_actor(), CHARGEBACK_EXPORTED, month, {"format": str(fmt)})
    except ValueError as e:
        fail(message(e, as_option))
    finally:
        store.close()
    write_answer(answer, fmt, output, given.get("wide", False))


def _filters(items: list[str] | None) -> dict[str, tuple[str, ...]]:
    """``--filter DIM=VALUE`` options as filters; ValueError names a bad dimension."""
    from tokenabacus.billing.reports import DIMENSIONS, parse_filters

    wanted = parse_filters(items or [])
    for dim in wanted:
        if dim not in DIMENSIONS:
            raise ValueError(f"cannot filter by {dim!r}; choose from {', '.join(DIMENSIONS)}")
    return wanted


def _window(given: dict[str, Any], default: str | None) -> Callable[[str], Window]:
    """The window the options name, in a time zone: the period flags or since/until (``default``
    when none), or for a monthly report ``--month`` (default: last month). The flags are checked
    here, before the zone is known."""
    from tokenabacus.billing.windows import month_window, window

    if default is None:
        return lambda zone: month_window(zone, given["month"])
    flags = [p for p in ("today", "week", "month") if given[p]]
    if len(flags) > 1:
        fail("give one of --today, --week and --month")
    since, until, previous = given["since"], given["until"], given["previous"]
    if previous and since:
        fail("--previous goes with --today, --week or --month, not --since")
    period = None if since else (flags[0] if flags else default)
    return lambda zone: window(zone, period, previous=previous, since=since, until=until)
