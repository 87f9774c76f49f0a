"""/admin/events: the admin events (who changed or deleted which quota, who decided which quota
request, when and from where, with the row before and after), read-only and for admins only."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Annotated

import orjson
from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import Response

from tokenabacus.billing.reports import parse_when
from tokenabacus.calendar import zone_named
from tokenabacus.server.admin.common import Format, export

if TYPE_CHECKING:
    from tokenabacus.server.state import Gateway

EVENT_COLUMNS = ["id", "at_ms", "action", "target_id", "actor_key_id", "actor_name", "client_ip", "before", "after"]
Filter = Annotated[str | None, Query(max_length=200)]


def flat(rows: list[dict]) -> list[dict]:
    """Events for a CSV or a workbook: before and after as JSON text."""
    out = []
    for r in rows:
        out.append({**r, **{k: orjson.dumps(r[k]).decode() if r[k] is not None else None for k in ("before", "after")}})
    return out


def audit_routes(gw: Gateway) -> APIRouter:
    r = APIRouter(tags=["audit"])

    @r.get("/events", summary="Admin events, newest first: who changed what, when and from where")
    async def events(
        action: Filter = None,
        target: Filter = None,
        actor: Filter = None,
        since: Filter = None,
        until: Filter = None,
        tz: Annotated[str, Query(max_length=64)] = "UTC",
        limit: Annotated[int, Query(ge=1, le=10000)] = 100,
        format: Format = "json",
    ) -> Response:
        """`action`: one action (`quota.update`) or, ending in a dot, a family (`quota.`); `target`: a
        quota's or quota request's id; `actor`: a key id (`cli` for the command line); `since` and
        `until`: dates or date-times (naive ones in `tz`)."""
        try:
            zone = zone_named(tz)
            since_ms = parse_when(since, zone, "since") if since else None
            until_ms = parse_when(until, zone, "until") if until else None
        except (ValueError, OverflowError) as e:
            raise HTTPException(400, str(e)) from None
        rows = await asyncio.to_thread(gw.store.events.list, action, target, actor, since_ms, until_ms, limit)
        table = rows if format == "json" else flat(rows)
        return export(table, EVENT_COLUMNS, format, "events", "Admin events", rows)

    return r
