"""The ledger is the truth, a quota counter its cache: counters are seeded from the ledger when
they are created or found missing, and checked against it on a timer.

A seed is what the ledger holds for the limit's period plus this process's records still on their
way to the database (``ledger.unwritten``), minus what was settled into the counter while the
seed was read. The reads are ordered so that a race can only count a record twice (a counter a
little high), never miss one: which pending records the database holds is asked before the sum.
Other gateways' records still in their own spools are not visible here: the reconciliation
raises a counter to the ledger's figure once they arrive.

The reconciliation reads the sum first and the counter last, so the ledger's figure it compares
is never ahead of the counter for records that were settled; a counter below it was forgotten
(or lost use) and is raised by the difference, logged and counted. Counters are never lowered: a
counter may run ahead of the ledger by the records in flight.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from tokenabacus.governance.counters import SEED, SEEDED, Counters
from tokenabacus.governance.errors import CountersUnavailable
from tokenabacus.governance.quotas import Limit
from tokenabacus.ledger.database import Database
from tokenabacus.ledger.record import UsageRecord
from tokenabacus.ledger.unwritten import Unwritten
from tokenabacus.ledger.usage import held_ids, used_since

log = logging.getLogger(__name__)

SEED_WAIT_S = 15.0  # how long a reserve waits for another process to seed a counter


@dataclass(frozen=True, slots=True)
class Target:
    """A counter to seed: its key, the limit and the period it counts."""

    key: str
    limit: Limit
    start_ms: int
    expire_at_ms: int


class Seeder:
    def __init__(self, counters: Counters, db: Database, unwritten: Unwritten) -> None:
        self.counters = counters
        self.db = db
        self.unwritten = unwritten
        # Counters being seeded here: request id -> use settled into each since its seed began.
        self.collecting: dict[str, dict[str, int]] = {}
        self._flights: dict[str, asyncio.Future[None]] = {}
        self.corrections: dict[str, int] = {}  # scope kind -> corrections made (for /metrics)
        self.corrected_amount: dict[str, int] = {}

    # Seeding -------------------------------------------------------------------------------------
    async def ensure(self, targets: list[Target]) -> None:
        """Return once every target counter is ready (one seed per counter in this process)."""
        await asyncio.gather(*(self._one(t) for t in targets))

    async def _one(self, t: Target) -> None:
        fut = self._flights.get(t.key)
        if fut is None:
            fut = self._flights[t.key] = asyncio.ensure_future(self._seed(t))
            fut.add_done_callback(lambda _f: self._flights.pop(t.key, None))
        await asyncio.shield(fut)

    async def _seed(self, t: Target) -> None:
        deadline = time.monotonic() + SEED_WAIT_S
        while True:
            self.collecting[t.key] = {}
            state = await self.counters.begin_seed(t.key, t.expire_at_ms)
            if state == SEED:
                break
            self.collecting.pop(t.key, None)
            if state == SEEDED:
                return
            if time.monotonic() > deadline:
                raise CountersUnavailable(f"the quota counter of {t.limit.scope_label()} is being seeded elsewhere")
            await asyncio.sleep(0.02)  # another gateway seeds it
        try:
            amount = 0 if t.limit.is_rate else await self._seed_figure(t)
        finally:
            self.collecting.pop(t.key, None)
        await self.counters.finish_seed(t.key, amount)

    def _pending(self, lim: Limit, start_ms: int) -> list[UsageRecord]:
        return [r for r in self.unwritten.records() if r.timestamp >= start_ms and lim.covers(r)]

    async def _seed_figure(self, t: Target) -> int:
        lim = t.limit
        pending = self._pending(lim, t.start_ms)
        collected = dict(self.collecting.get(t.key, {}))

        def read() -> tuple[set[str], int]:
            held = held_ids(self.db, [r.request_id for r in pending] + list(collected))
            return held, self._ledger_sum(lim, t.start_ms)

        try:
            held, total = await asyncio.to_thread(read)
        except Exception as e:  # the database is away: start from what this process knows
            log.warning(
                "quota counter of %s seeded without the ledger (%s); the reconciliation corrects it",
                lim.scope_label(),
                type(e).__name__,
            )
            held, total = set(), 0
        not_held = sum(lim.used_by(r) for r in pending if r.request_id not in held)
        counted_twice = sum(v for rid, v in collected.items() if rid in held)
        return max(0, total + not_held - counted_twice)

    def _ledger_sum(self, lim: Limit, start_ms: int) -> int:
        return used_since(self.db, lim.scope_kind, lim.scope_value, lim.model, lim.metric, start_ms)

    # Reconciliation ------------------------------------------------------------------------------
    async def reconcile(self, targets: list[Target], settled: Callable[[], Awaitable[None]]) -> int:
        """Raise every target counter that is below the ledger's figure; the corrections made.
        ``settled`` waits for settles already under way (a counter read before them looks low)."""
        made = 0
        for t in targets:
            if t.limit.is_rate or t.key in self._flights:
                continue
            pending = self._pending(t.limit, t.start_ms)

            def read(t: Target = t, pending: list[UsageRecord] = pending) -> tuple[int, set[str]]:
                total = self._ledger_sum(t.limit, t.start_ms)  # the sum first: a race only lowers the truth
                return total, held_ids(self.db, [r.request_id for r in pending])

            total, held = await asyncio.to_thread(read)
            truth = total + sum(t.limit.used_by(r) for r in pending if r.request_id not in held)
            await settled()
            (used, _reserved), *_ = await self.counters.usage([t.key])
            if used < truth:
                await self.counters.correct(t.key, truth - used)
                kind = t.limit.scope_kind
                self.corrections[kind] = self.corrections.get(kind, 0) + 1
                self.corrected_amount[kind] = self.corrected_amount.get(kind, 0) + truth - used
                log.warning(
                    "quota counter of %s (%s per %s) was %d below the ledger (%d); corrected",
                    t.limit.scope_label(),
                    t.limit.metric,
                    t.limit.period,
                    truth - used,
                    truth,
                )
                made += 1
        return made
