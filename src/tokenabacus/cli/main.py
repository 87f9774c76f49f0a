"""The `tokenabacus` command: serve, keys, usage, report, db."""

from __future__ import annotations

import csv
import io
import json
import logging
import socket
import sys
import time
from datetime import datetime, timezone
from enum import Enum
from typing import Annotated, Optional

import orjson
import typer
from rich.console import Console
from rich.cells import cell_len
from rich.table import Table

from tokenabacus.config import ConfigError, Settings, load_settings, parse_upstream_flag, with_models

app = typer.Typer(help="tokenabacus: an OpenAI-compatible LLM gateway with exact token accounting.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
keys_app = typer.Typer(help="Create, list and revoke API keys.", no_args_is_help=True)
db_app = typer.Typer(help="Ledger database maintenance.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.add_typer(db_app, name="db")

ConfigOpt = Annotated[Optional[str], typer.Option("--config", "-c", envvar="TOKENABACUS_CONFIG", help="Path to tokenabacus.yaml.")]
DataDirOpt = Annotated[Optional[str], typer.Option("--data-dir", envvar="TOKENABACUS_DATA_DIR", help="Where the ledger, spool and logs live (default ./tokenabacus-data).")]


class Fmt(str, Enum):
    table = "table"
    json = "json"
    csv = "csv"


def fail(message: str, code: int = 2) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def settings_for(config: str | None, data_dir: str | None, **overrides) -> Settings:
    try:
        return load_settings(config, data_dir=data_dir, **overrides)
    except ConfigError as e:
        fail(str(e))
        raise  # unreachable


def open_store(config: str | None, data_dir: str | None, settings: Settings | None = None, create: bool = True):
    """The ledger, migrated; ``create=False`` (read-only commands) refuses a missing SQLite
    ledger instead of creating one."""
    from tokenabacus.ledger.store import LedgerMissing, Store

    s = settings or settings_for(config, data_dir)
    try:
        return Store(s.ledger_url, create=create)
    except LedgerMissing as e:
        fail(f"{e}: nothing has been recorded there (check --data-dir, TOKENABACUS_DATA_DIR or ledger.url)")
    except Exception as e:
        fail(f"cannot open the ledger at {safe_url(s.ledger_url)}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")


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


def listen(host: str, port: int) -> socket.socket:
    """Bind and listen before anything else happens, so a busy port fails without touching the
    data dir; uvicorn then serves on this socket."""
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: restart over TIME_WAIT
        sock.bind(addr)
        sock.listen(2048)
    except OSError as e:
        reason = (e.strerror or str(e)).lower()
        fail(f"cannot listen on {where}: {reason}")
    return sock


def safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "(unparsable ledger.url)"


# serve ---------------------------------------------------------------------------------------------
@app.command()
def serve(
    host: Annotated[Optional[str], typer.Option(help="Address to bind (default 127.0.0.1).")] = None,
    port: Annotated[Optional[int], typer.Option(help="Port to bind (default 8000).")] = None,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    upstream: Annotated[Optional[list[str]], typer.Option("--upstream", "-u", help="Serve an OpenAI-compatible server: NAME=URL or NAME=URL#UPSTREAM_MODEL (repeatable).")] = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
) -> None:
    """Start the gateway."""
    import uvicorn

    from tokenabacus.server.app import create_app
    from tokenabacus.server.protocol import with_header_timeout

    settings = settings_for(config, data_dir, host=host, port=port)
    if upstream:
        try:
            settings = with_models(settings, [parse_upstream_flag(u) for u in upstream])
        except ConfigError as e:
            fail(str(e))
    # Preflight, each step failing with one line: the port, then the data dir's lock (held until
    # exit), then the ledger (migrated here). Nothing is replayed before all three are ours.
    sock = listen(settings.server.host, settings.server.port)
    hold_spool(settings)
    store = open_store(config, data_dir, settings)
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        app_ = create_app(settings, store=store)
    except Exception as e:  # e.g. a tokenizer file that does not exist
        fail(str(e))
    names = ", ".join(m.name for m in settings.models) or "smollm2-135m-instruct (embedded)"
    typer.echo(f"tokenabacus on http://{settings.server.host}:{settings.server.port}/v1  models: {names}  data: {settings.data_path}")
    server = uvicorn.Server(uvicorn.Config(
        app_, loop="uvloop", http=with_header_timeout(settings.server.header_timeout_s),
        access_log=False, log_level=log_level.lower(), timeout_graceful_shutdown=settings.server.shutdown_grace_s,
        # client_ip is the socket peer: X-Forwarded-For is not trusted (no trusted proxies yet).
        proxy_headers=False, server_header=False))
    try:
        server.run(sockets=[sock])
    except SystemExit:
        pass  # uvicorn exits when the app fails to start; it has logged why
    if not server.started:
        fail("the gateway did not start (the log above says why)")


# keys ----------------------------------------------------------------------------------------------
@keys_app.command("create")
def keys_create(
    user: Annotated[Optional[str], typer.Option(help="The person or service the key belongs to.")] = None,
    project: Annotated[Optional[str], typer.Option(help="Project charged for the key's usage.")] = None,
    department: Annotated[Optional[str], typer.Option(help="Department charged for the key's usage.")] = None,
    name: Annotated[Optional[str], typer.Option(help="A label for the key.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the key as JSON.")] = False,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Create an API key. The key is printed once; only its hash is stored."""
    from tokenabacus.governance.keys import create_key

    s = settings_for(config, data_dir)
    project = project or s.keys.defaults.project
    department = department or s.keys.defaults.department
    if not (user or project):
        fail("a key needs --user or --project (or keys.defaults.project in the config)")
    store = open_store(config, data_dir, s)
    key, row = create_key(store, user, project, department, name)
    if as_json:
        out = {"key": key, "key_id": row["key_id"], "user": user, "project": project, "department": department, "name": name}
        typer.echo(orjson.dumps(out).decode())
    else:
        typer.echo(key)
        typer.echo(f"key id {row['key_id']} for user={user} project={project} department={department}. "
                   "Store the key now: it is not shown again.", err=True)


@keys_app.command("list")
def keys_list(
    include_revoked: Annotated[bool, typer.Option("--all", help="Include revoked keys.")] = False,
    fmt: Annotated[Fmt, typer.Option("--format", help="table, json or csv.")] = Fmt.table,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """List API keys (never the keys themselves: only id, prefix and owner)."""
    rows = open_store(config, data_dir, create=False).list_keys(include_revoked=include_revoked)
    cols = ["key_id", "prefix", "user", "project", "department", "name", "created_at", "revoked_at"]
    out = [{c: r[c] for c in cols} for r in rows]
    for r in out:
        for c in ("created_at", "revoked_at"):
            r[c] = _iso(r[c]) if r[c] else None
    emit(out, cols, fmt, title="API keys")


@keys_app.command("revoke")
def keys_revoke(key_id: str, config: ConfigOpt = None, data_dir: DataDirOpt = None) -> None:
    """Revoke a key by its id; running gateways stop accepting it within seconds."""
    if not open_store(config, data_dir, create=False).revoke_key(key_id, time.time_ns() // 1_000_000):
        fail(f"no active key with id {key_id!r}")
    typer.echo(f"revoked {key_id}")


# usage and report ----------------------------------------------------------------------------------
USAGE_COLS = ["timestamp", "request_id", "status", "model", "user", "project", "department",
              "prompt_tokens", "completion_tokens", "total_tokens", "usage_source", "duration_ms"]


@app.command()
def usage(
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="How many records.")] = 20,
    since: Annotated[Optional[str], typer.Option(help="Only records from this date/time on (YYYY-MM-DD[THH:MM]).")] = None,
    project: Annotated[Optional[str], typer.Option()] = None,
    user: Annotated[Optional[str], typer.Option()] = None,
    department: Annotated[Optional[str], typer.Option()] = None,
    model: Annotated[Optional[str], typer.Option()] = None,
    status: Annotated[Optional[str], typer.Option()] = None,
    tz: Annotated[str, typer.Option(help="Time zone for dates shown and parsed (e.g. Asia/Shanghai).")] = "UTC",
    fmt: Annotated[Fmt, typer.Option("--format", help="table, json (every contract field) or csv.")] = Fmt.table,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """List the latest ledger records, newest first."""
    from tokenabacus.billing.reports import check_status, parse_when, zone_named

    try:
        check_status(status)
        zone = zone_named(tz)
        since_ms = parse_when(since, zone, "--since") if since else None
    except ValueError as e:
        fail(str(e))
    rows = open_store(config, data_dir, create=False).latest_records(limit, since_ms, project=project, user=user,
                                                       department=department, model=model, status=status)
    if fmt == Fmt.table:
        for r in rows:
            r["timestamp"] = _iso(r["timestamp"], zone)
        emit(rows, USAGE_COLS, fmt, title="Latest usage records")
    else:
        from tokenabacus.ledger.record import FIELDS

        emit(rows, list(FIELDS), fmt)


@app.command()
def report(
    by: Annotated[list[str], typer.Option("--by", help="Group by project, user, department, model, key_id, status, day or hour (repeat or comma-separate).")] = ["project"],  # noqa: B006
    since: Annotated[Optional[str], typer.Option(help="From this date/time (YYYY-MM-DD[THH:MM]), inclusive.")] = None,
    until: Annotated[Optional[str], typer.Option(help="Up to this date/time, exclusive.")] = None,
    status: Annotated[Optional[str], typer.Option(help="Only records with this status (ok, error, cancelled, rejected).")] = None,
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
    cols = list(dims) + ["requests", "prompt_tokens", "completion_tokens", "total_tokens", "avg_duration_ms"]
    emit(rows, cols, fmt, title=f"Usage by {', '.join(dims)}" + (f" since {since}" if since else ""))


# db ------------------------------------------------------------------------------------------------
@db_app.command("replay")
def db_replay(config: ConfigOpt = None, data_dir: DataDirOpt = None) -> None:
    """Move spooled records into the ledger and the sinks (refused while a gateway runs on the
    data dir; start does this too). Records that cannot be written go to the dead-letter file."""
    from tokenabacus.ledger.deadletter import FILE_NAME, DeadLetters
    from tokenabacus.ledger.sinks import build_sinks
    from tokenabacus.ledger.writer import replay_spool

    s = settings_for(config, data_dir)
    hold_spool(s)
    store = open_store(config, data_dir, s)
    dead = DeadLetters(s.spool_path / FILE_NAME)
    sinks = build_sinks(s)
    try:
        done = replay_spool(s.spool_path, store, sinks, dead)
    except Exception as e:  # the database went away mid-way: what is left stays in the spool
        text = str(e).strip().splitlines()
        fail(f"replay stopped, the rest stays in {s.spool_path}: {type(e).__name__}: {text[0] if text else ''}")
        raise  # unreachable
    finally:
        for sink in sinks:
            sink.close()
        store.close()
    aside = f"; {done.set_aside} set aside in {dead.path} (see the log above)" if done.set_aside else ""
    typer.echo(f"replayed {done.moved} records from {s.spool_path}{aside}")


@db_app.command("upgrade")
def db_upgrade(config: ConfigOpt = None, data_dir: DataDirOpt = None) -> None:
    """Apply the ledger's schema migrations (opening the ledger does this too) and show the revision."""
    from tokenabacus.ledger.migrate import current, head

    s = settings_for(config, data_dir)
    store = open_store(config, data_dir, s)
    rev, newest = current(store.engine), head()
    typer.echo(f"ledger {safe_url(s.ledger_url)}: schema revision {rev}" + (" (newest)" if rev == newest else f" (newest is {newest})"))


# helpers -------------------------------------------------------------------------------------------
def _iso(ms: int | None, zone=timezone.utc) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, zone).isoformat(timespec="seconds")


NUMERIC = {"requests", "prompt_tokens", "completion_tokens", "total_tokens", "avg_duration_ms", "duration_ms"}


def emit(rows: list[dict], cols: list[str], fmt: Fmt, title: str | None = None) -> None:
    if fmt == Fmt.json:
        out = [{c: r.get(c) for c in cols} for r in rows]
        try:
            sys.stdout.write(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode() + "\n")
        except TypeError:  # a sum past 64 bits (a ledger with absurd figures): orjson stops there
            sys.stdout.write(json.dumps(out, indent=2, ensure_ascii=False) + "\n")
        return
    if fmt == Fmt.csv:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
        sys.stdout.write(buf.getvalue())
        return
    cells = [["" if r.get(c) is None else (f"{r[c]:,}" if isinstance(r.get(c), int) and c in NUMERIC else str(r[c]))
              for c in cols] for r in rows]
    # A terminal gets Rich's fitting; piped or redirected output keeps every cell whole.
    widths = [max([cell_len(c)] + [cell_len(row[i]) for row in cells]) for i, c in enumerate(cols)]
    console = Console() if sys.stdout.isatty() else Console(width=sum(widths) + 3 * len(cols) + 1)
    if not rows:
        console.print("[dim]no records[/dim]")
        return
    table = Table(title=title)
    for c in cols:
        table.add_column(c, justify="right" if c in NUMERIC else "left")
    for row in cells:
        table.add_row(*row)
    console.print(table)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
