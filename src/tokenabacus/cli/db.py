"""`tokenabacus db replay|upgrade|rollup`: ledger maintenance."""

from __future__ import annotations

from typing import Annotated

import typer

from tokenabacus.cli.common import ConfigOpt, DataDirOpt, hold_spool, open_store, safe_url, settings_for
from tokenabacus.cli.output import fail


def register(app: typer.Typer) -> None:
    db = typer.Typer(help="Ledger database maintenance.", no_args_is_help=True)
    db.command("replay")(replay)
    db.command("upgrade")(upgrade)
    db.command("rollup")(rollup)
    app.add_typer(db, name="db")


def replay(config: ConfigOpt = None, data_dir: DataDirOpt = None) -> None:
    """Move spooled records into the ledger and the sinks (refused while a gateway runs on the
    data dir; start does this too). Records that cannot be written go to the dead-letter file."""
    from tokenabacus.ledger.deadletter import FILE_NAME, DeadLetters
    from tokenabacus.ledger.writer import replay_spool
    from tokenabacus.observe.wiring import build_sinks

    s = settings_for(config, data_dir)
    hold_spool(s)
    store = open_store(config, data_dir, s)
    dead = DeadLetters(s.spool_path / FILE_NAME)
    sinks = build_sinks(s)
    try:
        done = replay_spool(s.spool_path, store.usage, sinks, dead)
    except Exception as e:  # the database went away mid-way: what is left stays in the spool
        text = str(e).strip().splitlines()
        fail(f"replay stopped, the rest stays in {s.spool_path}: {type(e).__name__}: {text[0] if text else ''}")
    finally:
        for sink in sinks:
            sink.close()
        store.close()
    aside = f"; {done.set_aside} set aside in {dead.path} (see the log above)" if done.set_aside else ""
    typer.echo(f"replayed {done.moved} records from {s.spool_path}{aside}")


def upgrade(config: ConfigOpt = None, data_dir: DataDirOpt = None) -> None:
    """Apply the ledger's schema migrations (opening the ledger does this too) and show the revision."""
    from tokenabacus.ledger.migrate import current, head

    s = settings_for(config, data_dir)
    store = open_store(config, data_dir, s)
    rev, newest = current(store.engine), head()
    typer.echo(
        f"ledger {safe_url(s.ledger_url)}: schema revision {rev}"
        + (" (newest)" if rev == newest else f" (newest is {newest})")
    )


def rollup(
    rebuild: Annotated[
        bool, typer.Option("--rebuild", help="Recompute every hourly rollup from the raw records.")
    ] = False,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Show whether the hourly rollups reports read hold every record; --rebuild recomputes them
    from the raw records in one transaction. Writers wait while it runs (their records stay in
    their spools), so it is safe with gateways running; a ledger written before rollups existed
    needs it once."""
    from tokenabacus.ledger import rollups

    store = open_store(config, data_dir, create=False)
    try:
        if rebuild:
            try:
                records, rows = rollups.rebuild(store.db)
            except Exception as e:  # rolled back: the rollups are as they were
                text = str(getattr(e, "orig", None) or e).strip().splitlines()
                fail(f"rebuild stopped, nothing changed: {type(e).__name__}: {text[0] if text else ''}")
            typer.echo(f"rebuilt the hourly and daily rollups: {records} records in {rows} hourly rows")
            return
        st = rollups.status(store.db)
    finally:
        store.close()
    rows, counted, records = st["rollup_rows"], st["records_counted"], st["records"]
    if st["complete"] and counted == records:
        typer.echo(f"hourly rollups: all {records} records in {rows} rows")
        if st["daily_complete"]:
            typer.echo(f"daily rollups: {st['daily_rows']} rows")
        else:
            typer.echo(
                "daily rollups: not built for the records from before them (reports use the hourly ones): "
                "run `tokenabacus db rollup --rebuild`"
            )
        return
    why = (
        "the ledger has records from before rollups existed; reports read raw records until then"
        if not st["complete"]
        else "they disagree with the records (written by an older gateway?)"
    )
    typer.echo(
        f"hourly rollups: {counted} of the ledger's {records} records in {rows} rows; {why}: "
        "run `tokenabacus db rollup --rebuild`"
    )
