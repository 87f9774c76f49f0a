"""`tokenabacus audit events`: the admin events, read-only (who changed or deleted which quota,
who decided which quota request, when and from where, with the row before and after)."""

from __future__ import annotations

from typing import Annotated

import typer

from tokenabacus.cli.common import ConfigOpt, DataDirOpt, open_store
from tokenabacus.cli.output import Fmt, emit, fail, iso

MAX_ROWS = 10_000
COLUMNS = ["id", "at", "action", "target_id", "actor_key_id", "actor_name", "client_ip", "before", "after"]


def register(app: typer.Typer) -> None:
    audit = typer.Typer(help="The audit trail of admin actions.", no_args_is_help=True)
    audit.command("events")(events)
    app.add_typer(audit, name="audit")


def events(
    action: Annotated[
        str | None, typer.Option(help="One action (quota.update), or a family ending in a dot (quota.).")
    ] = None,
    target: Annotated[str | None, typer.Option(help="A quota's or quota request's id.")] = None,
    actor: Annotated[str | None, typer.Option(help="A key id; cli for commands run here.")] = None,
    since: Annotated[str | None, typer.Option(help="From this date/time on (YYYY-MM-DD[THH:MM]).")] = None,
    until: Annotated[str | None, typer.Option(help="Before this date/time.")] = None,
    tz: Annotated[str, typer.Option(help="Time zone for dates shown and parsed (e.g. Asia/Shanghai).")] = "UTC",
    limit: Annotated[int, typer.Option("--limit", "-n", help="How many events (1 to 10000).")] = 50,
    fmt: Annotated[Fmt, typer.Option("--format", help="table, json or csv.")] = Fmt.table,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Admin events, newest first: quota changes and deletions, approvals and denials, from the
    command line and the admin API."""
    import orjson

    from tokenabacus.billing.reports import parse_when
    from tokenabacus.calendar import zone_named

    if not 1 <= limit <= MAX_ROWS:
        fail(f"--limit must be between 1 and {MAX_ROWS}, got {limit}")
    try:
        zone = zone_named(tz)
        since_ms = parse_when(since, zone, "--since") if since else None
        until_ms = parse_when(until, zone, "--until") if until else None
    except (ValueError, OverflowError) as e:
        fail(str(e))
    rows = open_store(config, data_dir, create=False).events.list(action, target, actor, since_ms, until_ms, limit)
    for r in rows:
        r["at"] = iso(r["at_ms"], zone) if fmt == Fmt.table else r["at_ms"]
        if fmt != Fmt.json:  # a cell holds the row as JSON text; JSON output keeps the objects
            for k in ("before", "after"):
                r[k] = orjson.dumps(r[k]).decode() if r[k] is not None else None
    cols = COLUMNS if fmt == Fmt.table else ["id", "at_ms", *COLUMNS[2:]]
    emit(rows, cols, fmt, title="Admin events")
