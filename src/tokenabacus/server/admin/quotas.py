"""/admin/quotas and /admin/quota-requests: limits, their status and the approval flow over HTTP.

Admins change limits and decide requests; viewers read the limits of their department or project;
members read the limits that apply to them. Anyone may ask for more quota for a scope they can
see. Status comes from the running gateway's counters, so it includes requests in flight.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import Response
from pydantic import Field, model_validator

from tokenabacus.calendar import now_ms
from tokenabacus.governance import quotaview
from tokenabacus.governance.keys import MEMBER, Identity
from tokenabacus.governance.placement import check_scope
from tokenabacus.governance.quotas import Limit
from tokenabacus.governance.roles import can_see_scope, require_admin
from tokenabacus.ledger.admin_events import Actor
from tokenabacus.server.admin.common import Body, Format, export

if TYPE_CHECKING:
    from tokenabacus.server.state import Gateway

Scope = Literal["key", "user", "project", "department", "global"]


class LimitBody(Body):
    scope: Scope
    name: str | None = Field(None, max_length=200)
    model: str | None = Field(None, max_length=200)
    tokens: int | None = Field(None, ge=0, le=10**15)
    requests: int | None = Field(None, ge=0, le=10**15)
    cost: str | int | float | None = None  # money in ``currency`` (a decimal string keeps it exact)
    currency: str = "CNY"
    period: Literal["minute", "day", "week", "month", "total"] = "day"

    @model_validator(mode="after")
    def _check(self) -> LimitBody:
        if (self.scope == "global") == bool(self.name):
            raise ValueError("name the scope's key id, user, project or department (none for global)")
        self.metric_amount()
        return self

    def metric_amount(self) -> tuple[str, int]:
        tokens, requests = self.tokens, self.requests
        cost = None if self.cost is None else str(self.cost)
        return quotaview.check_metric(tokens, requests, cost, self.currency)


class AskBody(Body):
    scope: Literal["key", "user", "project", "department"]
    name: str = Field(..., min_length=1, max_length=200)
    model: str | None = Field(None, max_length=200)
    tokens: int | None = Field(None, gt=0, le=10**15)
    requests: int | None = Field(None, gt=0, le=10**15)
    cost: str | int | float | None = None
    currency: str = "CNY"
    reason: str = Field(..., min_length=1, max_length=2000)

    @model_validator(mode="after")
    def _check(self) -> AskBody:
        if self.metric_amount()[1] <= 0:
            raise ValueError("ask for a positive amount")
        return self

    def metric_amount(self) -> tuple[str, int]:
        cost = None if self.cost is None else str(self.cost)
        return quotaview.check_metric(self.tokens, self.requests, cost, self.currency)


class Decision(Body):
    tokens: int | None = Field(None, gt=0)
    requests: int | None = Field(None, gt=0)
    cost: str | int | float | None = None  # money granted, in the request's currency
    reason: str | None = Field(None, max_length=2000)

    def amount(self) -> int | None:
        if self.cost is not None:
            from tokenabacus.money import parse_amount

            return parse_amount(str(self.cost), "cost")
        return self.tokens if self.tokens is not None else self.requests


def _who(ident: Identity) -> str:
    return f"{ident.role}:{ident.name or ident.user or ident.key_id}"


def actor_of(gw: Gateway, request: Request) -> Actor:
    """The calling key and the client address the admin API judged, for admin events."""
    ident: Identity = request.state.identity
    peer = request.client.host if request.client else None
    return Actor(ident.key_id, ident.name, gw.client_ip(request.scope, peer))


def applies_to(ident: Identity, kind: str, value: str | None) -> bool:
    """A limit that judges this key's own requests (a member reads these)."""
    own = {"key": ident.key_id, "user": ident.user, "project": ident.project, "department": ident.department}
    return kind == "global" or (value is not None and own.get(kind) == value)


def _admin_only(request: Request) -> None:
    # A dependency: refused before the body is even read.
    require_admin(request.state.identity)


def quota_routes(gw: Gateway) -> APIRouter:
    router = APIRouter(tags=["quotas"])

    async def visibility(ident: Identity) -> Callable[[str, str | None], bool]:
        """Who sees which scope's limits: roles.can_see_scope, plus, for a member, every limit
        that applies to its own requests (its project's and department's too)."""
        if ident.admin:
            return lambda _k, _v: True
        if ident.role == MEMBER:
            return lambda kind, value: applies_to(ident, kind, value)
        org = gw.store.org
        depts = {r["name"]: r["department"] for r in await asyncio.to_thread(org.projects)}
        places = {("user", r["name"]): (r["project"], r["department"]) for r in await asyncio.to_thread(org.users)}
        return lambda kind, value: can_see_scope(ident, kind, value, depts.get, places.get((kind, value or "")))

    async def usage_fn(lims: list[Limit]) -> quotaview.UsageFn:
        now = now_ms()
        lset = gw.governance.admission.limits
        keys = [lim.counter_key(lset.window(lim, now)[0]) for lim in lims]
        await gw.governance.ensure_counters(lims, now)  # a counter not seeded yet would read as zero
        figures = dict(zip(keys, await gw.governance.counters.usage(keys), strict=True))
        return lambda lim, start: figures.get(lim.counter_key(start), (0, 0))

    @router.get("/quotas", summary="The limits in force (config and run time)")
    async def list_limits(request: Request) -> list[dict]:
        sees = await visibility(request.state.identity)
        return [r for r in quotaview.limit_rows(gw.governance.admission.limits) if sees(r["scope"], r["name"])]

    @router.post(
        "/quotas",
        status_code=201,
        summary="Set a limit (or change an existing one's number)",
        dependencies=[Depends(_admin_only)],
    )
    async def set_limit(request: Request, body: LimitBody) -> dict:
        ident: Identity = request.state.identity
        metric, amount = body.metric_amount()
        try:  # a department, project or user the organization does not know limits nobody
            await asyncio.to_thread(check_scope, gw.store.org, body.scope, body.name)
        except ValueError as e:
            raise HTTPException(400, str(e)) from None
        row = await asyncio.to_thread(
            gw.store.quotas.set,
            body.scope,
            body.name,
            body.model,
            metric,
            body.period,
            amount,
            _who(ident),
            actor_of(gw, request),
        )
        await gw.governance.refresh(force=True)  # this gateway at once; others within the refresh interval
        return row

    @router.delete("/quotas/{quota_id}", summary="Delete a limit set at run time", dependencies=[Depends(_admin_only)])
    async def delete_limit(request: Request, quota_id: str) -> dict:
        if quota_id.startswith("cfg_"):
            raise HTTPException(400, f"{quota_id} is declared in the config file: change it there")
        if not await asyncio.to_thread(gw.store.quotas.delete, quota_id, actor_of(gw, request)):
            raise HTTPException(404, f"no limit with id {quota_id!r}")
        await gw.governance.refresh(force=True)
        return {"quota_id": quota_id, "deleted": True}

    @router.get("/quotas/status", summary="Use, limit, grants and reset time of each visible limit")
    async def limit_status(
        request: Request, scope: Scope | None = None, name: str | None = None, format: Format = "json"
    ) -> Response:
        sees = await visibility(request.state.identity)
        lims = gw.governance.admission.limits
        visible = [lim for lim in lims.limits if sees(lim.scope_kind, lim.scope_value)]
        only = (scope, name if scope != "global" else None) if scope else None
        usage = await usage_fn(visible)
        rows = quotaview.status(lims, usage, lambda lim: sees(lim.scope_kind, lim.scope_value), only)
        return export(rows, quotaview.STATUS_COLUMNS, format, "quotas", "Quota status", rows)

    @router.post("/quota-requests", status_code=201, summary="Ask for more quota for the current period")
    async def ask(request: Request, body: AskBody) -> dict:
        ident: Identity = request.state.identity
        if not (await visibility(ident))(body.scope, body.name):
            raise HTTPException(403, f"you may not ask for quota for {body.scope} {body.name!r}")
        metric, amount = body.metric_amount()
        return await asyncio.to_thread(
            gw.store.quotas.request, body.scope, body.name, body.model, metric, amount, body.reason, _who(ident)
        )

    @router.get("/quota-requests", summary="Quota requests (pending by default) of visible scopes")
    async def list_asks(
        request: Request, status: Literal["pending", "approved", "denied"] | None = "pending", format: Format = "json"
    ) -> Response:
        sees = await visibility(request.state.identity)
        rows = await asyncio.to_thread(gw.store.quotas.requests, status)
        rows = [r for r in rows if sees(r["scope_kind"], r["scope_value"])]
        return export(rows, quotaview.REQUEST_COLUMNS, format, "quota-requests", "Quota requests", rows)

    async def decide(request: Request, request_id: str, approve: bool, body: Decision) -> dict:
        ident: Identity = request.state.identity
        pending = await asyncio.to_thread(gw.store.quotas.get_request, request_id)
        if pending is None or pending["status"] != "pending":
            raise HTTPException(404, f"no pending quota request with id {request_id!r}")
        try:
            granted = body.amount()
        except ValueError as e:
            raise HTTPException(400, str(e)) from None
        if approve and granted is not None and granted > pending["amount"]:
            raise HTTPException(400, f"cannot grant more than the {pending['amount']} asked for")
        if not approve and not (body.reason or "").strip():
            raise HTTPException(400, "a denial needs a reason")
        row = await asyncio.to_thread(
            gw.store.quotas.decide, request_id, approve, _who(ident), body.reason, granted, actor_of(gw, request)
        )
        if row is None:
            raise HTTPException(409, f"quota request {request_id} was decided by someone else meanwhile")
        await gw.governance.refresh(force=True)
        return row

    @router.post(
        "/quota-requests/{request_id}/approve",
        summary="Approve (optionally a smaller amount)",
        dependencies=[Depends(_admin_only)],
    )
    async def approve(request: Request, request_id: str, body: Decision | None = None) -> dict:
        return await decide(request, request_id, True, body or Decision())

    @router.post(
        "/quota-requests/{request_id}/deny", summary="Deny, with a reason", dependencies=[Depends(_admin_only)]
    )
    async def deny(request: Request, request_id: str, body: Decision) -> dict:
        return await decide(request, request_id, False, body)

    return router
