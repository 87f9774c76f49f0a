"""`tokenabacus models status`: the running gateway's models as operators watch them: engine,
readiness, queue, and for engines with ``metrics_url`` their own token counters beside ours."""

from __future__ import annotations

from typing import Annotated

import orjson
import typer

from tokenabacus.cli.common import ConfigOpt, DataDirOpt, settings_for
from tokenabacus.cli.output import Fmt, emit, fail

COLS = [
    "model",
    "engine",
    "ready",
    "running",
    "waiting",
    "kv_cache_usage",
    "engine_prompt_tokens",
    "ledger_prompt_tokens",
    "prompt_drift",
    "engine_generation_tokens",
    "ledger_completion_tokens",
    "generation_drift",
    "seconds",
    "metrics",
]


def register(app: typer.Typer) -> None:
    models = typer.Typer(help="The running gateway's models.", no_args_is_help=True)
    models.command("status")(status)
    app.add_typer(models, name="models")


def rows(status: dict) -> list[dict]:
    out = []
    for name, m in status.items():
        rec = m.get("reconcile") or {}
        since = rec.get("since_start") or {}
        occ = rec.get("occupancy") or {}
        queue = m.get("queue") or {}
        out.append(
            {
                "model": name,
                "engine": m.get("engine"),
                "ready": m.get("ready"),
                # The engine's own occupancy when it reports it, else the gateway's queue for it.
                "running": occ.get("running", queue.get("running")),
                "waiting": occ.get("waiting", queue.get("waiting")),
                "kv_cache_usage": occ.get("kv_cache_usage"),
                **{k: since.get(k) for k in COLS[6:13]},
                "metrics": ("ok" if rec.get("ok") else rec.get("error") or "no scrape yet") if rec else None,
            }
        )
    return out


def status(
    url: Annotated[str | None, typer.Option(help="The gateway (default: server.host and server.port).")] = None,
    admin_key: Annotated[
        str | None, typer.Option("--admin-key", envvar="TOKENABACUS_ADMIN_KEY", help="An admin key.")
    ] = None,
    fmt: Annotated[Fmt, typer.Option("--format", help="table, json or csv.")] = Fmt.table,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Readiness, occupancy and the engine's token counters against the ledger's (since the
    gateway started; drift = engine - ledger)."""
    import httpx

    s = settings_for(config, data_dir)
    if not admin_key:
        fail("an admin key is needed: --admin-key or TOKENABACUS_ADMIN_KEY")
    host = "127.0.0.1" if s.server.host in ("0.0.0.0", "::") else s.server.host
    base = (url or f"http://{host}:{s.server.port}").rstrip("/")
    try:
        r = httpx.get(f"{base}/admin/models/status", headers={"Authorization": f"Bearer {admin_key}"}, timeout=10)
    except httpx.HTTPError as e:
        fail(f"cannot reach the gateway at {base}: {e}")
    if r.status_code != 200:
        try:
            message = r.json()["error"]["message"]
        except Exception:
            message = r.text[:200]
        fail(f"{base} answered {r.status_code}: {message}")
    data = r.json()
    if fmt == Fmt.json:
        typer.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())
        return
    emit(rows(data), COLS, fmt, title="Models")
