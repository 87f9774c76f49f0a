"""`tokenabacus forecast`, `estimate` and `reconcile`: money ahead and money billed.

forecast: next month's or quarter's tokens and cost per project or department, with an interval
(billing/forecast.py). estimate: a workload's tokens and cost at the prices in force now, charged
as the gateway charges (billing/estimate.py). reconcile: a provider's CSV bill against the ledger
(billing/bill.py). Money is integer micro-units in JSON and CSV, formatted in tables.
"""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import orjson
import typer

from tokenabacus.cli.common import ConfigOpt, DataDirOpt, open_store, safe_url, settings_for
from tokenabacus.cli.output import Fmt, emit, fail

if TYPE_CHECKING:
    from datetime import tzinfo

    from tokenabacus.config import Settings

FmtOpt = Annotated[Fmt, typer.Option("--format", help="table, json or csv.")]
TzOpt = Annotated[str | None, typer.Option("--tz", help="Time zone that cuts the days (default governance.timezone).")]

ESTIMATE_COLS = [
    "model",
    "price_version",
    "days",
    "requests",
    "prompt_tokens",
    "cached_tokens",
    "completion_tokens",
    "total_tokens",
]
BILL_COLS = ["line", "date", "model", "bill_tokens", "ledger_tokens", "tokens_diff"]
BILL_MONEY = ["bill_amount_micros", "ledger_cost_micros", "amount_diff_micros"]


def register(app: typer.Typer) -> None:
    app.command("forecast")(forecast)
    app.command("estimate")(estimate)
    app.command("reconcile")(reconcile)


def _zone(s: Settings, tz: str | None) -> tzinfo:
    from tokenabacus.calendar import zone_named

    try:
        return zone_named(tz or s.governance.timezone)
    except ValueError as e:
        fail(str(e))


def _n(v: int | None, signed: bool = False) -> str | None:
    """A count as a table shows it: thousands separators, a + on a positive difference."""
    if v is None:
        return None
    return f"{v:+,}" if signed and v else f"{v:,}"


def _money(micros: int | None, currency: str | None, signed: bool = False) -> str | None:
    from tokenabacus.money import format_money

    text = format_money(micros, currency)
    return f"+{text}" if signed and text is not None and micros and micros > 0 else text


# forecast -----------------------------------------------------------------------------------------
def forecast(
    by: Annotated[str, typer.Option("--by", help="project or department.")] = "project",
    horizon: Annotated[
        str,
        typer.Option(
            "--horizon",
            help="30d, 90d (N days from today), month (next), quarter (next) or month-end (this month: "
            "its complete days as recorded, plus the forecast of the rest).",
        ),
    ] = "month",
    project: Annotated[str | None, typer.Option("--project", help="Only this project.")] = None,
    department: Annotated[str | None, typer.Option("--department", help="Only this department.")] = None,
    as_of: Annotated[
        str | None, typer.Option("--as-of", help="Forecast as on this day (history before it; default today).")
    ] = None,
    tz: TzOpt = None,
    fmt: FmtOpt = Fmt.table,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Forecast tokens and cost per project or department over the next month, quarter or N days,
    from the daily history (trend and weekly pattern), with an 80% interval."""
    from tokenabacus.billing import forecast as fc
    from tokenabacus.billing.estimate import price_book

    s = settings_for(config, data_dir)
    zone = _zone(s, tz)
    filters = {k: v for k, v in (("project", project), ("department", department)) if v is not None}
    try:
        today = fc.parse_day(as_of, "--as-of") if as_of else None
        if by not in fc.GROUPS:
            raise ValueError(f"--by {by!r}: forecast by project or department")
        fc.parse_horizon(horizon, today or datetime.now(zone).date())  # a bad horizon fails before the ledger opens
    except ValueError as e:
        fail(str(e))
    store = open_store(config, data_dir, s, create=False)
    # Fits kept on disk beside the ledger: the next run of the day answers without fitting (a
    # new process each time, so a memory cache alone would not help the CLI).
    cache = s.data_path / "cache" / "forecast" if s.data_path.is_dir() else None
    try:
        hz, rows = fc.forecast(store.db, by, horizon, zone, today, filters, book=price_book(s, store), cache_dir=cache)
    except ValueError as e:
        fail(str(e))
    if fmt != Fmt.table:
        emit(rows, fc.columns(by, horizon), fmt)
        return
    shown = [
        {
            **r,
            **{k: _n(r[k]) for k in ("tokens", "tokens_low", "tokens_high")},
            "cost": _money(r["cost_micros"], r["currency"]),
            "cost_low": _money(r["cost_low_micros"], r["currency"]),
            "cost_high": _money(r["cost_high_micros"], r["currency"]),
            **{k: _n(r[k]) for k in ("so_far_tokens", "month_tokens") if k in r},
            **{
                k.removesuffix("_micros"): _money(r[k], r["currency"])
                for k in ("so_far_cost_micros", "month_cost_micros")
                if k in r
            },
        }
        for r in rows
    ]
    cols = [by, "history_days", "tokens", "tokens_low", "tokens_high", "cost", "cost_low", "cost_high", "note"]
    if hz.actual_from is not None:  # month-end: the month so far, and so far plus the forecast
        cols[2:2] = ["so_far_tokens", "month_tokens"]
        cols[-1:-1] = ["so_far_cost", "month_cost"]
    title = (
        f"Forecast by {by} for {hz.label} ({hz.first} to {hz.last}, {hz.days} days), "
        f"{fc.LEVEL:.0%} interval, days in {tz or s.governance.timezone}"
    )
    emit(shown, cols, fmt, title=title)


# estimate -----------------------------------------------------------------------------------------
def estimate(
    model: Annotated[str, typer.Option("--model", help="The model's public name.")],
    requests_per_day: Annotated[int, typer.Option("--requests-per-day", help="Requests a day.")],
    prompt_tokens: Annotated[int, typer.Option("--prompt-tokens", help="Prompt tokens per request.")],
    completion_tokens: Annotated[int, typer.Option("--completion-tokens", help="Completion tokens per request.")],
    cached_tokens: Annotated[
        int, typer.Option("--cached-tokens", help="Of the prompt tokens, those served from cache.")
    ] = 0,
    days: Annotated[int, typer.Option("--days", help="Days to plan for.")] = 30,
    fmt: FmtOpt = Fmt.table,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Tokens and cost of a workload at the price in force now, as the gateway would charge it."""
    from tokenabacus.billing.estimate import NoPrice, price_book
    from tokenabacus.billing.estimate import estimate as plan
    from tokenabacus.calendar import now_ms
    from tokenabacus.ledger.database import LedgerMissing
    from tokenabacus.ledger.store import Store

    s = settings_for(config, data_dir)
    try:
        store: Store | None = Store(s.ledger_url, create=False)
    except LedgerMissing:
        store = None  # nothing recorded yet: the config file's prices are the whole book
    except Exception as e:
        first_line = str(e).splitlines()[0] if str(e) else ""
        fail(f"cannot open the ledger at {safe_url(s.ledger_url)}: {type(e).__name__}: {first_line}")
    try:
        row = plan(
            price_book(s, store),
            model,
            requests_per_day,
            prompt_tokens,
            completion_tokens,
            cached_tokens,
            days,
            now_ms(),
        )
    except (NoPrice, ValueError) as e:
        fail(str(e))
    money = ["cost_per_request_micros", "cost_per_day_micros", "cost_micros", "currency"]
    if fmt != Fmt.table:
        prices = ["input_per_mtok_micros", "cached_per_mtok_micros", "output_per_mtok_micros"]
        emit([row], [*ESTIMATE_COLS, "requests_per_day", *money, *prices, "note"], fmt)
        return
    cur = row["currency"]
    shown = {
        **row,
        "cached_tokens": _n(row["cached_tokens"]),
        "cost_per_request": _money(row["cost_per_request_micros"], cur),
        "cost_per_day": _money(row["cost_per_day_micros"], cur),
        "cost": _money(row["cost_micros"], cur),
    }
    cols = [*ESTIMATE_COLS, "cost_per_request", "cost_per_day", "cost"] + (["note"] if row["note"] else [])
    emit([shown], cols, fmt, title=f"{requests_per_day:,} requests a day for {days} days")


# reconcile ----------------------------------------------------------------------------------------
def reconcile(
    bill: Annotated[str, typer.Option("--bill", help="The provider's CSV bill (- for standard input).")],
    tolerance: Annotated[
        str, typer.Option("--tolerance", help="Relative difference still a match, in percent.")
    ] = "0.5%",
    currency: Annotated[
        str | None, typer.Option("--currency", help="The bill's currency when it has no currency column.")
    ] = None,
    since: Annotated[str | None, typer.Option("--since", help="First day compared (default the bill's first).")] = None,
    until: Annotated[str | None, typer.Option("--until", help="Last day compared (default the bill's last).")] = None,
    tz: TzOpt = None,
    fmt: FmtOpt = Fmt.table,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Compare a provider's bill (CSV: date,model,tokens,amount[,currency]) with the ledger, per day
    and model: tokens, cost, their differences and a verdict, and the totals."""
    from tokenabacus.billing import bill as b
    from tokenabacus.billing.forecast import parse_day
    from tokenabacus.money import check_currency

    s = settings_for(config, data_dir)
    zone = _zone(s, tz)
    try:
        tol = b.parse_tolerance(tolerance)
        cur = check_currency(currency) if currency else None
        first = parse_day(since, "--since") if since else None
        last = parse_day(until, "--until") if until else None
    except ValueError as e:
        fail(str(e))
    try:
        data = sys.stdin.buffer.read() if bill == "-" else Path(bill).read_bytes()
    except OSError as e:
        fail(f"cannot read the bill {bill}: {e.strerror or e}")
    try:
        lines = b.parse_bill(b.decode(data))
    except b.BillError as e:
        fail(f"{bill}: {e}")
    store = open_store(config, data_dir, s, create=False)
    try:
        rows, summary = b.reconcile(store.db, lines, zone, tol, cur, first, last)
    except ValueError as e:
        fail(str(e))
    if fmt == Fmt.json:
        sys.stdout.write(orjson.dumps({"lines": rows, "summary": summary}, option=orjson.OPT_INDENT_2).decode() + "\n")
        return
    if fmt == Fmt.csv:
        totals = [
            {
                "date": "total",
                "currency": a["currency"],
                **(
                    {
                        "bill_tokens": summary["bill_tokens"],
                        "ledger_tokens": summary["ledger_tokens"],
                        "tokens_diff": summary["tokens_diff"],
                    }
                    if i == 0
                    else {}
                ),
                "bill_amount_micros": a["bill_micros"],
                "ledger_cost_micros": a["ledger_micros"],
                "amount_diff_micros": a["diff_micros"],
                "verdict": "total",
            }
            for i, a in enumerate(summary["amounts"])
        ]
        emit(rows + totals, [*BILL_COLS, *BILL_MONEY, "currency", "verdict", "note"], fmt)
        return
    shown = [
        {
            **r,
            "bill_tokens": _n(r["bill_tokens"]),
            "ledger_tokens": _n(r["ledger_tokens"]),
            "tokens_diff": _n(r["tokens_diff"], signed=True),
            "bill_amount": _money(r["bill_amount_micros"], r["currency"]),
            "ledger_amount": _money(r["ledger_cost_micros"], r["currency"]),
            "amount_diff": _money(r["amount_diff_micros"], r["currency"], signed=True),
        }
        for r in rows
    ]
    cols = [*BILL_COLS, "bill_amount", "ledger_amount", "amount_diff", "verdict", "note"]
    emit(
        shown,
        cols,
        fmt,
        title=f"{bill} against the ledger (tolerance {tolerance}, days in {tz or s.governance.timezone})",
    )
    typer.echo(summary_line(summary))


def summary_line(summary: dict) -> str:
    """``12 lines: 10 match, 1 differs, ...; tokens bill 1,234 ledger 1,240 (+6); CNY bill ... ``"""
    from tokenabacus.billing.bill import VERDICTS

    counts = ", ".join(f"{summary[v.replace(' ', '_')]} {v}" for v in VERDICTS)
    parts = [
        f"{summary['lines']} lines: {counts}",
        f"tokens: bill {_n(summary['bill_tokens'])}, ledger {_n(summary['ledger_tokens'])} "
        f"({_n(summary['tokens_diff'], signed=True)})",
    ]
    for a in summary["amounts"]:
        c = a["currency"]
        parts.append(
            f"{c}: bill {_money(a['bill_micros'], c)}, ledger {_money(a['ledger_micros'], c)} "
            f"({_money(a['diff_micros'], c, signed=True)})"
        )
    return "; ".join(parts)
