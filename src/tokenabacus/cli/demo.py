"""`tokenabacus demo seed`: fill a sandbox ledger with a realistic month (tokenabacus/demo.py), so
that a newcomer sees a full console and full reports at once. It refuses a ledger that already
holds records unless told otherwise (--force), so a real ledger is never filled with demo data."""

from __future__ import annotations

import shlex
from typing import TYPE_CHECKING, Annotated

import typer

from tokenabacus.cli.common import ConfigOpt, DataDirOpt, open_store, safe_url, settings_for
from tokenabacus.cli.output import fail

if TYPE_CHECKING:
    from zoneinfo import ZoneInfo

    from tokenabacus.config import Settings
    from tokenabacus.demo.seed import Seeded

DEMO_ZONE = "Asia/Shanghai"  # the demo's working day, unless the config names a zone
MIN_RECORDS, MAX_RECORDS = 2_000, 10_000_000


def register(app: typer.Typer) -> None:
    demo = typer.Typer(help="Demo data for a sandbox ledger.", no_args_is_help=True)
    demo.command("seed")(seed)
    app.add_typer(demo, name="demo")


def demo_zone(s: Settings, tz: str | None) -> ZoneInfo:
    """--tz, else the config's governance.timezone when it names one, else Asia/Shanghai."""
    from zoneinfo import ZoneInfo

    from tokenabacus.calendar import zone_named

    explicit = "timezone" in s.governance.model_fields_set
    name = tz or (s.governance.timezone if explicit else DEMO_ZONE)
    try:
        zone_named(name)
    except ValueError as e:
        fail(str(e))
    return ZoneInfo("UTC" if name.upper() == "UTC" else name)


def until_ms(until: str | None, zone: ZoneInfo) -> int | None:
    """--until as UTC ms (None: now); a time to come is refused."""
    from tokenabacus.calendar import now_ms, parse_time

    if until is None:
        return None
    try:
        at = parse_time(until, zone, "--until")
    except ValueError as e:
        fail(str(e))
    if at > now_ms():
        fail(f"--until {until}: demo records are of the past; give a time before now")
    return at


def seed(
    records: Annotated[
        int, typer.Option(help=f"How many usage records to write ({MIN_RECORDS:,} to {MAX_RECORDS:,}).")
    ] = 40_000,
    days: Annotated[int, typer.Option(help="Days of traffic (7 to 366), up to now (today so far included).")] = 30,
    seed_: Annotated[int, typer.Option("--seed", help="The same seed gives the same month.")] = 2026,
    tz: Annotated[
        str | None,
        typer.Option(help="The working day's time zone (default: governance.timezone if set, else Asia/Shanghai)."),
    ] = None,
    until: Annotated[
        str | None,
        typer.Option(
            help="End the month at this past time (2026-11-30T18:00, in --tz) instead of now: the same "
            "--seed and --until give the same records."
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Seed a ledger that already holds records.")] = False,
    print_keys: Annotated[
        bool, typer.Option("--print-keys", help="Print a member key and a viewer key to try the console with.")
    ] = False,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Fill the ledger with a realistic month: departments, projects, users and their keys, prices,
    usage records (through the ledger's writer), quotas with pending requests, and alerts."""
    from tokenabacus.demo.seed import Options
    from tokenabacus.demo.seed import seed as run

    if not MIN_RECORDS <= records <= MAX_RECORDS:
        fail(f"--records {records}: give {MIN_RECORDS:,} to {MAX_RECORDS:,}")
    if not 7 <= days <= 366:
        fail(f"--days {days}: give 7 to 366")
    if seed_ < 0:
        fail(f"--seed {seed_}: give a number of 0 or more")
    s = settings_for(config, data_dir)
    zone = demo_zone(s, tz)
    end = until_ms(until, zone)
    store = open_store(config, data_dir, s)
    try:
        held = store.usage.count()
        if held and not force:
            fail(
                f"the ledger at {safe_url(s.ledger_url)} already holds {held:,} records; demo data goes "
                "into an empty sandbox ledger (another --data-dir), or add --force"
            )
        try:
            done = run(store, s, Options(records, days, seed_, zone, print_keys, end))
        except Exception as e:
            first_line = str(e).splitlines()[0] if str(e) else ""
            fail(f"seeding stopped: {type(e).__name__}: {first_line}")
    finally:
        store.close()
    given = [f"{flag} {shlex.quote(v)}" for flag, v in (("--config", config), ("--data-dir", data_dir)) if v]
    summary(done, s, zone, "".join(" " + g for g in given))


def summary(done: Seeded, s: Settings, zone: ZoneInfo, options: str = "") -> None:
    """What was seeded, and the next step (``options``: the --config/--data-dir given)."""
    from tokenabacus.cli.output import iso
    from tokenabacus.money import format_money

    t = done.tally
    cost = ", ".join(format_money(v, cur) or "" for cur, v in sorted(t.cost.items())) or "nothing"
    lines = [
        f"seeded {t.records:,} records from {iso(done.first_ms, zone)} to {iso(done.until_ms, zone)} "
        f"in {done.seconds:.1f} s",
        f"  {done.departments} departments, {done.projects} projects, {done.users} users, {done.keys} keys, "
        f"{done.models} models",
        f"  {t.tokens:,} tokens costing {cost} ({t.unpriced:,} records of an unpriced model)",
        f"  {done.quotas} quotas, {done.pending} pending quota requests, {done.alerts} alerts fired",
    ]
    if s.governance.timezone != zone.key:
        lines.append(
            f"  note: reports and the console cut days in governance.timezone ({s.governance.timezone}); "
            f"set it to {zone.key} in the config to see the demo's working day"
        )
    for shown in (done.member_key, done.viewer_key):
        if shown:
            lines.append(f"  {shown[1]}: {shown[0]}")
    host = "127.0.0.1" if s.server.host in ("0.0.0.0", "::") else s.server.host
    lines.append(f"next: tokenabacus serve{options}, then open http://{host}:{s.server.port}/console")
    typer.echo("\n".join(lines))
