"""The /admin API (FastAPI): keys, the organization, quotas and ledger reads, by role.

Every request names a key; the middleware resolves it to an Identity (``request.state.identity``)
and the routes' dependencies apply governance.roles: admin does everything, a viewer reads its
department or project, a member reads itself. Everything here touches the database, so every call
runs in a worker thread; none of it is on the /v1 hot path.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC
from typing import TYPE_CHECKING, Annotated, Literal

import orjson
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from tokenabacus.api.errors import APIError, bad_request
from tokenabacus.billing.reports import COLUMNS as REPORT_COLUMNS
from tokenabacus.billing.reports import build_query, check_status, parse_when, run_report
from tokenabacus.calendar import now_ms
from tokenabacus.config import check_cidrs
from tokenabacus.governance.errors import Forbidden
from tokenabacus.governance.keys import create_key, key_owner
from tokenabacus.governance.roles import can_see_scope, key_scope, read_filters, require_admin, require_reader
from tokenabacus.ledger.org import Conflict, NotFound, OrgError
from tokenabacus.server.admin_audit import audit_routes
from tokenabacus.server.admin_auth import Authenticated, error_json, forbidden_error
from tokenabacus.server.admin_common import Body, Caller, Format, export
from tokenabacus.server.admin_plan import plan_routes
from tokenabacus.server.admin_prices import price_routes
from tokenabacus.server.admin_quotas import quota_routes
from tokenabacus.server.admin_reports import Period, WindowArgs, report_routes, report_window
from tokenabacus.server.admin_usage import usage_routes

if TYPE_CHECKING:
    from tokenabacus.server.console import Console
    from tokenabacus.server.state import Gateway

_CODES = {401: "invalid_api_key", 404: "not_found", 405: "method_not_allowed"}
Name = Annotated[str, Field(max_length=200)]


class Scope(Body):
    kind: Literal["department", "project"]
    value: str = Field(min_length=1, max_length=200)


class KeyCreate(Body):
    user: Name | None = None
    project: Name | None = None
    department: Name | None = None
    name: Name | None = None
    role: Literal["member", "viewer", "admin"] = "member"
    scope: Scope | None = None  # a viewer's; else its department or project field is its scope
    allow_ips: list[str] | None = Field(None, min_length=1, max_length=256)  # CIDRs; absent: anywhere


class DepartmentIn(Body):
    name: str


class ProjectIn(Body):
    name: str
    department: str


class ProjectMove(Body):
    department: str


class UserIn(Body):
    name: str
    department: str | None = None
    project: str | None = None


class UserMove(Body):
    department: str | None = None
    project: str | None = None


# Dependencies: who the caller is, and the role a group of routes needs -------------------------
def _admin(ident: Caller) -> None:
    require_admin(ident)


def _reader(ident: Caller) -> None:
    require_reader(ident)


def _public(row: dict) -> dict:
    """A key row as shown: never its hash; its allowed addresses as a list."""
    out = {k: v for k, v in row.items() if k != "key_hash"}
    out["allow_ips"] = orjson.loads(out["allow_ips"]) if out.get("allow_ips") else None
    return out


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

    app.include_router(_me_routes(gw), tags=["me"])
    app.include_router(_read_routes(gw), dependencies=[Depends(_reader)])
    app.include_router(_write_routes(gw), dependencies=[Depends(_admin)])
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


def _me_routes(gw: Gateway) -> APIRouter:
    """Any valid key: who it is, and its own usage."""
    r = APIRouter()

    @r.get("/me", summary="The calling key: its identity, role and scope")
    async def me(ident: Caller) -> dict:
        return {
            "key_id": ident.key_id,
            "name": ident.name,
            "role": ident.role,
            "user": ident.user,
            "project": ident.project,
            "department": ident.department,
            "scope": {"kind": ident.scope_kind, "value": ident.scope_value} if ident.scope_kind else None,
            "allow_ips": [str(n) for n in ident.allow_ips] if ident.allow_ips is not None else None,
        }

    @r.get("/me/usage", summary="The calling key's own usage records, newest first")
    async def my_usage(
        ident: Caller,
        limit: Annotated[int, Query(ge=1, le=10000)] = 100,
        since: str | None = None,
        model: str | None = None,
        status: str | None = None,
    ) -> list[dict]:
        try:
            check_status(status)
            since_ms = parse_when(since, UTC, "since") if since else None
        except ValueError as e:
            raise HTTPException(400, str(e)) from None
        return await asyncio.to_thread(
            gw.store.usage.latest, limit, since_ms, key_id=ident.key_id, model=model, status=status
        )

    return r


def _read_routes(gw: Gateway) -> APIRouter:
    """Admins and viewers; a viewer's reads are cut to its department or project."""
    r = APIRouter()

    def dept_of() -> dict[str, str | None]:
        return {p["name"]: p["department"] for p in gw.store.org.projects()}

    @r.get("/keys", summary="List API keys (never the keys themselves)", tags=["keys"])
    async def list_keys(ident: Caller, include_revoked: bool = False) -> list[dict]:
        def run() -> list[dict]:
            rows = gw.store.keys.list(include_revoked)
            if not ident.admin:
                where = dept_of().get
                rows = [
                    k for k in rows if can_see_scope(ident, "key", k["key_id"], where, (k["project"], k["department"]))
                ]
            return [_public(k) for k in rows]

        return await asyncio.to_thread(run)

    @r.get(
        "/report",
        summary="Requests, tokens, cost and latency grouped by any dimension and time bucket (a viewer's scoped)",
        tags=["usage"],
    )
    async def report(
        ident: Caller,
        by: str = "project",
        since: str | None = None,
        until: str | None = None,
        tz: str = "UTC",
        status: str | None = None,
        project: str | None = None,
        department: str | None = None,
        user: str | None = None,
        model: str | None = None,
        key_id: str | None = None,
        currency: str | None = None,
        sort: str | None = None,
        totals: bool = False,
        period: Period | None = None,
        previous: bool = False,
        month: str | None = None,
        format: Format = "json",
    ) -> Response:
        """One row per group (`by`: department, project, user, key_id, model, status, currency, day,
        week, month, hour of day; days cut in `tz`) from `since` to `until`, or over a `period`
        (today, week, month; `previous`: the one before) or a `month` (YYYY-MM). `totals=true` adds
        sub-totals by the first dimension and a grand total, each row marked in `row` (group,
        subtotal, total)."""
        dims = tuple(d.strip() for d in by.split(",") if d.strip())
        asked = {
            "project": project,
            "department": department,
            "user": user,
            "model": model,
            "key_id": key_id,
            "currency": currency,
        }
        span = None
        if period or month:
            if since or until:
                raise HTTPException(400, "give since/until or a period or a month, not both")
            span = report_window(gw, WindowArgs(period, previous, month, tz=tz), "week")
        try:  # arguments are checked before the caller's scope is looked up
            build_query(dims, since, until, tz, status, sort=sort)
        except ValueError as e:
            raise HTTPException(400, str(e).replace("--", "")) from None

        def run() -> list[dict]:
            only = read_filters(ident, asked, gw.store.org.department_of)  # a viewer's scope, as filters
            q = build_query(dims, since, until, tz, status, {k: (v,) for k, v in only.items()}, sort)
            if span is not None:
                q = replace(q, since_ms=span.since_ms, until_ms=span.until_ms)
            return run_report(gw.store, q).flat(totals)

        rows = await asyncio.to_thread(run)
        columns = (["row"] if totals else []) + [*dims, *(c for c in REPORT_COLUMNS if c not in dims)]
        return export(rows, columns, format, "report", f"Report by {', '.join(dims) or 'total'}", rows)

    @r.get("/org/departments", summary="List departments (a viewer sees its own)", tags=["org"])
    async def list_departments(ident: Caller) -> list[dict]:
        rows = await asyncio.to_thread(gw.store.org.departments)
        return [d for d in rows if can_see_scope(ident, "department", d["name"])]

    @r.get("/org/projects", summary="List projects, optionally of one department (a viewer's scoped)", tags=["org"])
    async def list_projects(ident: Caller, department: str | None = None) -> list[dict]:
        def run() -> list[dict]:
            only = read_filters(ident, {"department": department}, gw.store.org.department_of)
            rows = gw.store.org.projects(only.get("department"))
            return [p for p in rows if only.get("project", p["name"]) == p["name"]]

        return await asyncio.to_thread(run)

    @r.get(
        "/org/users", summary="List users, optionally of one department or project (a viewer's scoped)", tags=["org"]
    )
    async def list_users(ident: Caller, department: str | None = None, project: str | None = None) -> list[dict]:
        def run() -> list[dict]:
            only = read_filters(ident, {"department": department, "project": project}, gw.store.org.department_of)
            return gw.store.org.users(only.get("department"), only.get("project"))

        return await asyncio.to_thread(run)

    return r


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


def _write_routes(gw: Gateway) -> APIRouter:
    """Admins only: keys and the organization."""
    r = APIRouter()

    @r.post(
        "/keys",
        status_code=201,
        summary="Create an API key (shown once) with a role, scope and IP allowlist",
        tags=["keys"],
    )
    async def new_key(body: KeyCreate) -> dict:
        try:
            scope = key_scope(
                body.role,
                body.project,
                body.department,
                body.name,
                (body.scope.kind, body.scope.value) if body.scope else None,
            )
            cidrs = check_cidrs(body.allow_ips) if body.allow_ips is not None else None
        except ValueError as e:
            raise HTTPException(400, str(e)) from None

        def run() -> tuple[str, dict]:
            owner = key_owner(
                gw.settings.keys.defaults, body.user, body.project, body.department, gw.store.org, body.role
            )
            return create_key(gw.store, owner.user, owner.project, owner.department, body.name, body.role, scope, cidrs)

        try:
            key, row = await asyncio.to_thread(run)
        except ValueError as e:  # NoOwner
            raise HTTPException(400, str(e)) from None
        return {"key": key, **_public(row)}

    @r.delete("/keys/{key_id}", summary="Revoke an API key; gateways refuse it within seconds", tags=["keys"])
    async def revoke(key_id: str) -> dict:
        if not await asyncio.to_thread(gw.store.keys.revoke, key_id, now_ms()):
            raise HTTPException(404, f"no active key with id {key_id!r}")
        return {"key_id": key_id, "revoked": True}

    @r.post("/org/departments", status_code=201, summary="Add a department", tags=["org"])
    async def add_department(body: DepartmentIn) -> dict:
        return await asyncio.to_thread(gw.store.org.add_department, body.name)

    @r.delete("/org/departments/{name:path}", summary="Delete an empty department", tags=["org"])
    async def delete_department(name: str) -> dict:
        await asyncio.to_thread(gw.store.org.delete_department, name)
        return {"name": name, "deleted": True}

    @r.post("/org/projects", status_code=201, summary="Add a project to a department", tags=["org"])
    async def add_project(body: ProjectIn) -> dict:
        return await asyncio.to_thread(gw.store.org.add_project, body.name, body.department)

    @r.patch("/org/projects/{name:path}", summary="Move a project (and its users) to another department", tags=["org"])
    async def move_project(name: str, body: ProjectMove) -> dict:
        return await asyncio.to_thread(gw.store.org.move_project, name, body.department)

    @r.delete("/org/projects/{name:path}", summary="Delete a project without users", tags=["org"])
    async def delete_project(name: str) -> dict:
        await asyncio.to_thread(gw.store.org.delete_project, name)
        return {"name": name, "deleted": True}

    @r.post("/org/users", status_code=201, summary="Add a user to a department or project", tags=["org"])
    async def add_user(body: UserIn) -> dict:
        return await asyncio.to_thread(gw.store.org.add_user, body.name, body.department, body.project)

    @r.patch("/org/users/{name:path}", summary="Move a user to another department or project", tags=["org"])
    async def move_user(name: str, body: UserMove) -> dict:
        return await asyncio.to_thread(gw.store.org.move_user, name, body.department, body.project)

    @r.delete("/org/users/{name:path}", summary="Delete a user", tags=["org"])
    async def delete_user(name: str) -> dict:
        await asyncio.to_thread(gw.store.org.delete_user, name)
        return {"name": name, "deleted": True}

    return r
