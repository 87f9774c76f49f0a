"""/admin/reports/*: the named reports (top, peaks, models, suspicious, drift, chargeback) over
HTTP, from the same billing/ code as `tokenabacus report NAME`, as JSON, CSV or an Excel workbook.

Mounted behind the admin app's reader dependency: a viewer gets its own department or project
only, in every format (governance.roles.read_filters turns its scope into filters). Queries run
in worker threads.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.responses import Response

from tokenabacus.billing import chargeback as cb
from tokenabacus.billing import named
from tokenabacus.billing import overview as ov
from tokenabacus.calendar import zone_named
from tokenabacus.governance.keys import Identity
from tokenabacus.governance.roles import read_filters
from tokenabacus.ledger.store import Store
from tokenabacus.server.admin_common import XLSX, Caller, Format, export

if TYPE_CHECKING:
    from tokenabacus.server.state import Gateway

Period = Literal["today", "week", "month"]


def _scope(
    department: str | None = None,
    project: str | None = None,
    user: str | None = None,
    model: str | None = None,
    key_id: str | None = None,
) -> dict[str, str | None]:
    return {"department": department, "project": project, "user": user, "model": model, "key_id": key_id}


Scope = Annotated[dict[str, str | None], Depends(_scope)]
When = Annotated[str | None, Query(description="Time zone (default: governance.timezone).")]


@dataclass(frozen=True)
class WindowArgs:
    """The window options every named report takes: a `period` (today, week, month; `previous`:
    the one before), a `month` (YYYY-MM), or `since`/`until`; days cut in `tz`."""

    period: Period | None = None
    previous: bool = False
    month: str | None = None
    since: str | None = None
    until: str | None = None
    tz: str | None = None


def _window_args(
    period: Period | None = None,
    previous: bool = False,
    month: str | None = None,
    since: str | None = None,
    until: str | None = None,
    tz: When = None,
) -> WindowArgs:
    return WindowArgs(period, previous, month, since, until, tz)


Span = Annotated[WindowArgs, Depends(_window_args)]


def report_window(gw: Gateway, w: WindowArgs, default: str) -> named.Window:
    """The window ``w`` names (``default`` period when it names none); 400 for a bad one."""
    try:
        zone = w.tz or gw.settings.governance.timezone
        zone_named(zone)
        period = w.period if (w.period or w.month or w.since) else default
        return named.window(zone, period, previous=w.previous, month=w.month, since=w.since, until=w.until)
    except ValueError as e:
        raise HTTPException(400, str(e).replace("--", "")) from None


def report_routes(gw: Gateway) -> APIRouter:
    r = APIRouter(prefix="/reports", tags=["reports"])

    def pick(w: WindowArgs, default: str) -> named.Window:
        return report_window(gw, w, default)

    async def table(
        ident: Identity,
        asked: dict[str, str | None],
        fmt: Format,
        name: str,
        make: Callable[[Store, dict[str, tuple[str, ...]]], named.Table],
    ) -> Response:
        def run() -> named.Table:
            only = read_filters(ident, asked, gw.store.org.department_of)
            return make(gw.store, {k: (v,) for k, v in only.items()})

        try:
            t = await asyncio.to_thread(run)
        except ValueError as e:
            raise HTTPException(400, str(e).replace("--", "")) from None
        cols = (["row"] if any("row" in row for row in t.rows) else []) + t.columns
        return export(t.rows, cols, fmt, name, t.title, t.as_json())

    @r.get("/overview", summary="Today's and this month's figures so far, beside the same stretch of the period before")
    async def overview(ident: Caller, asked: Scope, tz: When = None) -> dict:
        """Requests, tokens, errors, error rate and cost per currency for today and this month up
        to now, and for yesterday and last month up to the same point (`previous`)."""
        zone = report_window(gw, WindowArgs(tz=tz), "today").tz

        def run() -> dict:
            only = read_filters(ident, asked, gw.store.org.department_of)
            return ov.overview(gw.store, zone, {k: (v,) for k, v in only.items()})

        return await asyncio.to_thread(run)

    @r.get("/top", summary="This period's ranking by tokens and by cost, with shares and change")
    async def top(
        ident: Caller,
        asked: Scope,
        span: Span,
        by: str = "department",
        rank: Literal["tokens", "cost"] = "tokens",
        limit: Annotated[int | None, Query(ge=1)] = None,
        currency: str | None = None,
        format: Format = "json",
    ) -> Response:
        """Groups of `by` (department, project, user, key_id, model) over `period` (default this
        week; `previous=true`: last week), a `month` (YYYY-MM) or `since`/`until`."""
        win = pick(span, "week")
        try:
            named.check_dimension(by)
        except ValueError as e:
            raise HTTPException(400, str(e)) from None
        return await table(ident, asked, format, "top", lambda st, f: named.top(st, by, win, f, rank, limit, currency))

    @r.get("/peaks", summary="Each day's peak hour and its share of the day")
    async def peaks(
        ident: Caller,
        asked: Scope,
        span: Span,
        metric: Literal["tokens", "requests"] = "tokens",
        format: Format = "json",
    ) -> Response:
        win = pick(span, "week")
        return await table(ident, asked, format, "peaks", lambda st, f: named.peaks(st, win, f, metric))

    @r.get("/models", summary="Cost per model, per 1k tokens and per request")
    async def models(
        ident: Caller,
        asked: Scope,
        span: Span,
        format: Format = "json",
    ) -> Response:
        win = pick(span, "month")
        return await table(ident, asked, format, "models", lambda st, f: named.models(st, win, f))

    @r.get("/suspicious", summary="Callers whose busiest minute was far above their own usual rate")
    async def suspicious(
        ident: Caller,
        asked: Scope,
        span: Span,
        by: str = "key_id",
        factor: Annotated[float, Query(gt=1, le=1000)] = 5.0,
        min_requests: Annotated[int, Query(ge=1)] = 30,
        min_tokens: Annotated[int, Query(ge=1)] = 50_000,
        baseline_days: Annotated[int, Query(ge=1, le=90)] = 7,
        format: Format = "json",
    ) -> Response:
        win = pick(span, "today")
        return await table(
            ident,
            asked,
            format,
            "suspicious",
            lambda st, f: named.suspicious(st, win, by, f, factor, min_requests, min_tokens, baseline_days),
        )

    @r.get("/drift", summary="Our token count against the upstream's, per model and day")
    async def drift(
        ident: Caller,
        asked: Scope,
        span: Span,
        differences_only: bool = False,
        format: Format = "json",
    ) -> Response:
        win = pick(span, "month")
        return await table(ident, asked, format, "drift", lambda st, f: named.drift(st, win, f, differences_only))

    @r.get("/chargeback", summary="A month's chargeback per department (a viewer's: its own)")
    async def chargeback(
        ident: Caller,
        asked: Scope,
        month: str | None = None,
        tz: When = None,
        format: Format = "json",
    ) -> Response:
        """Cost by department, project, user and model with sub-totals, the month's adjustments,
        the price versions used and the hardware apportioned; `format=xlsx` is the workbook
        finance gets from `tokenabacus report chargeback` (a sheet per department)."""
        zone = tz or gw.settings.governance.timezone
        try:
            the_month = month or named.window(zone, "month", previous=True).label
            named.window(zone, month=the_month)
        except ValueError as e:
            raise HTTPException(400, str(e)) from None

        def run() -> cb.Chargeback:
            only = read_filters(ident, asked, gw.store.org.department_of)
            versions = gw.prices.all_versions()
            return cb.chargeback(gw.store, the_month, zone, versions, {k: (v,) for k, v in only.items()})

        result = await asyncio.to_thread(run)
        name = f"chargeback-{the_month}"
        if format == "xlsx":
            return Response(
                cb.workbook(result),
                media_type=XLSX,
                headers={"content-disposition": f'attachment; filename="{name}.xlsx"'},
            )
        return export(result.flat(), cb.COLUMNS, format, name, name, result.as_json())

    return r
