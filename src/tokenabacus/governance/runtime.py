"""Governance in a running gateway: builds the admission seam from the config, keeps its limits and
grants current (a change by `tokenabacus quota ...` shows within ``refresh_interval_s``), and
seeds each limit's counter from the ledger, so a restart does not forget the day's use."""

from __future__ import annotations

import asyncio
import logging
from zoneinfo import ZoneInfo

from tokenabacus.config import EmbeddedModel, Settings, UpstreamModel
from tokenabacus.governance.access import ModelAccess
from tokenabacus.governance.admission import Admission
from tokenabacus.governance.counters import Counters, MemoryCounters, now_ms
from tokenabacus.governance.quotas import KEEP_MS, Limit, LimitSet, config_limits, row_limit
from tokenabacus.governance.quotaview import grants_of
from tokenabacus.governance.scheduler import FairScheduler
from tokenabacus.ledger.store import Store
from tokenabacus.ledger.usage import used_since
from tokenabacus.tasks import cancel_and_wait

log = logging.getLogger(__name__)


def build_counters(s: Settings) -> Counters:
    if s.redis.url:
        from tokenabacus.governance.redis_counters import RedisCounters

        return RedisCounters(
            s.redis.url,
            reservation_ttl_s=s.governance.reservation_ttl_s,
            prefix=s.redis.prefix,
            on_error=s.redis.on_error,
        )
    return MemoryCounters(s.governance.reservation_ttl_s)


def concurrency(m: EmbeddedModel | UpstreamModel) -> int | None:
    """The embedded engine runs one request at a time: its queue is the fair one, not a FIFO."""
    if m.max_concurrency is None and isinstance(m, EmbeddedModel):
        return 1
    return m.max_concurrency


class Governance:
    def __init__(self, settings: Settings, models: list[EmbeddedModel | UpstreamModel]) -> None:
        g = settings.governance
        self.settings = settings
        self.tz = ZoneInfo(g.timezone)
        self.counters = build_counters(settings)
        access = {
            m.name: ModelAccess.of(m.name, m, g.hide_forbidden_models)
            for m in models
            if m.allow is not None or m.allow_ips is not None
        }
        schedulers = {
            m.name: FairScheduler(limit, g.fair.weights, queue_timeout_s=g.fair.queue_timeout_s, name=m.name)
            for m in models
            if (limit := concurrency(m))
        }
        self.admission = Admission(self.counters, self.tz, g.default_max_tokens, access, schedulers)
        self.declared = config_limits(g.declared_quotas())
        self._generation = -1
        self._seeded: set[str] = set()
        self._task: asyncio.Task | None = None
        self._store: Store | None = None

    async def start(self, store: Store) -> None:
        self._store = store
        await self.refresh(force=True)
        self._task = asyncio.create_task(self._poll(), name="governance-refresh")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        await self.admission.drain(5.0)
        await self.counters.close()

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.settings.governance.refresh_interval_s)
            try:
                await self.refresh()
            except Exception:  # database briefly unavailable: keep the limits in force
                log.warning("governance refresh failed", exc_info=True)

    async def refresh(self, force: bool = False) -> None:
        """Reload limits and grants when they changed, and seed counters new to this process
        (a new limit, or a new period) from the ledger before they are enforced."""
        assert self._store is not None
        store = self._store
        gen = await asyncio.to_thread(store.quotas.generation)
        if force or gen != self._generation:
            rows, grant_rows = await asyncio.to_thread(lambda: (store.quotas.limits(), store.quotas.grants(0)))
            limits = self.declared + [row_limit(r) for r in rows]
            new = LimitSet(limits, grants_of(grant_rows), self.tz)
            await self._seed(new.limits, new)
            self.admission.limits = new
            self._generation = gen
        else:
            await self._seed(self.admission.limits.limits, self.admission.limits)

    async def _seed(self, limits: list[Limit], lims: LimitSet) -> None:
        now = now_ms()
        for lim in limits:
            start, end = lims.window(lim, now)
            key = lim.counter_key(start)
            if key in self._seeded:
                continue
            # A minute's use is not worth a query: rate limits start from what this process sees.
            used = 0
            if not lim.is_rate:
                assert self._store is not None
                db = self._store.db
                used = await asyncio.to_thread(
                    used_since, db, lim.scope_kind, lim.scope_value, lim.model, lim.metric, start
                )
            await self.counters.seed(key, used, end + KEEP_MS)
            self._seeded.add(key)

    def health(self) -> dict:
        out: dict = {"counters": self.counters.health(), "limits": len(self.admission.limits.limits)}
        if self.admission.schedulers:
            out["queues"] = {name: s.stats() for name, s in self.admission.schedulers.items()}
        return out
