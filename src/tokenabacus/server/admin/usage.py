"""/admin/usage (the request log, filtered and paged, with exports), /admin/usage/{request_id}
(one record) and /admin/alerts (alerts fired). Admins and viewers; a viewer's reads are cut to its
department or project, and a record or alert outside it is "not found", never a hint that it exists.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Annotated

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import Response

from tokenabacus.billing.reports import check_status, parse_when
from tokenabacus.calendar import zone_named
from tokenabacus.governance.keys import Identity
from tokenabacus.governance.roles import can_see_scope, read_filters
from tokenabacus.ledger.record import FIELDS
from tokenabacus.server.admin.common import Caller, Format, export

if TYPE_CHECKING:
    from tokenabacus.server.state import Gateway

LOG_COLUMNS = [f for f in FIELDS if f not in ("prev_hash", "hash")]
ALERT_COLUMNS = ["id", "fired_at", "rule", "kind", "severity", "scope", "period", "figure", "baseline", "threshold"]
ALERT_COLUMNS += ["message"]
_SCOPE_KINDS = {"department": "department", "project": "project", "user": "user", "key_id": "key"}


def usage_routes(gw: Gateway) -> APIRouter:
    r = APIRouter(tags=["usage"])

    def tz_or_default(tz: str | None) -> str:
        zone = tz or gw.settings.governance.timezone
        try:
            zone_named(zone)
        except ValueError as e:
            raise HTTPException(400, str(e)) from None
        return zone

    @r.get("/usage", summary="The request log: ledger records newest first, filtered and paged (a viewer's scoped)")
    async def usage(
        ident: Caller,
        limit: Annotated[int, Query(ge=1, le=10000)] = 100,
        offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
        since: str | None = None,
        until: str | None = None,
        tz: str | None = None,
        project: str | None = None,
        user: str | None = None,
        department: str | None = None,
        model: str | None = None,
        status: str | None = None,
        key_id: str | None = None,
        client_ip: str | None = None,
        format: Format = "json",
    ) -> Response:
        """`since` and `until` are dates or date-times read in `tz` (default: governance.timezone),
        or UTC when they carry an offset; `until` is exclusive."""
        zone = zone_named(tz_or_default(tz))
        try:
            check_status(status)
            since_ms = parse_when(since, zone, "since") if since else None
            until_ms = parse_when(until, zone, "until") if until else None
        except ValueError as e:
            raise HTTPException(400, str(e)) from None
        asked = {"project": project, "user": user, "department": department, "model": model, "status": status}
        asked |= {"key_id": key_id, "client_ip": client_ip}

        def run() -> list[dict]:
            filters = read_filters(ident, asked, gw.store.org.department_of)
            return gw.store.usage.latest(limit, since_ms, until_ms, offset, **filters)

        rows = await asyncio.to_thread(run)
        return export(rows, LOG_COLUMNS, format, "requests", "Request log", rows)

    @r.get("/usage/{request_id}", summary="One ledger record, every field (404 outside a viewer's scope)")
    async def one(ident: Caller, request_id: str) -> dict:
        def run() -> dict | None:
            row = gw.store.usage.one(request_id)
            scope = read_filters(ident, {}, gw.store.org.department_of)
            if row is None or any(row.get(k) != v for k, v in scope.items()):
                return None
            return row

        row = await asyncio.to_thread(run)
        if row is None:
            raise HTTPException(404, f"no record with request id {request_id!r}")
        return row

    @r.get("/alerts", summary="Alerts fired, newest first (a viewer's: those about its scope)", tags=["alerts"])
    async def alerts(
        ident: Caller,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        since: str | None = None,
        rule: str | None = None,
        tz: str | None = None,
        format: Format = "json",
    ) -> Response:
        zone = zone_named(tz_or_default(tz))
        try:
            since_ms = parse_when(since, zone, "since") if since else None
        except ValueError as e:
            raise HTTPException(400, str(e)) from None

        def run() -> list[dict]:
            rows = gw.store.alerts.history(since_ms, rule, limit)
            if not ident.admin:
                rows = [a for a in rows if _sees_alert(ident, a["scope"], gw.store.org.department_of)]
            return rows

        rows = await asyncio.to_thread(run)
        return export(rows, ALERT_COLUMNS, format, "alerts", "Alerts fired", rows)

    return r


def _sees_alert(ident: Identity, scope: str, department_of) -> bool:
    """An alert's scope reads ``dimension=value`` (then details); a viewer sees the alerts about
    its department or project and what is in it, not global ones or other dimensions."""
    dim, _, rest = scope.partition("=")
    kind = _SCOPE_KINDS.get(dim.strip())
    if kind is None:
        return False
    return can_see_scope(ident, kind, rest.split(" ", 1)[0], department_of)
