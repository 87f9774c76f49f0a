"""`tokenabacus alerts list|history|test|check` and `tokenabacus reports send --now NAME`."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from tokenabacus.cli.common import ConfigOpt, DataDirOpt, open_store, settings_for
from tokenabacus.cli.output import Fmt, emit, fail, iso


def register(app: typer.Typer) -> None:
    alerts = typer.Typer(help="Alert rules, their history, and a test message through every channel.")
    alerts.command("list")(list_rules)
    alerts.command("history")(show_history)
    alerts.command("test")(test)
    alerts.command("check")(check)
    app.add_typer(alerts, name="alerts")
    reports = typer.Typer(help="Scheduled reports (alerts.schedules in the config).")
    reports.command("send")(send_report)
    reports.command("list")(list_schedules)
    app.add_typer(reports, name="reports")


def list_rules(
    fmt: Annotated[Fmt, typer.Option("--format")] = Fmt.table, config: ConfigOpt = None, data_dir: DataDirOpt = None
) -> None:
    """The configured rules and channels."""
    s = settings_for(config, data_dir)
    a = s.alerts
    rows = []
    for r in a.rules:
        params = r.model_dump(exclude={"name", "type", "channels", "severity", "cooldown_minutes"})
        rows.append(
            {
                "rule": r.name,
                "type": r.type,
                "severity": r.severity,
                "channels": ", ".join(r.channels or [c.name for c in a.channels]) or "(none)",
                "cooldown_minutes": r.cooldown_minutes if r.cooldown_minutes is not None else a.cooldown_minutes,
                "settings": ", ".join(f"{k}={v}" for k, v in params.items()),
            }
        )
    emit(rows, ["rule", "type", "severity", "channels", "cooldown_minutes", "settings"], fmt, "Alert rules")
    if fmt == Fmt.table:
        chans = ", ".join(f"{c.name} ({c.type})" for c in a.channels) or "none"
        typer.echo(f"channels: {chans}; language: {a.language}; every {a.evaluate_interval_s:g} s")


def show_history(
    since: Annotated[str | None, typer.Option(help="From this date (YYYY-MM-DD), in governance.timezone.")] = None,
    rule: Annotated[str | None, typer.Option(help="Only this rule.")] = None,
    limit: Annotated[int, typer.Option("-n", min=1, max=10_000)] = 50,
    fmt: Annotated[Fmt, typer.Option("--format")] = Fmt.table,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Alerts fired, newest first, with each channel's outcome (delivered, failed and why, pending)."""
    from tokenabacus.billing.reports import parse_when
    from tokenabacus.calendar import zone_named

    s = settings_for(config, data_dir)
    zone = zone_named(s.governance.timezone)
    try:
        since_ms = parse_when(since, zone, "--since") if since else None
    except ValueError as e:
        fail(str(e))
    store = open_store(config, data_dir, settings=s, create=False)
    try:
        rows = store.alerts.history(since_ms, rule, limit)
    finally:
        store.close()
    for r in rows:
        r["fired_at"] = iso(r["fired_at"], zone)
        r["deliveries"] = ", ".join(f"{k}: {v}" for k, v in r["deliveries"].items()) or "(no channel)"
    cols = ["fired_at", "rule", "kind", "severity", "scope", "figure", "baseline", "threshold", "deliveries"]
    emit(rows, cols if fmt == Fmt.table else [*cols, "period", "message"], fmt, "Alerts fired")


def test(
    channel: Annotated[str | None, typer.Option(help="Only this channel.")] = None,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Send a test message through every configured channel (or one); exit 1 if any failed."""
    from tokenabacus.alerts.engine import notifiers, send
    from tokenabacus.alerts.messages import test_message

    s = settings_for(config, data_dir)
    if not s.alerts.channels:
        fail("no alert channels are configured (alerts.channels)")
    if channel is not None and channel not in {c.name for c in s.alerts.channels}:
        fail(f"no channel named {channel!r}")
    from tokenabacus.calendar import zone_named

    msg = test_message(s.alerts.language, s.alerts.dashboard_url, zone_named(s.governance.timezone))
    results = asyncio.run(send(notifiers(s.alerts), [channel] if channel else None, msg))
    for name, result in results.items():
        typer.echo(f"{name}: {result}")
    if any(r != "sent" for r in results.values()):
        raise typer.Exit(1)


def check(
    send_alerts: Annotated[bool, typer.Option("--send", help="Also record and send what fires (once each).")] = False,
    fmt: Annotated[Fmt, typer.Option("--format")] = Fmt.table,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Evaluate every rule against the ledger now and show what fires."""
    from tokenabacus.alerts.engine import AlertEngine
    from tokenabacus.calendar import now_ms

    s = settings_for(config, data_dir)
    store = open_store(config, data_dir, settings=s, create=False)
    try:
        engine = AlertEngine(s, store)
        if send_alerts:
            rows = asyncio.run(engine.evaluate(wait=True))
        else:
            now = now_ms()
            rows = [
                {"rule": f.rule, "kind": f.kind, "scope": f.scope, "figure": f.figure, "baseline": f.baseline,
                 "threshold": f.threshold, "unit": f.unit, "period": f.period}
                for r in s.alerts.rules for f in engine.firings(r, now)
            ]  # fmt: skip
    finally:
        store.close()
    cols = ["rule", "kind", "scope", "figure", "baseline", "threshold", "period"]
    emit(rows, cols + (["deliveries"] if send_alerts else ["unit"]), fmt, "Firing now")


def send_report(
    name: Annotated[str, typer.Argument(help="The schedule's name (alerts.schedules).")],
    now: Annotated[bool, typer.Option("--now", help="Send it now, for the period that just ended.")] = False,
    as_of: Annotated[
        str | None,
        typer.Option(
            "--as-of",
            help="Send it as at this time (2026-12-08T05:45, in the schedule's time zone; default now): "
            "the report for the period that had ended by then.",
        ),
    ] = None,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Send a scheduled report on demand; exit 1 if a channel failed."""
    from datetime import UTC, datetime

    from tokenabacus.alerts.schedules import send_now
    from tokenabacus.billing.reports import parse_when
    from tokenabacus.calendar import zone_named

    if not now:
        fail("reports are sent on their schedule by the gateway; add --now to send one now")
    s = settings_for(config, data_dir)
    at = None
    if as_of is not None:
        sched = next((x for x in s.alerts.schedules if x.name == name), None)
        try:
            zone = zone_named((sched.timezone if sched else None) or s.governance.timezone)
            at = datetime.fromtimestamp(parse_when(as_of, zone, "--as-of") / 1000, UTC)
        except ValueError as e:
            fail(str(e))
    store = open_store(config, data_dir, settings=s, create=False)
    try:
        out = asyncio.run(send_now(store, s, name, at))
    except LookupError as e:
        fail(str(e))
    finally:
        store.close()
    typer.echo(f"{out['schedule']} for {out['period']}")
    for ch, result in out["deliveries"].items():
        typer.echo(f"{ch}: {result}")
    if any(r != "sent" for r in out["deliveries"].values()) or not out["deliveries"]:
        raise typer.Exit(1)


def list_schedules(
    fmt: Annotated[Fmt, typer.Option("--format")] = Fmt.table, config: ConfigOpt = None, data_dir: DataDirOpt = None
) -> None:
    """The configured schedules and when each last went out."""
    from tokenabacus.alerts.schedules import runs

    s = settings_for(config, data_dir)
    store = open_store(config, data_dir, settings=s, create=False)
    try:
        rows = []
        for sc in s.alerts.schedules:
            last = next(iter(runs(store, sc.name)), None)
            when = {"day": "daily", "week": f"weekly on {sc.weekday}", "month": f"monthly on day {sc.day}"}[sc.every]
            rows.append(
                {
                    "schedule": sc.name,
                    "when": f"{when} at {sc.at} {sc.timezone or s.governance.timezone}",
                    "channels": ", ".join(sc.channels or [c.name for c in s.alerts.channels]) or "(none)",
                    "last_period": last["period"] if last else None,
                    "last_sent": iso(last["sent_at"]) if last else None,
                }
            )
    finally:
        store.close()
    emit(rows, ["schedule", "when", "channels", "last_period", "last_sent"], fmt, "Scheduled reports")
