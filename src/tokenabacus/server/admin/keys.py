"""/admin/keys: list them (admins and viewers; a viewer sees the keys of its department or
project), create one (shown once, with a role, scope, IP allowlist, expiry and budget), rotate its
secret and revoke one (admins)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Annotated, Literal

import orjson
from fastapi import APIRouter, HTTPException, Request
from pydantic import Field

from tokenabacus.calendar import now_ms, zone_named
from tokenabacus.config import check_cidrs
from tokenabacus.governance import keylife
from tokenabacus.governance.keys import create_key, key_owner
from tokenabacus.governance.roles import can_see_scope, key_scope
from tokenabacus.server.admin.common import Body, Caller
from tokenabacus.server.admin.quotas import actor_of

if TYPE_CHECKING:
    from tokenabacus.server.state import Gateway

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
    expires_at: Name | None = None  # a date (valid through it) or date-time, in governance.timezone
    ttl: Name | None = None  # or a lifetime: 90d, 12h, 2w, 30m, 10s
    budget: str | int | float | None = None  # a cost limit on the key, in ``currency`` per ``period``
    budget_tokens: int | None = None  # or a token limit
    currency: Name = "CNY"
    period: Name = "month"


class Rotate(Body):
    grace: Name = keylife.DEFAULT_GRACE  # how long the old secret keeps working


def public(row: dict) -> dict:
    """A key row as shown: never its hash (nor its old one); its allowed addresses as a list."""
    out = {k: v for k, v in row.items() if k not in ("key_hash", "previous_hash")}
    out["allow_ips"] = orjson.loads(out["allow_ips"]) if out.get("allow_ips") else None
    return out


def key_routes(gw: Gateway) -> tuple[APIRouter, APIRouter]:
    """(reads for admins and viewers, writes for admins)."""
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
            return [public(k) for k in rows]

        return await asyncio.to_thread(run)

    w = APIRouter()

    @w.post(
        "/keys",
        status_code=201,
        summary="Create an API key (shown once) with a role, scope and IP allowlist",
        tags=["keys"],
    )
    async def new_key(body: KeyCreate, request: Request) -> dict:
        zone = zone_named(gw.settings.governance.timezone)
        try:
            expires_at = keylife.expires_at(body.expires_at, body.ttl, zone)
            budget = None if body.budget is None else str(body.budget)
            limit = keylife.budget_metric(budget, body.budget_tokens, body.currency, body.period)
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

        actor = actor_of(gw, request)
        ident = request.state.identity

        def run() -> tuple[str, dict, dict | None]:
            owner = key_owner(
                gw.settings.keys.defaults, body.user, body.project, body.department, gw.store.org, body.role
            )
            # A key with a lifetime or a budget leaves an admin event (a plain one is as it always was).
            logged = actor if expires_at is not None or limit is not None else None
            key, row = create_key(
                gw.store,
                owner.user,
                owner.project,
                owner.department,
                body.name,
                body.role,
                scope,
                cidrs,
                expires_at,
                logged,
            )
            quota = None
            if limit is not None:
                who = f"{ident.role}:{ident.name or ident.user or ident.key_id}"  # as /admin/quotas writes it
                quota = keylife.set_budget(gw.store, row["key_id"], limit[0], limit[1], body.period, who, actor)
            return key, row, quota

        try:
            key, row, quota = await asyncio.to_thread(run)
        except ValueError as e:  # NoOwner
            raise HTTPException(400, str(e)) from None
        out = {"key": key, **public(row)}
        if quota is not None:
            out["quota_id"] = quota["quota_id"]
            out["budget"] = keylife.budget_label(quota)
        return out

    @w.post(
        "/keys/{key_id}/rotate",
        summary="Give a key a new secret (shown once); the old one works for a grace period",
        tags=["keys"],
    )
    async def rotate(key_id: str, request: Request, body: Rotate | None = None) -> dict:
        try:
            grace_ms = keylife.parse_duration((body or Rotate()).grace, "grace")
        except ValueError as e:
            raise HTTPException(400, str(e)) from None
        done = await asyncio.to_thread(keylife.rotate_key, gw.store, key_id, grace_ms, actor_of(gw, request))
        if done is None:
            raise HTTPException(404, f"no active key with id {key_id!r}")
        return {"key": done.key, **public(done.row)}

    @w.delete("/keys/{key_id}", summary="Revoke an API key; gateways refuse it within seconds", tags=["keys"])
    async def revoke(key_id: str) -> dict:
        if not await asyncio.to_thread(gw.store.keys.revoke, key_id, now_ms()):
            raise HTTPException(404, f"no active key with id {key_id!r}")
        return {"key_id": key_id, "revoked": True}

    return r, w
