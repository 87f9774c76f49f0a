"""Who is calling /admin: the middleware that resolves a bearer key (or a console session) to an
Identity before any routing, behind the brake on guessing keys (server/auth_guard.py)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from fastapi.responses import Response

from tokenabacus.api.errors import APIError, internal_error, unauthorized
from tokenabacus.governance.access import check_key_ip
from tokenabacus.governance.errors import Forbidden
from tokenabacus.governance.keys import Identity
from tokenabacus.server.auth_guard import key_refusal

if TYPE_CHECKING:
    from tokenabacus.server.console import Console
    from tokenabacus.server.state import Gateway

log = logging.getLogger(__name__)


def error_json(err: APIError) -> Response:
    """OpenAI's error JSON, built by the same APIError as every /v1 error (with its headers)."""
    return Response(err.body(), err.status, err.headers or None, media_type="application/json")


def bearer(scope) -> str | None:
    auth = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"authorization"), "")
    if auth[:7].lower() != "bearer ":
        return None
    return auth[7:].strip() or None


class Authenticated:
    """Resolves the caller's key before routing, so every path under /admin (present, future or
    unknown) answers 401 without a valid one, and every failure inside answers OpenAI's error
    JSON. The Identity goes into the request's state for the routes' role checks. Without a
    bearer key, a console session cookie stands for the key that signed in (writes need the
    session's CSRF token too)."""

    def __init__(self, app, gw: Gateway, console: Console | None = None) -> None:
        self.app = app
        self.gw = gw
        self.console = console

    async def _identify(self, key: str) -> Identity | None:
        return await self.gw.keys.identify(key)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        key = bearer(scope)
        ip = self.gw.caller_ip(scope)
        if key is not None:
            locked = self.gw.auth.refusal("admin", ip, key)  # before the key is looked up
            if locked is not None:
                return await error_json(locked)(scope, receive, send)
        ident = await self._identify(key) if key else None
        if key is None and self.console is not None:
            found = await self.console.signed_in(scope)
            if found is not None:
                ident, session = found
                if not self.console.csrf_ok(scope, session):
                    err = APIError(403, "the console's CSRF token is missing or wrong", "permission_error", code="csrf")
                    return await error_json(err)(scope, receive, send)
        if ident is None:
            revoked = key is not None and self.gw.keys.revoked_key_id(key) is not None
            if key is not None and not revoked:
                self.gw.auth.failed("admin", ip, key)
            err = unauthorized("this API key has been revoked" if revoked else "a valid API key is required")
            err = key_refusal(self.gw.keys, key, self.gw.settings.governance.timezone, err)  # or: it expired
            return await error_json(err)(scope, receive, send)
        if ident.allow_ips is not None:
            try:
                check_key_ip(ident, ip)
            except Forbidden as e:
                return await error_json(forbidden_error(e))(scope, receive, send)
        scope = {**scope, "state": {**(scope.get("state") or {}), "identity": ident}}
        started = False

        async def tracked(message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception:
            log.exception("admin request %s %s failed", scope.get("method"), scope.get("path"))
            if not started:
                await error_json(internal_error())(scope, receive, send)


def forbidden_error(e: Forbidden) -> APIError:
    return APIError(403, e.message, "permission_error", None, e.code)
