"""`tokenabacus report`: tokens, requests and latency grouped by any dimension."""

from __future__ import annotations

from typing import Annotated

import typer

from tokenabacus.cli.common import ConfigOpt, DataDirOpt, open_store
from tokenabacus.cli.output import Fmt, emit, fail

TOTAL_COLS = ["requests", "prompt_tokens", "completion_tokens", "total_tokens", "avg_duration_ms"]


def register(app: typer.Typer) -> None:
    app.command("report")(report)


def report(
    by: Annotated[
        list[str],
        typer.Option(
            "--by",
            help="Group by project, user, department, model, key_id, status, day or hour (repeat or comma-separate).",
        ),
    ] = ["project"],  # noqa: B006
    since: Annotated[str | None, typer.Option(help="From this date/time (YYYY-MM-DD[THH:MM]), inclusive.")] = None,
    until: Annotated[str | None, typer.Option(help="Up to this date/time, exclusive.")] = None,
    status: Annotated[
        str | None, typer.Option(help="Only records with this status (ok, error, cancelled, rejected).")
    ] = None,
    tz: Annotated[str, typer.Option(help="Time zone for dates and day/hour buckets (e.g. Asia/Shanghai).")] = "UTC",
    fmt: Annotated[Fmt, typer.Option("--format", help="table, csv or json.")] = Fmt.table,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Tokens, requests and average latency grouped by any dimension."""
    from tokenabacus.billing.reports import build_query, run_report

    dims = tuple(d.strip() for item in by for d in item.split(",") if d.strip())
    try:
        q = build_query(dims, since, until, tz, status)
    except ValueError as e:
        fail(str(e))
    rows = run_report(open_store(config, data_dir, create=False), q)
    emit(rows, list(dims) + TOTAL_COLS, fmt, title=f"Usage by {', '.join(dims)}" + (f" since {since}" if since else ""))
