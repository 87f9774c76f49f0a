"""`tokenabacus costs ...` (corrections to cost: signed adjustments with who, when and why) and
`tokenabacus hardware ...` (self-hosted GPU pools' monthly costs and their split across
departments and projects). Both groups are money beside the price book; records are never
rewritten."""

from __future__ import annotations

from datetime import datetime, tzinfo
from typing import TYPE_CHECKING, Annotated

import typer

from tokenabacus.cli.common import ConfigOpt, DataDirOpt, open_store, settings_for
from tokenabacus.cli.output import Fmt, emit, fail, iso
from tokenabacus.cli.prices import who, zone_of

if TYPE_CHECKING:
    from tokenabacus.ledger.store import Store

ADJ_COLS = [
    "adjustment_id",
    "at",
    "request_id",
    "model",
    "department",
    "project",
    "user",
    "amount",
    "reason",
    "created_by",
    "created_at",
]
HW_COLS = ["pool", "models", "monthly", "basis", "from", "cost_id", "created_by"]
SPLIT_COLS = ["month", "pool", "department", "project", "basis", "usage", "share", "cost"]

FmtOpt = Annotated[Fmt, typer.Option("--format", help="table, json or csv.")]
TzOpt = Annotated[
    str | None, typer.Option("--tz", help="Time zone for times given and shown (default governance.timezone).")
]


def register(app: typer.Typer) -> None:
    costs = typer.Typer(help="Cost corrections: signed adjustments kept beside the records.", no_args_is_help=True)
    costs.command("adjust")(adjust)
    costs.command("adjustments")(adjustments)
    app.add_typer(costs, name="costs")
    hw = typer.Typer(help="Self-hosted GPU pools: monthly costs and their apportionment.", no_args_is_help=True)
    hw.command("set")(hardware_set)
    hw.command("list")(hardware_list)
    hw.command("apportion")(hardware_apportion)
    app.add_typer(hw, name="hardware")


def _money_cols(fmt: Fmt, cols: list[str], exact: list[str]) -> list[str]:
    """JSON and CSV add the exact integer micros and the currency beside the shown amounts."""
    return cols if fmt == Fmt.table else cols + exact


def adjust(
    amount: Annotated[str, typer.Option("--amount", help="Signed amount, e.g. -1.25 (a credit) or 3.5.")],
    reason: Annotated[str, typer.Option("--reason", help="Why the cost is corrected.")],
    request_id: Annotated[
        str | None, typer.Option("--request-id", help="Correct one record (its dimensions are taken from it).")
    ] = None,
    model: Annotated[str | None, typer.Option("--model")] = None,
    department: Annotated[str | None, typer.Option("--department")] = None,
    project: Annotated[str | None, typer.Option("--project")] = None,
    user: Annotated[str | None, typer.Option("--user")] = None,
    currency: Annotated[
        str | None, typer.Option("--currency", help="ISO 4217 code (default: the record's, else CNY).")
    ] = None,
    at: Annotated[str | None, typer.Option("--at", help="When it counts in reports (default now).")] = None,
    month: Annotated[
        str | None,
        typer.Option("--month", help="The month it corrects, e.g. 2026-11: it counts from that month's first day."),
    ] = None,
    tz: TzOpt = None,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Store a signed cost adjustment for a request, or for a model/department/project/user.
    A correction belongs to the period it corrects: give --month (or --at) for a past month."""
    from tokenabacus.calendar import month_start, parse_time
    from tokenabacus.ledger.prices import UnknownRequest
    from tokenabacus.money import check_currency, format_money, parse_amount

    dims = {"model": model, "department": department, "project": project, "user": user}
    if (request_id is None) == (not any(dims.values())):
        fail("give either --request-id or at least one of --model, --department, --project, --user")
    if not reason.strip():
        fail("--reason is required: say why the cost is corrected")
    if at and month:
        fail("give --at or --month, not both")
    s = settings_for(config, data_dir)
    zone = zone_of(s, tz)
    try:
        micros = parse_amount(amount, "--amount", signed=True)
        cur = check_currency(currency) if currency else None
        at_ms = parse_time(at, zone, "--at") if at else None
        if month:
            at_ms = month_start(month, zone, "--month")
    except ValueError as e:
        fail(str(e))
    store = open_store(config, data_dir, s, create=request_id is None)
    try:
        row = store.prices.adjust(micros, cur, reason.strip(), who(), at_ms, request_id, **dims)
    except (UnknownRequest, ValueError) as e:
        fail(str(e))
    target = f"request {request_id}" if request_id else ", ".join(f"{k}={v}" for k, v in dims.items() if v)
    typer.echo(f"{row['adjustment_id']}: {format_money(micros, row['currency'])} for {target}")
    _exported_note(store, row["at"], zone)


def _exported_note(store: Store, at_ms: int, zone: tzinfo) -> None:
    """Finance may already hold the month's workbook: say so, so it is sent again."""
    from tokenabacus.ledger.admin_events import CHARGEBACK_EXPORTED

    month = datetime.fromtimestamp(at_ms / 1000, zone).strftime("%Y-%m")
    done = store.events.list(action=CHARGEBACK_EXPORTED, target_id=month, limit=1)
    if done:
        when = iso(done[0]["at_ms"], zone)
        by = done[0]["actor_name"] or done[0]["actor_key_id"] or "someone"
        typer.echo(
            f"note: {month}'s chargeback was already exported ({when} by {by}): export it again to include this",
            err=True,
        )


def adjustments(
    since: Annotated[str | None, typer.Option("--since", help="Only those counted from this time on.")] = None,
    until: Annotated[str | None, typer.Option("--until", help="Only those counted before this time.")] = None,
    tz: TzOpt = None,
    fmt: FmtOpt = Fmt.table,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """List cost adjustments, oldest first, with who made them, when and why."""
    from tokenabacus.calendar import parse_time
    from tokenabacus.money import format_money

    s = settings_for(config, data_dir)
    zone = zone_of(s, tz)
    try:
        since_ms = parse_time(since, zone, "--since") if since else None
        until_ms = parse_time(until, zone, "--until") if until else None
    except ValueError as e:
        fail(str(e))
    rows = open_store(config, data_dir, s, create=False).prices.adjustments(since_ms, until_ms)
    for r in rows:
        r["amount"] = format_money(r["amount_micros"], r["currency"])
        r["at"], r["created_at"] = iso(r["at"], zone), iso(r["created_at"], zone)
    emit(rows, _money_cols(fmt, ADJ_COLS, ["amount_micros", "currency"]), fmt, title="Cost adjustments")


def hardware_set(
    pool: Annotated[str, typer.Argument(help="The GPU pool's name.")],
    models: Annotated[str, typer.Option("--models", help="The models it serves, comma-separated.")],
    monthly: Annotated[str, typer.Option("--monthly", help="Its cost per month, e.g. 60000.")],
    currency: Annotated[str, typer.Option("--currency", help="ISO 4217 code.")] = "CNY",
    basis: Annotated[
        str, typer.Option("--basis", help="Split by tokens or by busy_time (summed request durations).")
    ] = "tokens",
    from_: Annotated[
        str | None, typer.Option("--from", help="From this month on (2026-11; default this month).")
    ] = None,
    note: Annotated[str | None, typer.Option("--note")] = None,
    tz: TzOpt = None,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Set a GPU pool's monthly cost (the same pool and month again replaces that month's figure)."""
    from datetime import datetime

    from tokenabacus.billing.hardware import BASES
    from tokenabacus.calendar import parse_time
    from tokenabacus.money import check_currency, format_money, parse_amount

    names = [m.strip() for m in models.split(",") if m.strip()]
    if not names:
        fail("--models: name the models the pool serves (comma-separated)")
    if basis not in BASES:
        fail(f"--basis must be one of {', '.join(BASES)}")
    if not pool.strip() or len(pool) > 200:
        fail("the pool name must be 1 to 200 characters long")
    s = settings_for(config, data_dir)
    zone = zone_of(s, tz)
    try:
        micros = parse_amount(monthly, "--monthly")
        cur = check_currency(currency)
        start = parse_time(from_ or datetime.now(zone).strftime("%Y-%m"), zone, "--from")
    except ValueError as e:
        fail(str(e))
    row = open_store(config, data_dir, s).prices.set_hardware(pool, names, micros, cur, start, basis, who(), note)
    typer.echo(
        f"{row['cost_id']}: pool {pool} ({', '.join(names)}) {format_money(micros, cur)} a month "
        f"from {iso(start, zone)}, split by {basis}"
    )


def hardware_list(
    all_: Annotated[bool, typer.Option("--all", help="Every month's figure, not only those in force.")] = False,
    tz: TzOpt = None,
    fmt: FmtOpt = Fmt.table,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """GPU pools and the monthly cost in force for each."""
    from tokenabacus.billing.hardware import in_force
    from tokenabacus.calendar import now_ms
    from tokenabacus.money import format_money

    s = settings_for(config, data_dir)
    zone = zone_of(s, tz)
    rows = open_store(config, data_dir, s, create=False).prices.hardware()
    if not all_:
        rows = in_force(rows, now_ms())
    for r in rows:
        r["monthly"] = format_money(r["monthly_micros"], r["currency"])
        r["from"] = iso(r["effective_from"], zone)
        if fmt != Fmt.json:
            r["models"] = ",".join(r["models"])
    emit(rows, _money_cols(fmt, HW_COLS, ["monthly_micros", "currency", "effective_from"]), fmt, title="GPU pools")


def hardware_apportion(
    month: Annotated[str, typer.Option("--month", help="The month to split, e.g. 2026-11.")],
    tz: TzOpt = None,
    fmt: FmtOpt = Fmt.table,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Split each pool's monthly cost across departments and projects by their share of its
    models' tokens (or busy time); the shares add up exactly to the monthly cost."""
    from tokenabacus.billing.hardware import apportion, month_bounds

    s = settings_for(config, data_dir)
    zone = zone_of(s, tz)
    try:
        month_bounds(month, zone)
    except ValueError as e:
        fail(str(e))
    rows = apportion(open_store(config, data_dir, s, create=False), month, zone)
    emit(rows, _money_cols(fmt, SPLIT_COLS, ["cost_micros", "currency"]), fmt, title=f"Hardware costs for {month}")
