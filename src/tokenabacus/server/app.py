"""The app factory: Starlette routing over plain ASGI handlers; one Gateway per app."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hmac
import logging
import os

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from tokenabacus.api.errors import APIError, internal_error
from tokenabacus.config import Settings
from tokenabacus.ledger.record import new_request_id
from tokenabacus.ledger.store import Store
from tokenabacus.server.admin.app import create_admin_app
from tokenabacus.server.admin.auth import bearer
from tokenabacus.server.asgi import send_json
from tokenabacus.server.bodylimit import BodyLimit
from tokenabacus.server.console import Console
from tokenabacus.server.state import Gateway
from tokenabacus.server.v1 import V1

log = logging.getLogger(__name__)
METRICS_TOKEN_ENV = "TOKENABACUS_METRICS_TOKEN"


class _Endpoint:
    """Wraps a handler so Starlette treats it as an ASGI app and any escape becomes a clean 500."""

    def __init__(self, handler: ASGIApp) -> None:
        self.handler = handler

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.handler(scope, receive, send)
        except Exception:
            log.exception("unhandled error on %s", scope.get("path"))
            try:
                await send_json(send, 500, internal_error().body())
            except Exception:
                pass  # the response had already started


class GatewayApp:
    """The /v1 completion routes go straight to their handlers (no middleware or router walk on
    the hot path; they hold their bodies to the limit themselves); everything else, lifespan
    included, goes through Starlette behind the same body limit."""

    def __init__(self, app: Starlette, fast: dict[tuple[str, str], _Endpoint], max_body: int) -> None:
        self.app = app
        self.fast = fast
        self.state = app.state
        self.limited = BodyLimit(app, max_body)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            handler = self.fast.get((scope["method"], scope["path"]))
            if handler is not None:
                return await handler(scope, receive, send)
            return await self.limited(scope, receive, send)
        await self.app(scope, receive, send)


def create_app(settings: Settings, store: Store | None = None) -> GatewayApp:
    """``store``: a ledger already opened (the CLI opens it first to fail with one line)."""
    gw = Gateway(settings, store=store)
    v1 = V1(gw)
    console = Console(gw) if settings.console.enabled else None

    async def health(request: Request) -> Response:
        # Open for load balancers; upstream addresses, file paths and errors only for the admin key.
        # A wrong key gets the open view, but counts as a failure: this must not be a free oracle.
        detail = admin_view(gw, request.scope)
        return Response(orjson.dumps(gw.health(detail)), media_type="application/json")

    metrics_token = settings.metrics.bearer_token or os.environ.get(METRICS_TOKEN_ENV)

    async def metrics(request: Request) -> Response:
        if not settings.metrics.enabled:
            return await not_found(request, HTTPException(404))
        if metrics_token:
            refused = scraper_refusal(gw, request.scope, metrics_token)
            if refused is not None:
                return refused
        # Reading live state touches the spool directory: off the event loop.
        body = await asyncio.to_thread(generate_latest, gw.metrics.registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    async def not_found(request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 404)
        msg = "Unknown route." if status == 404 else "Method not allowed."
        body = APIError(
            status,
            f"{msg} {request.method} {request.url.path}",
            "invalid_request_error",
            None,
            "not_found" if status == 404 else "method_not_allowed",
        ).body()
        return Response(
            body, status_code=status, media_type="application/json", headers={"x-request-id": new_request_id()}
        )

    @contextlib.asynccontextmanager
    async def lifespan(app):
        await gw.start()
        # Everything loaded so far (tokenizers, templates, engines) lives as long as the process:
        # keep it out of the collector's way so full collections stay cheap under load.
        gc.collect()
        gc.freeze()
        gc.set_threshold(20_000, 50, 100)  # per-request garbage is mostly acyclic: collect less often
        if gw.new_admin_key:
            # Shown once; only its hash is stored.
            print(f"\nAdmin key (shown once, store it safely): {gw.new_admin_key}\n", flush=True)
        try:
            yield
        finally:
            await gw.stop()

    chat, completions = _Endpoint(v1.chat), _Endpoint(v1.completions)
    routes = [
        Route("/v1/chat/completions", chat, methods=["POST"]),
        Route("/v1/completions", completions, methods=["POST"]),
        Route("/v1/models", _Endpoint(v1.models), methods=["GET"]),
        Route("/v1/models/{model:path}", _Endpoint(v1.models), methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Mount("/admin", app=create_admin_app(gw, console)),
        *(console.routes() if console else []),
    ]
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={404: not_found, 405: not_found})
    app.state.gateway = gw
    fast = {("POST", "/v1/chat/completions"): chat, ("POST", "/v1/completions"): completions}
    return GatewayApp(app, fast, settings.server.max_body_bytes)


def admin_view(gw: Gateway, scope: Scope) -> bool:
    """Does /health's caller hold the admin key? Behind the brake: a locked-out caller, or one
    whose key is wrong (a failure counted), gets the open view."""
    key = bearer(scope)
    if key is None:
        return False
    ip = gw.caller_ip(scope)
    if gw.auth.refusal("health", ip, key) is not None:
        return False
    if gw.keys.is_admin(key):
        return True
    if gw.keys.lookup(key) is None and gw.keys.revoked_key_id(key) is None:
        gw.auth.failed("health", ip, key)  # a member's own key is not a guess
    return False


def scraper_refusal(gw: Gateway, scope: Scope, token: str) -> Response | None:
    """None when /metrics' caller sends the metrics token; else a 401, or a 429 for a caller
    locked out by the brake (a wrong token counts as a failed authentication)."""
    sent = bearer(scope)
    ip = gw.caller_ip(scope)
    if sent is not None:
        locked = gw.auth.refusal("metrics", ip, sent)
        if locked is not None:
            return Response(locked.body(), 429, locked.headers, media_type="application/json")
        if hmac.compare_digest(sent.encode(), token.encode()):
            return None
        gw.auth.failed("metrics", ip, sent)
    return Response(
        "metrics need `Authorization: Bearer <metrics token>`\n",
        status_code=401,
        media_type="text/plain",
        headers={"www-authenticate": "Bearer"},
    )
