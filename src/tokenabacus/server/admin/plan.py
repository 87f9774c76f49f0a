"""/admin/forecast, /admin/estimate and /admin/reconcile: money ahead and money billed, over HTTP.

Mounted behind the admin app's reader dependency (admins and viewers). A viewer's forecast covers
its department or project only (governance.roles.read_filters); an estimate reads only the price
book, which viewers already read at /admin/prices. Reconciling a provider's bill is for admins: a
bill covers the whole organization, so a viewer's share of the ledger could only "differ" from it.
Model fitting and queries run in worker threads.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import TYPE_CHECKING, Annotated

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import Response

from tokenabacus.billing import bill as b
from tokenabacus.billing import forecast as fc
from tokenabacus.billing.estimate import MAX_DAYS, NoPrice
from tokenabacus.billing.estimate import estimate as plan
from tokenabacus.calendar import now_ms, zone_named
from tokenabacus.governance.roles import read_filters, require_admin
from tokenabacus.money import check_currency
from tokenabacus.server.admin.common import Caller, Format, export

if TYPE_CHECKING:
    from tokenabacus.server.state import Gateway

MAX_BILL_BYTES = 8 * 1024 * 1024
Count = Annotated[int, Query(ge=0, le=10**12)]


def plan_routes(gw: Gateway) -> APIRouter:
    r = APIRouter()

    def zone(tz: str | None):
        try:
            return zone_named(tz or gw.settings.governance.timezone)
        except ValueError as e:
            raise HTTPException(400, str(e)) from None

    @r.get(
        "/forecast",
        summary="Forecast tokens and cost per project or department over a horizon, with an 80% interval",
        tags=["money"],
    )
    async def forecast(
        ident: Caller,
        by: str = "project",
        horizon: str = "month",
        tz: str | None = None,
        project: str | None = None,
        department: str | None = None,
        as_of: str | None = None,
        format: Format = "json",
    ) -> Response:
        """One row per group: the forecast total of tokens and of cost (micros, per currency
        charged) over `horizon` (`30d`, `90d`, `month`: the next one, `quarter`: the next one),
        with its 80% interval; a group with under 14 days of history has a note instead. A
        viewer's groups are those of its scope."""
        z = zone(tz)
        try:  # arguments are checked before the caller's scope is looked up
            today = fc.parse_day(as_of, "as_of") if as_of else None
            if by not in fc.GROUPS:
                raise ValueError(f"by {by!r}: forecast by project or department")
            fc.parse_horizon(horizon, today or datetime.now(z).date())
        except ValueError as e:
            raise HTTPException(400, str(e)) from None

        def run() -> list[dict]:
            only = read_filters(ident, {"project": project, "department": department}, gw.store.org.department_of)
            return fc.forecast(gw.store.db, by, horizon, z, today, only, book=gw.prices)[1]

        rows = await asyncio.to_thread(run)
        return export(rows, fc.columns(by, horizon), format, "forecast", f"Forecast by {by}, {horizon}", rows)

    @r.get("/estimate", summary="Tokens and cost of a workload at the price in force now, as charged", tags=["money"])
    async def estimate(
        model: str,
        requests_per_day: Count,
        prompt_tokens: Count,
        completion_tokens: Count,
        cached_tokens: Count = 0,
        days: Annotated[int, Query(ge=1, le=MAX_DAYS)] = 30,
    ) -> dict:
        """Each request charged as the gateway charges it (rounded on its own), times the requests;
        money in micros of the version's currency. 404 when the model has no price in force."""
        try:
            return plan(
                gw.prices, model, requests_per_day, prompt_tokens, completion_tokens, cached_tokens, days, now_ms()
            )
        except NoPrice as e:
            raise HTTPException(404, str(e)) from None
        except ValueError as e:
            raise HTTPException(400, str(e)) from None

    @r.post(
        "/reconcile",
        summary="Compare a provider's CSV bill with the ledger per day and model (admins)",
        tags=["money"],
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"text/csv": {"schema": {"type": "string", "example": "date,model,tokens,amount\n"}}},
            }
        },
    )
    async def reconcile(
        request: Request,
        ident: Caller,
        tz: str | None = None,
        tolerance: str = "0.5%",
        currency: str | None = None,
        since: str | None = None,
        until: str | None = None,
    ) -> dict:
        """The body is the bill as CSV (`date,model,tokens,amount[,currency]` or `日期,模型,Token数,
        金额`). Returns `lines` (bill and ledger figures, differences ledger minus bill, verdict:
        match, differs, missing in ledger, missing in bill) and `summary`. A malformed bill is a 400
        naming its line."""
        require_admin(ident)
        z = zone(tz)
        try:
            tol = b.parse_tolerance(tolerance)
            cur = check_currency(currency) if currency else None
            first = fc.parse_day(since, "since") if since else None
            last = fc.parse_day(until, "until") if until else None
        except ValueError as e:
            raise HTTPException(400, str(e)) from None
        data = bytearray()
        async for chunk in request.stream():  # read up to the limit, never a whole oversized body
            data += chunk
            if len(data) > MAX_BILL_BYTES:
                raise HTTPException(400, f"the bill is larger than {MAX_BILL_BYTES // 1024 // 1024} MB")
        try:
            lines = b.parse_bill(b.decode(bytes(data)))
        except b.BillError as e:
            raise HTTPException(400, str(e)) from None

        def run() -> dict:
            rows, summary = b.reconcile(gw.store.db, lines, z, tol, cur, first, last)
            return {"lines": rows, "summary": summary}

        try:
            return await asyncio.to_thread(run)
        except ValueError as e:
            raise HTTPException(400, str(e)) from None

    return r
