"""/admin/me: any valid key reads who it is and its own usage."""

from __future__ import annotations

import asyncio
from datetime import UTC
from typing import TYPE_CHECKING, Annotated

from fastapi import APIRouter, HTTPException, Query

from tokenabacus.billing.reports import check_status, parse_when
from tokenabacus.server.admin.common import Caller

if TYPE_CHECKING:
    from tokenabacus.server.state import Gateway


def me_routes(gw: Gateway) -> APIRouter:
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
