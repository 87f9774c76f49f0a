"""`tokenabacus keys create|list|revoke`: API keys, shown once, stored as hashes."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import orjson
import typer

from tokenabacus.calendar import now_ms
from tokenabacus.cli.common import ConfigOpt, DataDirOpt, open_store, settings_for
from tokenabacus.cli.output import Fmt, emit, fail, iso

LIST_COLS = [
    "key_id",
    "prefix",
    "user",
    "project",
    "department",
    "name",
    "role",
    "scope",
    "allow_ips",
    "created_at",
    "revoked_at",
]


class Role(StrEnum):
    member = "member"
    viewer = "viewer"
    admin = "admin"


def register(app: typer.Typer) -> None:
    keys = typer.Typer(help="Create, list and revoke API keys.", no_args_is_help=True)
    keys.command("create")(create)
    keys.command("list")(list_keys)
    keys.command("revoke")(revoke)
    app.add_typer(keys, name="keys")


def create(
    user: Annotated[
        str | None, typer.Option(help="The person or service the key belongs to (a known user brings its project).")
    ] = None,
    project: Annotated[str | None, typer.Option(help="Project charged; a viewer's scope.")] = None,
    department: Annotated[str | None, typer.Option(help="Department charged; a viewer's scope.")] = None,
    name: Annotated[str | None, typer.Option(help="A label for the key (an admin key needs one).")] = None,
    role: Annotated[
        Role, typer.Option(help="member (calls /v1), viewer (reads one department or project), admin.")
    ] = Role.member,
    allow_ip: Annotated[
        list[str] | None, typer.Option("--allow-ip", help="A CIDR the key may be used from (repeat; default anywhere).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the key as JSON.")] = False,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Create an API key. The key is printed once; only its hash is stored."""
    from tokenabacus.config import check_cidrs
    from tokenabacus.governance.keys import NoOwner, create_key, key_owner
    from tokenabacus.governance.roles import key_scope

    if role == Role.admin and not (name or "").strip():
        fail("an admin key needs a name: give it one with --name")
    s = settings_for(config, data_dir)
    try:
        cidrs = check_cidrs(allow_ip) if allow_ip else None
    except ValueError as e:
        fail(f"--allow-ip: {e}")
    try:
        scope = key_scope(role.value, project, department, name)
        # Checked before the ledger is opened: the organization only fills in an owner, never removes one.
        key_owner(s.keys.defaults, user, project, department, role=role.value)
    except NoOwner:
        fail("a key needs --user or --project (or keys.defaults.project in the config)")
    except ValueError as e:
        fail(str(e))
    store = open_store(config, data_dir, s)
    try:
        owner = key_owner(s.keys.defaults, user, project, department, store.org, role.value)
    except ValueError as e:  # a name the organization does not know
        fail(str(e))
    key, row = create_key(store, owner.user, owner.project, owner.department, name, role.value, scope, cidrs)
    if as_json:
        out = {
            "key": key,
            "key_id": row["key_id"],
            "user": owner.user,
            "project": owner.project,
            "department": owner.department,
            "name": name,
            "role": role.value,
            "scope_kind": row["scope_kind"],
            "scope_value": row["scope_value"],
            "allow_ips": cidrs,
        }
        typer.echo(orjson.dumps(out).decode())
    else:
        typer.echo(key)
        # What was stored, and only that: a blank is left out rather than shown as None.
        stored = [("user", owner.user), ("department", owner.department), ("project", owner.project)]
        stored += [("scope", f"{scope[0]}:{scope[1]}")] if scope else []
        who = " ".join(f"{k}={v}" for k, v in stored if v) or "nobody (not billed)"
        typer.echo(
            f"{role.value} key id {row['key_id']} for {who}. Store the key now: it is not shown again.", err=True
        )


def list_keys(
    include_revoked: Annotated[bool, typer.Option("--all", help="Include revoked keys.")] = False,
    fmt: Annotated[Fmt, typer.Option("--format", help="table, json or csv.")] = Fmt.table,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """List API keys (never the keys themselves: only id, prefix, owner, role, scope and allowed addresses)."""
    rows = open_store(config, data_dir, create=False).keys.list(include_revoked=include_revoked)
    out = []
    for r in rows:
        ips = orjson.loads(r["allow_ips"]) if r["allow_ips"] else None
        out.append(
            {
                **{c: r.get(c) for c in LIST_COLS},
                "role": r["role"] or "member",
                "scope": f"{r['scope_kind']}:{r['scope_value']}" if r["scope_kind"] else None,
                # JSON keeps the list; a table or CSV cell gets them comma-separated.
                "allow_ips": ips if fmt == Fmt.json or ips is None else ",".join(ips),
                "created_at": iso(r["created_at"]) if r["created_at"] else None,
                "revoked_at": iso(r["revoked_at"]) if r["revoked_at"] else None,
            }
        )
    emit(out, LIST_COLS, fmt, title="API keys")


def revoke(key_id: str, config: ConfigOpt = None, data_dir: DataDirOpt = None) -> None:
    """Revoke a key by its id; running gateways stop accepting it within seconds."""
    if not open_store(config, data_dir, create=False).keys.revoke(key_id, now_ms()):
        fail(f"no active key with id {key_id!r}")
    typer.echo(f"revoked {key_id}")
