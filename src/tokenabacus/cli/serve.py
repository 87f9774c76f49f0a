"""`tokenabacus serve`: start the gateway."""

from __future__ import annotations

import logging
import os
import socket
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from tokenabacus.config import Settings
    from tokenabacus.ledger.store import Store

from tokenabacus.cli.common import ConfigOpt, DataDirOpt, hold_spool, open_store, settings_for
from tokenabacus.cli.output import fail
from tokenabacus.config import ConfigError, parse_upstream_flag, with_models
from tokenabacus.governance.keystrength import ADMIN_KEY_ENV, WeakAdminKey, check_admin_key


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)


def serve(
    host: Annotated[str | None, typer.Option(help="Address to bind (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port to bind (default 8000).")] = None,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    upstream: Annotated[
        list[str] | None,
        typer.Option(
            "--upstream",
            "-u",
            help="Serve an OpenAI-compatible server: NAME=URL or NAME=URL#UPSTREAM_MODEL (repeatable).",
        ),
    ] = None,
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
    # Preflight, each step failing with one line: a guessable admin key, the port, then the data
    # dir's lock (held until exit), then the ledger (migrated here). Nothing is replayed before all
    # of them are ours.
    chosen = os.environ.get(ADMIN_KEY_ENV)
    if chosen:
        try:
            check_admin_key(chosen)
        except WeakAdminKey as e:
            fail(str(e))
    sock = listen(settings.server.host, settings.server.port)
    hold_spool(settings)
    store = open_store(config, data_dir, settings)
    shared_ledger_preflight(settings, store)
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # aiokafka logs every failed connection as an ERROR while a broker is down; the observer's
    # own warning (with its retry delay) says the same once per attempt.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    try:
        app_ = create_app(settings, store=store)
    except Exception as e:  # e.g. a tokenizer file that does not exist
        fail(str(e))
    names = ", ".join(m.name for m in settings.models) or "smollm2-135m-instruct (embedded)"
    where = f"http://{settings.server.host}:{settings.server.port}/v1"
    typer.echo(f"tokenabacus on {where}  models: {names}  data: {settings.data_path}")
    server = uvicorn.Server(
        uvicorn.Config(
            app_,
            loop="uvloop",
            http=with_header_timeout(settings.server.header_timeout_s),
            access_log=False,
            log_level=log_level.lower(),
            timeout_graceful_shutdown=settings.server.shutdown_grace_s,
            # client_ip is the socket peer: X-Forwarded-For is not trusted (no trusted proxies yet).
            proxy_headers=False,
            server_header=False,
        )
    )
    try:
        server.run(sockets=[sock])
    except SystemExit:
        pass  # uvicorn exits when the app fails to start; it has logged why
    if not server.started:
        fail("the gateway did not start (the log above says why)")


def listen(host: str, port: int) -> socket.socket:
    """Bind and listen before anything else happens, so a busy port fails without touching the
    data dir; uvicorn then serves on this socket."""
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[
            0
        ]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: restart over TIME_WAIT
        sock.bind(addr)
        sock.listen(2048)
    except OSError as e:
        reason = (e.strerror or str(e)).lower()
        fail(f"cannot listen on {where}: {reason}")
    return sock


def shared_ledger_preflight(settings: Settings, store: Store) -> None:
    """Quotas on a PostgreSQL/MariaDB ledger without Redis: this gateway must be the one that
    enforces them (governance/sharing.py), or it does not start."""
    if settings.redis.url or store.db.dialect == "sqlite":
        return
    from tokenabacus.governance.quotas import config_limits
    from tokenabacus.governance.runtime import owner_id
    from tokenabacus.governance.sharing import SharedWithoutRedis, take_at_start

    g = settings.governance
    has_limits = bool(config_limits(g.declared_quotas())) or bool(store.quotas.limits())
    try:
        take_at_start(store.db, owner_id(settings), g.local_counters_lease_s, has_limits)
    except SharedWithoutRedis as e:
        fail(f"cannot start: {e}")
