"""Money rows in the ledger database: price versions, cost adjustments and hardware costs, and
the prices generation that tells running gateways to reload their price book.

Rows are only ever added (a hardware cost set again for the same pool and start is the one
exception: it replaces that month's figure); a record's cost is never rewritten. All methods are
synchronous (worker threads and the CLI only).
"""

from __future__ import annotations

import secrets

import orjson
from sqlalchemy import select

from tokenabacus.ledger.database import Database
from tokenabacus.ledger.generation import Generation
from tokenabacus.ledger.meta import Meta
from tokenabacus.ledger.record import now_ms
from tokenabacus.ledger.schema import cost_adjustments, hardware_costs, price_versions
from tokenabacus.ledger.schema import usage_records as usage

GENERATION = "prices_generation"  # the meta entry
DIMENSIONS = ("model", "department", "project", "user")  # what an adjustment is charged to


class UnknownRequest(LookupError):
    """An adjustment names a request the ledger does not hold."""


class PriceStore:
    def __init__(self, db: Database, meta: Meta) -> None:
        self.db = db
        self.meta = meta
        self.changes = Generation(meta, GENERATION)

    def generation(self) -> int:
        return self.changes.get()

    # Price versions ----------------------------------------------------------------------------
    def add(
        self,
        model: str,
        currency: str,
        input_micros: int,
        cached_micros: int | None,
        output_micros: int,
        effective_from: int,
        by: str | None,
        note: str | None = None,
    ) -> dict:
        """A new version of ``model``'s price from ``effective_from`` on (micros per 1M tokens)."""
        row = {
            "version_id": "pv_" + secrets.token_hex(6),
            "model": model,
            "effective_from": effective_from,
            "currency": currency,
            "input_per_mtok_micros": input_micros,
            "cached_per_mtok_micros": cached_micros,
            "output_per_mtok_micros": output_micros,
            "created_at": now_ms(),
            "created_by": by,
            "note": note,
        }
        with self.db.begin() as conn:
            conn.execute(price_versions.insert().values(**row))
            self.changes.touch(conn)
        return row

    def versions(self, model: str | None = None) -> list[dict]:
        pv = price_versions.c
        q = select(price_versions).order_by(pv.model, pv.effective_from, pv.created_at)
        if model is not None:
            q = q.where(pv.model == model)
        with self.db.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(q)]

    # Cost adjustments --------------------------------------------------------------------------
    def adjust(
        self,
        amount_micros: int,
        currency: str | None,
        reason: str,
        by: str | None,
        at: int | None = None,
        request_id: str | None = None,
        **dims: str | None,
    ) -> dict:
        """Store a signed correction. With ``request_id`` its dimensions (and default currency)
        come from that record, and UnknownRequest is raised when there is none; a record charged
        in another currency is refused (ValueError). ``at``: when it counts (default now)."""
        created = now_ms()
        with self.db.begin() as conn:
            if request_id is not None:
                rec = conn.execute(
                    select(usage.c.currency, *(usage.c[d] for d in DIMENSIONS)).where(usage.c.request_id == request_id)
                ).first()
                if rec is None:
                    raise UnknownRequest(f"no record with request id {request_id!r} in the ledger")
                dims = {d: getattr(rec, d) for d in DIMENSIONS}
                if currency is None:
                    currency = rec.currency
                elif rec.currency is not None and rec.currency != currency:
                    raise ValueError(
                        f"request {request_id} was charged in {rec.currency}; adjust it in {rec.currency} too"
                    )
            row = {
                "adjustment_id": "adj_" + secrets.token_hex(6),
                "request_id": request_id,
                "at": created if at is None else at,
                **{d: dims.get(d) for d in DIMENSIONS},
                "amount_micros": amount_micros,
                "currency": currency or "CNY",
                "reason": reason,
                "created_at": created,
                "created_by": by,
            }
            conn.execute(cost_adjustments.insert().values(**row))
        return row

    def adjustments(self, since_ms: int | None = None, until_ms: int | None = None) -> list[dict]:
        a = cost_adjustments.c
        q = select(cost_adjustments).order_by(a.at, a.created_at)
        if since_ms is not None:
            q = q.where(a.at >= since_ms)
        if until_ms is not None:
            q = q.where(a.at < until_ms)
        with self.db.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(q)]

    # Hardware costs ----------------------------------------------------------------------------
    def set_hardware(
        self,
        pool: str,
        models: list[str],
        monthly_micros: int,
        currency: str,
        effective_from: int,
        basis: str,
        by: str | None,
        note: str | None = None,
    ) -> dict:
        """A pool's monthly cost from ``effective_from`` on; the same pool and start again
        replaces that figure (a correction of the month, not a second cost)."""
        h = hardware_costs.c
        values = {
            "models": orjson.dumps(models).decode(),
            "monthly_micros": monthly_micros,
            "currency": currency,
            "basis": basis,
            "created_at": now_ms(),
            "created_by": by,
            "note": note,
        }
        with self.db.begin() as conn:
            same = (h.pool == pool) & (h.effective_from == effective_from)
            cost_id = conn.execute(select(h.cost_id).where(same)).scalar_one_or_none()
            if cost_id is not None:
                conn.execute(hardware_costs.update().where(h.cost_id == cost_id).values(**values))
            else:
                cost_id = "hw_" + secrets.token_hex(6)
                conn.execute(
                    hardware_costs.insert().values(cost_id=cost_id, pool=pool, effective_from=effective_from, **values)
                )
        return {"cost_id": cost_id, "pool": pool, "effective_from": effective_from, **values, "models": models}

    def hardware(self) -> list[dict]:
        """Every hardware cost row, by pool and start, its models as a list."""
        h = hardware_costs.c
        with self.db.connect() as conn:
            rows = [dict(r._mapping) for r in conn.execute(select(hardware_costs).order_by(h.pool, h.effective_from))]
        for r in rows:
            r["models"] = orjson.loads(r["models"])
        return rows
