"""What every command group shares: the --config and --data-dir options, loading settings,
opening the ledger, and holding the data dir's spool lock. Each fails with one line."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from tokenabacus.cli.output import fail
from tokenabacus.config import ConfigError, Settings, load_settings
from tokenabacus.ledger.urls import safe_url

if TYPE_CHECKING:
    from tokenabacus.ledger.admin_events import Actor
    from tokenabacus.ledger.store import Store

ConfigOpt = Annotated[
    str | None, typer.Option("--config", "-c", envvar="TOKENABACUS_CONFIG", help="Path to tokenabacus.yaml.")
]
DataDirOpt = Annotated[
    str | None,
    typer.Option(
        "--data-dir",
        envvar="TOKENABACUS_DATA_DIR",
        help="Where the ledger, spool and logs live (default ./tokenabacus-data).",
    ),
]


def settings_for(config: str | None, data_dir: str | None, **overrides: object) -> Settings:
    try:
        return load_settings(config, data_dir=data_dir, **overrides)
    except ConfigError as e:
        fail(str(e))


def open_store(
    config: str | None, data_dir: str | None, settings: Settings | None = None, create: bool = True
) -> Store:
    """The ledger, migrated; ``create=False`` (read-only commands) refuses a missing SQLite
    ledger instead of creating one."""
    # Imported here: commands that never open the ledger (--help, config errors) start faster.
    from tokenabacus.ledger.database import LedgerMissing
    from tokenabacus.ledger.store import Store

    s = settings or settings_for(config, data_dir)
    try:
        return Store(s.ledger_url, create=create)
    except LedgerMissing as e:
        fail(f"{e}: nothing has been recorded there (check --data-dir, TOKENABACUS_DATA_DIR or ledger.url)")
    except Exception as e:
        first_line = str(e).splitlines()[0] if str(e) else ""
        fail(f"cannot open the ledger at {safe_url(s.ledger_url)}: {type(e).__name__}: {first_line}")


def os_user() -> str | None:
    import getpass

    try:
        return getpass.getuser()
    except Exception:  # no login name (a container without a passwd entry)
        return None


def cli_actor() -> Actor:
    """Who a command acts as in admin events: the command line, run by this OS user."""
    from tokenabacus.ledger.admin_events import CLI, Actor

    return Actor(CLI, os_user())


def hold_spool(s: Settings) -> None:
    """Take the spool's lock for the life of this process, or exit: another process would
    otherwise take the segments it is still writing (see ledger/lock.py)."""
    from tokenabacus.ledger import lock

    try:
        lock.hold(s)
    except lock.InUse as e:
        fail(str(e))
    except OSError as e:
        fail(f"cannot use the data dir {s.data_path}: {e.strerror or e}: {e.filename or s.spool_path}")
