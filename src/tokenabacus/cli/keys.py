"""`tokenabacus keys create|list|revoke`: API keys, shown once, stored as hashes."""

from __future__ import annotations

from typing import Annotated

import orjson
import typer

from tokenabacus.cli.common import ConfigOpt, DataDirOpt, open_store, settings_for
from tokenabacus.cli.output import Fmt, emit, fail, iso
from tokenabacus.ledger.record import now_ms

LIST_COLS = ["key_id", "prefix", "user", "project", "department", "name", "created_at", "revoked_at"]


def register(app: typer.Typer) -> None:
    keys = typer.Typer(help="Create, list and revoke API keys.", no_args_is_help=True)
    keys.command("create")(create)
    keys.command("list")(list_keys)
    keys.command("revoke")(revoke)
    app.add_typer(keys, name="keys")


def create(
    user: Annotated[str | None, typer.Option(help="The person or service the key belongs to.")] = None,
    project: Annotated[str | None, typer.Option(help="Project charged for the key's usage.")] = None,
    department: Annotated[str | None, typer.Option(help="Department charged for the key's usage.")] = None,
    name: Annotated[str | None, typer.Option(help="A label for the key.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the key as JSON.")] = False,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Create an API key. The key is printed once; only its hash is stored."""
    from tokenabacus.governance.keys import NoOwner, create_key, key_owner

    s = settings_for(config, data_dir)
    try:
        owner = key_owner(s.keys.defaults, user, project, department)
    except NoOwner:
        fail("a key needs --user or --project (or keys.defaults.project in the config)")
    store = open_store(config, data_dir, s)
    key, row = create_key(store, owner.user, owner.project, owner.department, name)
    if as_json:
        out = {
            "key": key,
            "key_id": row["key_id"],
            "user": owner.user,
            "project": owner.project,
            "department": owner.department,
            "name": name,
        }
        typer.echo(orjson.dumps(out).decode())
    else:
        typer.echo(key)
        typer.echo(
            f"key id {row['key_id']} for user={owner.user} project={owner.project} department={owner.department}. "
            "Store the key now: it is not shown again.",
            err=True,
        )


def list_keys(
    include_revoked: Annotated[bool, typer.Option("--all", help="Include revoked keys.")] = False,
    fmt: Annotated[Fmt, typer.Option("--format", help="table, json or csv.")] = Fmt.table,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """List API keys (never the keys themselves: only id, prefix and owner)."""
    rows = open_store(config, data_dir, create=False).keys.list(include_revoked=include_revoked)
    out = [{c: r[c] for c in LIST_COLS} for r in rows]
    for r in out:
        for c in ("created_at", "revoked_at"):
            r[c] = iso(r[c]) if r[c] else None
    emit(out, LIST_COLS, fmt, title="API keys")


def revoke(key_id: str, config: ConfigOpt = None, data_dir: DataDirOpt = None) -> None:
    """Revoke a key by its id; running gateways stop accepting it within seconds."""
    if not open_store(config, data_dir, create=False).keys.revoke(key_id, now_ms()):
        fail(f"no active key with id {key_id!r}")
    typer.echo(f"revoked {key_id}")
