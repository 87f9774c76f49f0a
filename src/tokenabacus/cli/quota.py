"""`tokenabacus quota ...`: limits (quotas and per-minute rate limits), their status, and the
approval flow. Running gateways pick up every change within ``governance.refresh_interval_s``."""

from __future__ import annotations

from typing import Annotated

import typer

from tokenabacus.cli.common import ConfigOpt, DataDirOpt, cli_actor, open_store, os_user, settings_for
from tokenabacus.cli.output import Fmt, emit, fail, iso

PERIODS_HELP = "minute (a rate limit), day, week, month or total; days cut at governance.timezone's midnight."
LIMIT_COLS = ["quota_id", "scope", "name", "model", "metric", "period", "limit", "source"]

KeyOpt = Annotated[str | None, typer.Option("--key", help="A key id (key_...).")]
UserOpt = Annotated[str | None, typer.Option("--user")]
ProjectOpt = Annotated[str | None, typer.Option("--project")]
DeptOpt = Annotated[str | None, typer.Option("--department")]
GlobalOpt = Annotated[bool, typer.Option("--global", help="Everyone together.")]
ModelOpt = Annotated[str | None, typer.Option("--model", help="Only this model's requests count.")]
TokensOpt = Annotated[int | None, typer.Option("--tokens", help="Total tokens (prompt + completion).")]
RequestsOpt = Annotated[int | None, typer.Option("--requests", help="Requests admitted.")]
CostOpt = Annotated[str | None, typer.Option("--cost", help="Money charged at the price book (e.g. 5000).")]
CurrencyOpt = Annotated[str, typer.Option("--currency", help="The currency of --cost.")]
FmtOpt = Annotated[Fmt, typer.Option("--format", help="table, json or csv.")]


def register(app: typer.Typer) -> None:
    quota = typer.Typer(help="Token and request quotas, rate limits and approvals.", no_args_is_help=True)
    for name, fn in (
        ("set", set_),
        ("list", list_),
        ("delete", delete),
        ("status", status),
        ("request", request),
        ("requests", requests_),
        ("approve", approve),
        ("deny", deny),
    ):
        quota.command(name)(fn)
    app.add_typer(quota, name="quota")


def _who() -> str:
    user = os_user()
    return "cli:" + user if user else "cli"


def set_(
    key: KeyOpt = None,
    user: UserOpt = None,
    project: ProjectOpt = None,
    department: DeptOpt = None,
    global_: GlobalOpt = False,
    model: ModelOpt = None,
    tokens: TokensOpt = None,
    requests: RequestsOpt = None,
    cost: CostOpt = None,
    currency: CurrencyOpt = "CNY",
    period: Annotated[str, typer.Option(help=PERIODS_HELP)] = "day",
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Set a limit (or change the number of an existing one with the same scope, model, metric
    and period: its use so far is kept)."""
    from tokenabacus.config import PERIODS
    from tokenabacus.governance.placement import check_scope
    from tokenabacus.governance.quotaview import check_metric, scope_of, show_amount

    try:
        kind, value = scope_of(key, user, project, department, global_)
        metric, amount = check_metric(tokens, requests, cost, currency)
    except ValueError as e:
        fail(str(e))
    if period not in PERIODS:
        fail(f"--period must be one of {', '.join(PERIODS)}")
    store = open_store(config, data_dir)
    try:
        check_scope(store.org, kind, value)
    except ValueError as e:
        fail(str(e))
    row = store.quotas.set(kind, value, model, metric, period, amount, _who(), cli_actor())
    what = show_amount(metric, amount) if metric.startswith("cost:") else f"{amount} {metric}"
    scope = f"{kind}{'=' + value if value else ''}{' model=' + model if model else ''}"
    typer.echo(f"{row['quota_id']}: {scope} {what} per {period}")


def list_(fmt: FmtOpt = Fmt.table, config: ConfigOpt = None, data_dir: DataDirOpt = None) -> None:
    """List the limits in force: the config file's and those set at run time."""
    from tokenabacus.governance.quotaview import current, limit_rows

    s = settings_for(config, data_dir)
    emit(limit_rows(current(open_store(config, data_dir, s), s)), LIMIT_COLS, fmt, title="Limits")


def delete(quota_id: str, config: ConfigOpt = None, data_dir: DataDirOpt = None) -> None:
    """Delete a limit set at run time (the config file's are changed in the file)."""
    if quota_id.startswith("cfg_"):
        fail(f"{quota_id} is declared in the config file (governance.quotas or rate_limits): remove it there")
    if not open_store(config, data_dir, create=False).quotas.delete(quota_id, cli_actor()):
        fail(f"no limit with id {quota_id!r} (see `tokenabacus quota list`)")
    typer.echo(f"deleted {quota_id}")


def status(
    key: KeyOpt = None,
    user: UserOpt = None,
    project: ProjectOpt = None,
    department: DeptOpt = None,
    global_: GlobalOpt = False,
    fmt: FmtOpt = Fmt.table,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Use, limit, grants and reset time of every limit (or of one scope's)."""
    from tokenabacus.governance import quotaview

    s = settings_for(config, data_dir)
    scope = None
    if key or user or project or department or global_:
        try:
            scope = quotaview.scope_of(key, user, project, department, global_)
        except ValueError as e:
            fail(str(e))
    store = open_store(config, data_dir, s, create=False)
    lims = quotaview.current(store, s)
    usage = quotaview.ledger_usage(store)
    if s.redis.url:
        usage = quotaview.shared_usage(s, lims, usage)
    rows = quotaview.status(lims, usage, scope=scope)
    if fmt == Fmt.table:  # money as money; JSON and CSV keep the integer micro-units
        for r in rows:
            if r["metric"].startswith("cost:"):
                for c in ("limit", "granted", "used", "reserved", "remaining"):
                    r[c] = quotaview.show_amount(r["metric"], r[c])
    emit(rows, quotaview.STATUS_COLUMNS, fmt, title="Quota status")


def request(
    key: KeyOpt = None,
    user: UserOpt = None,
    project: ProjectOpt = None,
    department: DeptOpt = None,
    model: ModelOpt = None,
    tokens: TokensOpt = None,
    requests: RequestsOpt = None,
    cost: CostOpt = None,
    currency: CurrencyOpt = "CNY",
    reason: Annotated[str, typer.Option(help="Why the extra quota is needed.")] = "",
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Ask for more quota for the current period; an admin approves or denies it."""
    from tokenabacus.governance.quotaview import check_metric, scope_of

    try:
        kind, value = scope_of(key, user, project, department)
        metric, amount = check_metric(tokens, requests, cost, currency)
    except ValueError as e:
        fail(str(e))
    if amount <= 0:
        fail("ask for a positive amount")
    if not reason.strip():
        fail("--reason is required: say why the extra quota is needed")
    row = open_store(config, data_dir).quotas.request(kind, value, model, metric, amount, reason.strip(), _who())
    from tokenabacus.governance.quotaview import show_amount

    typer.echo(
        f"{row['request_id']}: asked for {show_amount(metric, amount)} more {metric} for {kind} {value} (pending)"
    )


def requests_(
    all_: Annotated[bool, typer.Option("--all", help="Decided requests too.")] = False,
    fmt: FmtOpt = Fmt.table,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """List pending quota requests (--all: every request and its decision)."""
    from tokenabacus.governance import quotaview

    rows = open_store(config, data_dir, create=False).quotas.requests(None if all_ else "pending")
    for r in rows:
        for c in ("requested_at", "decided_at"):
            r[c] = iso(r[c]) if r[c] else None
    emit(rows, quotaview.REQUEST_COLUMNS, fmt, title="Quota requests")


def approve(
    request_id: str,
    tokens: Annotated[int | None, typer.Option("--tokens", help="Grant less than was asked.")] = None,
    requests: Annotated[int | None, typer.Option("--requests", help="Grant fewer requests than asked.")] = None,
    cost: Annotated[str | None, typer.Option("--cost", help="Grant less money than asked.")] = None,
    reason: Annotated[str | None, typer.Option(help="A note kept with the decision.")] = None,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Approve a pending request: it raises that scope's limit for the current period only."""
    store = open_store(config, data_dir, create=False)
    pending = store.quotas.get_request(request_id)
    if pending is None or pending["status"] != "pending":
        fail(f"no pending quota request with id {request_id!r} (see `tokenabacus quota requests`)")
    granted = tokens if tokens is not None else requests
    if cost is not None:
        from tokenabacus.money import parse_amount

        try:
            granted = parse_amount(cost, "--cost")
        except ValueError as e:
            fail(str(e))
    if granted is not None and not 0 < granted <= pending["amount"]:
        fail(f"the amount granted must be between 1 and the {pending['amount']} asked for")
    row = store.quotas.decide(request_id, True, _who(), reason, granted, cli_actor())
    if row is None:
        fail(f"quota request {request_id} was decided by someone else meanwhile")
    typer.echo(f"approved {request_id}: +{row['granted']} {row['metric']} for {row['scope_kind']} {row['scope_value']}")


def deny(
    request_id: str,
    reason: Annotated[str, typer.Option(help="Why (shown to the requester).")] = "",
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Deny a pending request, with a reason."""
    if not reason.strip():
        fail("--reason is required when denying")
    store = open_store(config, data_dir, create=False)
    row = store.quotas.decide(request_id, False, _who(), reason.strip(), actor=cli_actor())
    if row is None:
        fail(f"no pending quota request with id {request_id!r} (see `tokenabacus quota requests`)")
    typer.echo(f"denied {request_id}")
