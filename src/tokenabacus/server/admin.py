"""The /admin API (FastAPI): keys and ledger reads for operators, behind the admin key.

Everything here touches the database, so every call runs in a worker thread; none of it is on
the /v1 hot path.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC
from typing import TYPE_CHECKING, Annotated

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from tokenabacus.api.errors import APIError, bad_request, internal_error, unauthorized
from tokenabacus.billing.reports import build_query, check_status, parse_when, run_report
from tokenabacus.governance.keys import NoOwner, create_key, key_owner
from tokenabacus.ledger.record import now_ms

if TYPE_CHECKING:
    from tokenabacus.server.state import Gateway

log = logging.getLogger(__name__)
_CODES = {401: "invalid_api_key", 404: "not_found", 405: "method_not_allowed"}


class KeyCreate(BaseModel):
    user: str | None = Field(None, max_length=200)
    project: str | None = Field(None, max_length=200)
    department: str | None = Field(None, max_length=200)
    name: str | None = Field(None, max_length=200)


def _respond(err: APIError) -> Response:
    """OpenAI's error JSON, built by the same APIError as every /v1 error."""
    return Response(err.body(), err.status, media_type="application/json")


class _AdminOnly:
    """Checks the admin key before routing, so every path under /admin (present, future or
    unknown) answers 401 without it, and every failure inside answers OpenAI's error JSON."""

    def __init__(self, app, gw: Gateway) -> None:
        self.app = app
        self.gw = gw

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        auth = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"authorization"), None)
        if not self.gw.keys.is_admin_header(auth):
            return await _respond(unauthorized("admin key required"))(scope, receive, send)
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
                await _respond(internal_error())(scope, receive, send)


def create_admin_app(gw: Gateway) -> FastAPI:
    app = FastAPI(title="tokenabacus admin", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(_AdminOnly, gw=gw)

    # Starlette's class, not FastAPI's subclass: unknown routes and wrong methods raise that one.
    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        code = _CODES.get(exc.status_code, "invalid_request")
        message = str(exc.detail)
        if exc.status_code in (404, 405) and message in ("Not Found", "Method Not Allowed"):
            what = "Unknown route" if exc.status_code == 404 else "Method not allowed"
            message = f"{what}: {request.method} {request.url.path}"
        resp = _respond(APIError(exc.status_code, message, code=code))
        if exc.headers:
            resp.headers.update(exc.headers)  # Allow on 405
        return resp

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc) -> Response:
        first = exc.errors()[0] if getattr(exc, "errors", None) else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return _respond(bad_request(f"{where}: {first.get('msg', 'invalid request')}", code="invalid_request"))

    @app.get("/keys")
    async def list_keys(include_revoked: bool = False) -> list[dict]:
        rows = await asyncio.to_thread(gw.store.keys.list, include_revoked)
        return [{k: v for k, v in r.items() if k != "key_hash"} for r in rows]

    @app.post("/keys", status_code=201)
    async def new_key(body: KeyCreate) -> dict:
        try:
            owner = key_owner(gw.settings.keys.defaults, body.user, body.project, body.department)
        except NoOwner as e:
            raise HTTPException(400, str(e)) from None
        key, row = await asyncio.to_thread(create_key, gw.store, owner.user, owner.project, owner.department, body.name)
        return {"key": key, **{k: v for k, v in row.items() if k != "key_hash"}}

    @app.delete("/keys/{key_id}")
    async def revoke(key_id: str) -> dict:
        if not await asyncio.to_thread(gw.store.keys.revoke, key_id, now_ms()):
            raise HTTPException(404, f"no active key with id {key_id!r}")
        return {"key_id": key_id, "revoked": True}

    @app.get("/usage")
    async def usage(
        limit: Annotated[int, Query(ge=1, le=10000)] = 100,
        since: str | None = None,
        project: str | None = None,
        user: str | None = None,
        department: str | None = None,
        model: str | None = None,
        status: str | None = None,
    ) -> list[dict]:
        try:
            check_status(status)
            since_ms = parse_when(since, UTC, "since") if since else None
        except ValueError as e:
            raise HTTPException(400, str(e)) from None
        return await asyncio.to_thread(
            gw.store.usage.latest,
            limit,
            since_ms,
            project=project,
            user=user,
            department=department,
            model=model,
            status=status,
        )

    @app.get("/report")
    async def report(
        by: str = "project",
        since: str | None = None,
        until: str | None = None,
        tz: str = "UTC",
        status: str | None = None,
    ) -> list[dict]:
        try:
            q = build_query(tuple(d.strip() for d in by.split(",") if d.strip()), since, until, tz, status)
        except ValueError as e:
            raise HTTPException(400, str(e).replace("--", "")) from None
        return await asyncio.to_thread(run_report, gw.store, q)

    return app
