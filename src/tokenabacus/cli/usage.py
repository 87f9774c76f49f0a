"""`tokenabacus usage`: the latest ledger records."""

from __future__ import annotations

from typing import Annotated

import typer

from tokenabacus.cli.common import ConfigOpt, DataDirOpt, open_store, settings_for
from tokenabacus.cli.output import Fmt, emit, fail, iso

# The table shows these; JSON and CSV give every contract field.
TABLE_COLS = [
    "timestamp",
    "request_id",
    "status",
    "model",
    "user",
    "project",
    "department",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "cost",
    "usage_source",
    "duration_ms",
]
# What a narrow terminal leaves out first; `--wide` or `--format` shows everything.
DROP = [
    "usage_source",
    "project",
    "department",
    "duration_ms",
    "prompt_tokens",
    "completion_tokens",
    "request_id",
    "status",
    "user",
]


def register(app: typer.Typer) -> None:
    app.command("usage")(usage)


def usage(
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="How many records.")] = 20,
    since: Annotated[str | None, typer.Option(help="Only records from this date/time on (YYYY-MM-DD[THH:MM]).")] = None,
    project: Annotated[str | None, typer.Option()] = None,
    user: Annotated[str | None, typer.Option()] = None,
    department: Annotated[str | None, typer.Option()] = None,
    model: Annotated[str | None, typer.Option()] = None,
    status: Annotated[str | None, typer.Option()] = None,
    tz: Annotated[
        str | None,
        typer.Option(help="Time zone for dates shown and parsed, e.g. Asia/Shanghai (default governance.timezone)."),
    ] = None,
    fmt: Annotated[Fmt, typer.Option("--format", help="table, json (every contract field) or csv.")] = Fmt.table,
    wide: Annotated[bool, typer.Option("--wide", help="Every table column, however wide the terminal.")] = False,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """List the latest ledger records, newest first."""
    from tokenabacus.billing.reports import check_status, parse_when
    from tokenabacus.cli.prices import zone_of
    from tokenabacus.money import format_money

    s = settings_for(config, data_dir)
    zone = zone_of(s, tz)
    try:
        check_status(status)
        since_ms = parse_when(since, zone, "--since") if since else None
    except ValueError as e:
        fail(str(e))
    rows = open_store(config, data_dir, s, create=False).usage.latest(
        limit, since_ms, project=project, user=user, department=department, model=model, status=status
    )
    if fmt == Fmt.table:
        for r in rows:
            r["timestamp"] = iso(r["timestamp"], zone)
            r["cost"] = format_money(r.get("cost_micros"), r.get("currency"))
        emit(rows, TABLE_COLS, fmt, title="Latest usage records", wide=wide, drop=DROP)
    else:
        from tokenabacus.ledger.record import FIELDS

        emit(rows, list(FIELDS), fmt)
