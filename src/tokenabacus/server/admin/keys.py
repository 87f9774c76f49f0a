"""/admin/keys: list them (admins and viewers; a viewer sees the keys of its department or
project), create one (shown once, with a role, scope and IP allowlist) and revoke one (admins)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Annotated, Literal

import orjson
from fastapi import APIRouter, HTTPException
from pydantic import Field

from tokenabacus.calendar import now_ms
from tokenabacus.config import check_cidrs
from tokenabacus.governance.keys import create_key, key_owner
from tokenabacus.governance.roles import can_see_scope, key_scope
from tokenabacus.server.admin.common import Body, Caller

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


def public(row: dict) -> dict:
    """A key row as shown: never its hash; its allowed addresses as a list."""
    out = {k: v for k, v in row.items() if k != "key_hash"}
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
        return {"key": key, **public(row)}

    @w.delete("/keys/{key_id}", summary="Revoke an API key; gateways refuse it within seconds", tags=["keys"])
    async def revoke(key_id: str) -> dict:
        if not await asyncio.to_thread(gw.store.keys.revoke, key_id, now_ms()):
            raise HTTPException(404, f"no active key with id {key_id!r}")
        return {"key_id": key_id, "revoked": True}

    return r, w
