"""The /admin API (FastAPI): keys, the organization, quotas and ledger reads, by role.

Every request names a key; the middleware resolves it to an Identity (``request.state.identity``)
and the routes' dependencies apply governance.roles: admin does everything, a viewer reads its
department or project, a member reads itself. Everything here touches the database, so every call
runs in a worker thread; none of it is on the /v1 hot path.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from tokenabacus.api.errors import APIError, bad_request
from tokenabacus.governance.errors import Forbidden
from tokenabacus.governance.roles import require_admin, require_reader
from tokenabacus.ledger.org import Conflict, NotFound, OrgError
from tokenabacus.server.admin.audit import audit_routes
from tokenabacus.server.admin.auth import Authenticated, error_json, forbidden_error
from tokenabacus.server.admin.common import Caller
from tokenabacus.server.admin.grouped import report_route
from tokenabacus.server.admin.keys import key_routes
from tokenabacus.server.admin.me import me_routes
from tokenabacus.server.admin.org import org_routes
from tokenabacus.server.admin.plan import plan_routes
from tokenabacus.server.admin.prices import price_routes
from tokenabacus.server.admin.quotas import quota_routes
from tokenabacus.server.admin.reports import report_routes
from tokenabacus.server.admin.usage import usage_routes

if TYPE_CHECKING:
    from tokenabacus.server.console import Console
    from tokenabacus.server.state import Gateway

_CODES = {401: "invalid_api_key", 404: "not_found", 405: "method_not_allowed"}


# Dependencies: the role a group of routes needs --------------------------------------------------
def _admin(ident: Caller) -> None:
    require_admin(ident)


def _reader(ident: Caller) -> None:
    require_reader(ident)


def create_admin_app(gw: Gateway, console: Console | None = None) -> FastAPI:
    app = FastAPI(
        title="tokenabacus admin",
        summary="Keys, organization, quotas and usage of a tokenabacus gateway; every route needs a key.",
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json",  # behind the middleware like everything else: any valid key reads it
    )
    app.add_middleware(Authenticated, gw=gw, console=console)

    # Starlette's class, not FastAPI's subclass: unknown routes and wrong methods raise that one.
    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        code = _CODES.get(exc.status_code, "invalid_request")
        message = str(exc.detail)
        if exc.status_code in (404, 405) and message in ("Not Found", "Method Not Allowed"):
            what = "Unknown route" if exc.status_code == 404 else "Method not allowed"
            message = f"{what}: {request.method} {request.url.path}"
        resp = error_json(APIError(exc.status_code, message, code=code))
        if exc.headers:
            resp.headers.update(exc.headers)  # Allow on 405
        return resp

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc) -> Response:
        first = exc.errors()[0] if getattr(exc, "errors", None) else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return error_json(bad_request(f"{where}: {first.get('msg', 'invalid request')}", code="invalid_request"))

    @app.exception_handler(Forbidden)
    async def forbidden(_: Request, exc: Forbidden) -> Response:
        return error_json(forbidden_error(exc))

    @app.exception_handler(OrgError)
    async def org_error(_: Request, exc: OrgError) -> Response:
        status, code = (404, "not_found") if isinstance(exc, NotFound) else (400, "invalid_request")
        if isinstance(exc, Conflict):
            status, code = 409, "conflict"
        return error_json(APIError(status, str(exc), code=code))

    # The order routes are matched and listed in /openapi.json.
    key_reads, key_writes = key_routes(gw)
    org_reads, org_writes = org_routes(gw)
    app.include_router(me_routes(gw), tags=["me"])
    app.include_router(key_reads, dependencies=[Depends(_reader)])
    app.include_router(report_route(gw), dependencies=[Depends(_reader)])  # grouped by any dimension
    app.include_router(org_reads, dependencies=[Depends(_reader)])
    app.include_router(key_writes, dependencies=[Depends(_admin)])
    app.include_router(org_writes, dependencies=[Depends(_admin)])
    app.include_router(_ops_routes(gw), dependencies=[Depends(_admin)])
    app.include_router(quota_routes(gw), prefix="", tags=["quotas"])  # checks roles itself
    money_reads, money_writes = price_routes(gw)  # prices, cost adjustments, hardware
    app.include_router(money_reads, dependencies=[Depends(_reader)])
    app.include_router(money_writes, dependencies=[Depends(_admin)])
    app.include_router(plan_routes(gw), dependencies=[Depends(_reader)])  # forecast, estimate, reconcile
    app.include_router(report_routes(gw), dependencies=[Depends(_reader)])  # top, peaks, ..., chargeback
    app.include_router(usage_routes(gw), dependencies=[Depends(_reader)])  # the request log, alerts
    app.include_router(audit_routes(gw), dependencies=[Depends(_admin)])  # admin events
    return app


def _ops_routes(gw: Gateway) -> APIRouter:
    """Admin only: the engines as operators watch them."""
    r = APIRouter()

    @r.get(
        "/models/status",
        summary="Each model's engine, readiness, queue, and reconciliation with the engine's own counters",
        tags=["models"],
    )
    async def models_status() -> dict:
        return gw.models_status()

    return r
