"""/admin/reports/*: the named reports (top, peaks, models, suspicious, drift, chargeback) over
HTTP, from the same billing/ code as `tokenabacus report NAME`, as JSON, CSV or an Excel workbook.
Each report's route is generated from its entry in billing/catalog.py; the overview is its own.

Mounted behind the admin app's reader dependency: a viewer gets its own department or project
only, in every format (governance.roles.read_filters turns its scope into filters). Queries run
in worker threads.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.responses import Response

from tokenabacus.billing import overview as ov
from tokenabacus.billing.arguments import as_query, message
from tokenabacus.billing.catalog import REPORTS, Answer, NamedReport, Param, Source
from tokenabacus.billing.windows import Window, month_window, window
from tokenabacus.calendar import zone_named
from tokenabacus.governance.roles import read_filters
from tokenabacus.server.admin_common import XLSX, Caller, export

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


def report_window(gw: Gateway, w: WindowArgs, default: str) -> Window:
    """The window ``w`` names (``default`` period when it names none); 400 for a bad one."""
    try:
        zone = w.tz or gw.settings.governance.timezone
        zone_named(zone)
        period = w.period if (w.period or w.month or w.since) else default
        return window(zone, period, previous=w.previous, month=w.month, since=w.since, until=w.until)
    except ValueError as e:
        raise HTTPException(400, message(e, as_query)) from None


def report_routes(gw: Gateway) -> APIRouter:
    r = APIRouter(prefix="/reports", tags=["reports"])

    @r.get("/overview", summary="Today's and this month's figures so far, beside the same stretch of the period before")
    async def overview(ident: Caller, asked: Scope, tz: When = None) -> dict:
        """Requests, tokens, errors, error rate and cost per currency for today and this month up
        to now, and for yesterday and last month up to the same point (`previous`)."""
        zone = report_window(gw, WindowArgs(tz=tz), "today").tz

        def run() -> dict:
            only = read_filters(ident, asked, gw.store.org.department_of)
            return ov.overview(gw.store, zone, {k: (v,) for k, v in only.items()})

        return await asyncio.to_thread(run)

    for entry in REPORTS:
        endpoint = _endpoint(gw, entry)
        r.get(f"/{entry.name}", summary=entry.summary, description=entry.description)(endpoint)
    return r


# Named reports: one route per catalog entry -------------------------------------------------------
def _query(p: Param) -> Any:
    """A report parameter as a query parameter: its type (its choices, when it has them) and bounds."""
    kind: Any = Literal[p.choices] if p.choices else p.type
    le = p.query_le if p.query_le is not None else p.le
    if p.ge is None and le is None and p.query_gt is None:
        return kind
    return Annotated[kind, Query(ge=p.ge, le=le, gt=p.query_gt)]


def _parameters(entry: NamedReport) -> list[inspect.Parameter]:
    """The route's parameters: the caller, its scope, the window, the report's own, the format."""

    def param(name: str, annotation: Any, default: Any = inspect.Parameter.empty) -> inspect.Parameter:
        return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=default)

    out = [param("ident", Caller), param("asked", Scope)]
    if entry.period:
        out.append(param("span", Span))
    out += [param(p.name, _query(p), p.default) for p in entry.params]
    if not entry.period:
        out += [param("month", str | None, None), param("tz", When, None)]
    formats = tuple(f for f in ("json", "csv", "xlsx") if f in entry.formats)
    out.append(param("format", Literal[formats], "json"))
    return out


def _endpoint(gw: Gateway, entry: NamedReport) -> Callable[..., Any]:
    """The handler of ``GET /reports/NAME``."""

    async def endpoint(**given: Any) -> Response:
        own = {p.name: given[p.name] for p in entry.params}
        if entry.period:
            win = report_window(gw, given["span"], entry.period)
        else:
            try:
                win = month_window(given["tz"] or gw.settings.governance.timezone, given["month"])
            except ValueError as e:
                raise HTTPException(400, str(e)) from None
        if entry.check is not None:
            try:
                entry.check(own)
            except ValueError as e:
                raise HTTPException(400, message(e, as_query)) from None

        def run() -> Answer:
            only = read_filters(given["ident"], given["asked"], gw.store.org.department_of)
            filters = {k: (v,) for k, v in only.items()}
            return entry.run(Source(gw.store, gw.prices.all_versions), win, filters, own)

        try:
            answer = await asyncio.to_thread(run)
        except ValueError as e:
            raise HTTPException(400, message(e, as_query)) from None
        return _response(answer, given["format"])

    endpoint.__name__ = entry.name
    endpoint.__signature__ = inspect.Signature(_parameters(entry), return_annotation=Response)  # type: ignore[attr-defined]
    return endpoint


def _response(answer: Answer, fmt: str) -> Response:
    if fmt == "xlsx" and answer.workbook is not None:
        return Response(
            answer.workbook(),
            media_type=XLSX,
            headers={"content-disposition": f'attachment; filename="{answer.file_name}.xlsx"'},
        )
    return export(answer.rows, answer.columns, fmt, answer.file_name, answer.title, answer.body)  # type: ignore[arg-type]
