"""/admin/prices, /admin/cost-adjustments and /admin/hardware: money over HTTP.

Admins write (a new price version, an adjustment, a pool's monthly cost); admins and viewers
read, a viewer's adjustments and apportioned costs cut to its department or project. A price set
here charges this gateway's next record at once and other gateways' within a second or two.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Literal
from zoneinfo import ZoneInfo

from fastapi import APIRouter, HTTPException, Query
from pydantic import ConfigDict, Field

from tokenabacus import calendar, money
from tokenabacus.billing import hardware, prices
from tokenabacus.calendar import now_ms, zone_named
from tokenabacus.governance.keys import Identity
from tokenabacus.governance.roles import read_filters
from tokenabacus.ledger.prices import DIMENSIONS, UnknownRequest
from tokenabacus.server.admin.common import Body, Caller

if TYPE_CHECKING:
    from tokenabacus.server.state import Gateway

# Prices and amounts: a JSON string ("0.8") is exact as written; a JSON number is read through its
# shortest form, which is the literal sent.
Amount = str | int | float


class PriceIn(Body):
    model_config = ConfigDict(populate_by_name=True)

    model: str = Field(min_length=1, max_length=200)
    input: Amount
    output: Amount
    cached: Amount | None = None
    per: Literal["1k", "1K", "1M", "1m"]
    currency: str = "CNY"
    from_: str | None = Field(None, alias="from", description="Default now; naive times in governance.timezone.")
    note: str | None = Field(None, max_length=2000)


class AdjustmentIn(Body):
    """Either ``request_id`` (its dimensions come from the record) or at least one dimension."""

    request_id: str | None = Field(None, max_length=64)
    model: str | None = Field(None, max_length=200)
    department: str | None = Field(None, max_length=200)
    project: str | None = Field(None, max_length=200)
    user: str | None = Field(None, max_length=200)
    amount: Amount = Field(description="Signed: negative is a credit.")
    currency: str | None = None
    reason: str = Field(min_length=1, max_length=2000)
    at: str | None = Field(None, description="When it counts (default now).")


class HardwareIn(Body):
    model_config = ConfigDict(populate_by_name=True)

    pool: str = Field(min_length=1, max_length=200)
    models: list[str] = Field(min_length=1, max_length=200)
    monthly: Amount
    currency: str = "CNY"
    basis: Literal["tokens", "busy_time"] = "tokens"
    from_: str | None = Field(None, alias="from", description="A month (2026-11); default the current one.")
    note: str | None = Field(None, max_length=2000)


def _who(ident: Identity) -> str:
    return f"{ident.role}:{ident.name or ident.user or ident.key_id}"


def _bad(e: ValueError) -> HTTPException:
    return HTTPException(400, str(e))


def price_routes(gw: Gateway) -> tuple[APIRouter, APIRouter]:
    """(reads, writes): the app mounts them behind its reader and admin dependencies."""
    zone = ZoneInfo(gw.settings.governance.timezone)
    reads, writes = APIRouter(), APIRouter()

    # Prices ------------------------------------------------------------------------------------
    @reads.get(
        "/prices", summary="The price version in force per model (money in micros per 1M tokens)", tags=["prices"]
    )
    async def list_prices(at: str | None = None) -> list[dict]:
        try:
            at_ms = calendar.parse_time(at, zone, "at") if at else now_ms()
        except ValueError as e:
            raise _bad(e) from None
        return [v.row() for v in gw.prices.in_force(at_ms)]

    @reads.get("/prices/{model:path}/history", summary="Every price version of a model, oldest first", tags=["prices"])
    async def price_history(model: str) -> list[dict]:
        return gw.prices.history_rows(model, now_ms())

    @writes.post("/prices", status_code=201, summary="Set a new price version for a model", tags=["prices"])
    async def set_price(body: PriceIn, ident: Caller) -> dict:
        try:
            cached = None if body.cached is None else money.parse_price(body.cached, body.per, "cached")
            inp = money.parse_price(body.input, body.per, "input")
            out = money.parse_price(body.output, body.per, "output")
            cur = money.check_currency(body.currency)
            start = calendar.parse_time(body.from_, zone, "from") if body.from_ else now_ms()
        except ValueError as e:
            raise _bad(e) from None
        row = await asyncio.to_thread(
            gw.store.prices.add, body.model, cur, inp, cached, out, start, _who(ident), body.note
        )
        await gw.prices_reloader.refresh(force=True)  # this gateway at once; others within their poll
        return {**row, "source": prices.LEDGER}

    # Cost adjustments --------------------------------------------------------------------------
    @reads.get("/cost-adjustments", summary="Cost adjustments (a viewer's cut to its scope), by time", tags=["costs"])
    async def list_adjustments(
        ident: Caller,
        since: str | None = None,
        until: str | None = None,
        department: str | None = None,
        project: str | None = None,
    ) -> list[dict]:
        try:
            since_ms = calendar.parse_time(since, zone, "since") if since else None
            until_ms = calendar.parse_time(until, zone, "until") if until else None
        except ValueError as e:
            raise _bad(e) from None

        def run() -> list[dict]:
            only = read_filters(ident, {"department": department, "project": project}, gw.store.org.department_of)
            rows = gw.store.prices.adjustments(since_ms, until_ms)
            return [r for r in rows if all(r.get(k) == v for k, v in only.items())]

        return await asyncio.to_thread(run)

    @writes.post("/cost-adjustments", status_code=201, summary="Store a signed cost correction", tags=["costs"])
    async def adjust(body: AdjustmentIn, ident: Caller) -> dict:
        dims = {d: getattr(body, d) for d in DIMENSIONS}
        if (body.request_id is None) == (not any(dims.values())):
            raise HTTPException(400, "give either request_id or at least one of model, department, project, user")
        try:
            amount = money.parse_amount(body.amount, "amount", signed=True)
            cur = money.check_currency(body.currency) if body.currency else None
            at = calendar.parse_time(body.at, zone, "at") if body.at else None
            reason = body.reason.strip()
            if not reason:
                raise ValueError("reason: say why the cost is corrected")
        except ValueError as e:
            raise _bad(e) from None
        try:
            return await asyncio.to_thread(
                gw.store.prices.adjust, amount, cur, reason, _who(ident), at, body.request_id, **dims
            )
        except UnknownRequest as e:
            raise HTTPException(404, str(e)) from None
        except ValueError as e:
            raise _bad(e) from None

    # Hardware ----------------------------------------------------------------------------------
    @reads.get("/hardware", summary="GPU pools' monthly costs (all=true: every month's figure)", tags=["hardware"])
    async def list_hardware(every: Annotated[bool, Query(alias="all")] = False) -> list[dict]:
        rows = await asyncio.to_thread(gw.store.prices.hardware)
        return rows if every else hardware.in_force(rows, now_ms())

    @writes.post("/hardware", status_code=201, summary="Set a GPU pool's monthly cost", tags=["hardware"])
    async def set_hardware(body: HardwareIn, ident: Caller) -> dict:
        try:
            monthly = money.parse_amount(body.monthly, "monthly")
            cur = money.check_currency(body.currency)
            start = calendar.parse_time(body.from_ or _this_month(zone), zone, "from")
        except ValueError as e:
            raise _bad(e) from None
        models = [m.strip() for m in body.models if m.strip()]
        if not models:
            raise HTTPException(400, "models: name the models the pool serves")
        return await asyncio.to_thread(
            gw.store.prices.set_hardware, body.pool, models, monthly, cur, start, body.basis, _who(ident), body.note
        )

    @reads.get(
        "/hardware/apportion",
        summary="Each pool's monthly cost split by department and project (exact micros)",
        tags=["hardware"],
    )
    async def apportion(ident: Caller, month: str, tz: str | None = None) -> list[dict]:
        try:
            where = zone_named(tz) if tz else zone
            hardware.month_bounds(month, where)
        except ValueError as e:
            raise _bad(e) from None

        def run() -> list[dict]:
            only = read_filters(ident, {}, gw.store.org.department_of)
            rows = hardware.apportion(gw.store, month, where)
            return [r for r in rows if all(r.get(k) == v for k, v in only.items())]

        return await asyncio.to_thread(run)

    return reads, writes


def _this_month(zone: ZoneInfo) -> str:
    return datetime.now(zone).strftime("%Y-%m")
