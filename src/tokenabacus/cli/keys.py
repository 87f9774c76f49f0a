"""`tokenabacus keys create|list|revoke|rotate`: API keys, shown once, stored as hashes; a key
may carry an expiry and a budget from birth, and may be given a new secret (governance.keylife)."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import orjson
import typer

from tokenabacus.calendar import now_ms
from tokenabacus.cli.common import ConfigOpt, DataDirOpt, cli_actor, open_store, settings_for
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
    "expires_at",
    "revoked_at",
]


def cli_who() -> str:
    """The name a limit set from the command line carries (as `quota set` writes it)."""
    from tokenabacus.cli.common import os_user

    user = os_user()
    return "cli:" + user if user else "cli"


class Role(StrEnum):
    member = "member"
    viewer = "viewer"
    admin = "admin"


def register(app: typer.Typer) -> None:
    keys = typer.Typer(help="Create, list, rotate and revoke API keys.", no_args_is_help=True)
    keys.command("create")(create)
    keys.command("list")(list_keys)
    keys.command("revoke")(revoke)
    keys.command("rotate")(rotate)
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
    expires: Annotated[
        str | None,
        typer.Option(help="Valid through this date (the whole day) or until this date-time, in governance.timezone."),
    ] = None,
    ttl: Annotated[str | None, typer.Option(help="Valid for this long: 90d, 12h, 2w, 30m, 10s.")] = None,
    budget: Annotated[
        str | None, typer.Option(help="A cost limit on this key, in --currency per --period (a key-scoped quota).")
    ] = None,
    budget_tokens: Annotated[int | None, typer.Option(help="A token limit on this key per --period.")] = None,
    currency: Annotated[str, typer.Option(help="The currency of --budget.")] = "CNY",
    period: Annotated[str, typer.Option(help="The period of the budget: minute, day, week, month, total.")] = "month",
    as_json: Annotated[bool, typer.Option("--json", help="Print the key as JSON.")] = False,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Create an API key. The key is printed once; only its hash is stored."""
    from tokenabacus.calendar import zone_named
    from tokenabacus.config import check_cidrs
    from tokenabacus.governance import keylife
    from tokenabacus.governance.keys import NoOwner, create_key, key_owner
    from tokenabacus.governance.roles import key_scope

    if role == Role.admin and not (name or "").strip():
        fail("an admin key needs a name: give it one with --name")
    s = settings_for(config, data_dir)
    zone = zone_named(s.governance.timezone)
    try:
        expires_at = keylife.expires_at(expires, ttl, zone)
        limit = keylife.budget_metric(budget, budget_tokens, currency, period)
    except ValueError as e:
        fail(str(e))
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
    # A key with a lifetime or a budget leaves an admin event (a plain one is as it always was).
    actor = cli_actor() if expires_at is not None or limit is not None else None
    key, row = create_key(
        store, owner.user, owner.project, owner.department, name, role.value, scope, cidrs, expires_at, actor
    )
    quota = None
    if limit is not None:
        assert actor is not None
        quota = keylife.set_budget(store, row["key_id"], limit[0], limit[1], period, cli_who(), actor)
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
        if expires_at is not None:
            out["expires_at"] = iso(expires_at, zone)
        if quota is not None:
            out["quota_id"] = quota["quota_id"]
        typer.echo(orjson.dumps(out).decode())
    else:
        typer.echo(key)
        # What was stored, and only that: a blank is left out rather than shown as None.
        stored = [("user", owner.user), ("department", owner.department), ("project", owner.project)]
        stored += [("scope", f"{scope[0]}:{scope[1]}")] if scope else []
        who = " ".join(f"{k}={v}" for k, v in stored if v) or "nobody (not billed)"
        life = f", {keylife.validity(expires_at, zone)}" if expires_at is not None else ""
        life += f", budget {keylife.budget_label(quota)}" if quota is not None else ""
        typer.echo(
            f"{role.value} key id {row['key_id']} for {who}{life}. Store the key now: it is not shown again.",
            err=True,
        )


def list_keys(
    include_revoked: Annotated[bool, typer.Option("--all", help="Include revoked keys.")] = False,
    fmt: Annotated[Fmt, typer.Option("--format", help="table, json or csv.")] = Fmt.table,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """List API keys (never the keys themselves: only id, prefix, owner, role, scope, allowed addresses
    and expiry, in governance.timezone)."""
    from tokenabacus.calendar import zone_named

    s = settings_for(config, data_dir)
    zone = zone_named(s.governance.timezone)
    rows = open_store(config, data_dir, s, create=False).keys.list(include_revoked=include_revoked)
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
                "expires_at": iso(r["expires_at"], zone) if r.get("expires_at") else None,
                "revoked_at": iso(r["revoked_at"]) if r["revoked_at"] else None,
            }
        )
    emit(out, LIST_COLS, fmt, title="API keys")


def revoke(key_id: str, config: ConfigOpt = None, data_dir: DataDirOpt = None) -> None:
    """Revoke a key by its id; running gateways stop accepting it within seconds."""
    if not open_store(config, data_dir, create=False).keys.revoke(key_id, now_ms()):
        fail(f"no active key with id {key_id!r}")
    typer.echo(f"revoked {key_id}")


def rotate(
    key_id: str,
    grace: Annotated[
        str, typer.Option(help="How long the old secret keeps working: 24h, 7d, 30m, 0s (not at all).")
    ] = "24h",
    as_json: Annotated[bool, typer.Option("--json", help="Print the new key as JSON.")] = False,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Give a key a new secret, printed once: the same key id, owner, history and limits. The old
    secret keeps working for --grace, then is refused."""
    from tokenabacus.calendar import zone_named
    from tokenabacus.governance.keylife import parse_duration, rotate_key

    try:
        grace_ms = parse_duration(grace, "--grace")
    except ValueError as e:
        fail(str(e))
    s = settings_for(config, data_dir)
    done = rotate_key(open_store(config, data_dir, s, create=False), key_id, grace_ms, cli_actor())
    if done is None:
        fail(f"no active key with id {key_id!r}")
    until = iso(done.previous_until, zone_named(s.governance.timezone))
    if as_json:
        typer.echo(orjson.dumps({"key": done.key, "key_id": key_id, "previous_until": until}).decode())
        return
    typer.echo(done.key)
    typer.echo(
        f"key id {key_id} has a new secret; the old one works until {until}. Store the key now: it is not shown again.",
        err=True,
    )
