"""/admin/report: requests, tokens, cost and latency grouped by any dimension and time bucket,
for admins and viewers (a viewer's cut to its department or project), as JSON, CSV or Excel."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import TYPE_CHECKING

from fastapi import APIRouter, HTTPException
from fastapi.responses import Response

from tokenabacus.billing.reports import COLUMNS as REPORT_COLUMNS
from tokenabacus.billing.reports import build_query, run_report
from tokenabacus.governance.roles import read_filters
from tokenabacus.server.admin.common import Caller, Format, export
from tokenabacus.server.admin.reports import Period, WindowArgs, report_window

if TYPE_CHECKING:
    from tokenabacus.server.state import Gateway


def report_route(gw: Gateway) -> APIRouter:
    r = APIRouter()

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

    return r
