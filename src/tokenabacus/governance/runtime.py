"""Governance in a running gateway: builds the admission seam from the config, keeps its limits and
grants current (a change by `tokenabacus quota ...` shows within ``refresh_interval_s``), seeds
counters from the ledger when a reserve finds them missing and reconciles them with it on a timer
(governance/seeding.py), and makes sure quotas on a shared ledger are never per-process silently
(governance/sharing.py)."""

from __future__ import annotations

import asyncio
import logging
import socket
from zoneinfo import ZoneInfo

from tokenabacus.calendar import now_ms
from tokenabacus.config import EmbeddedModel, Settings, UpstreamModel
from tokenabacus.governance.access import ModelAccess
from tokenabacus.governance.admission import Admission, PriceLookup
from tokenabacus.governance.counters import Counters, MemoryCounters
from tokenabacus.governance.quotas import KEEP_MS, Limit, LimitSet, config_limits, row_limit
from tokenabacus.governance.quotaview import grants_of
from tokenabacus.governance.scheduler import FairScheduler
from tokenabacus.governance.seeding import Seeder, Target
from tokenabacus.governance.sharing import LocalCounters, SharedWithoutRedis, refusal
from tokenabacus.ledger.reloader import Reloader
from tokenabacus.ledger.store import Store
from tokenabacus.ledger.unwritten import Unwritten
from tokenabacus.tasks import cancel_and_wait

log = logging.getLogger(__name__)


def owner_id(s: Settings) -> str:
    """Names this gateway's reservations and leases; the same after a restart (one process per
    data directory: ledger/lock.py), so a restarted gateway reclaims what it held."""
    return f"{socket.gethostname()}:{s.data_path.resolve()}"


def build_counters(s: Settings) -> Counters:
    if s.redis.url:
        from tokenabacus.governance.redis_counters import RedisCounters

        return RedisCounters(
            s.redis.url,
            reservation_ttl_s=s.governance.reservation_ttl_s,
            prefix=s.redis.prefix,
            on_error=s.redis.on_error,
            owner=owner_id(s),
        )
    # In one process nothing outlives its owner: the TTL only guards against a request never settled.
    return MemoryCounters(max(900.0, s.governance.reservation_ttl_s))


def concurrency(m: EmbeddedModel | UpstreamModel) -> int | None:
    """The embedded engine runs one request at a time: its queue is the fair one, not a FIFO."""
    if m.max_concurrency is None and isinstance(m, EmbeddedModel):
        return 1
    return m.max_concurrency


class Governance:
    def __init__(
        self, settings: Settings, models: list[EmbeddedModel | UpstreamModel], prices: PriceLookup | None = None
    ) -> None:
        """``prices``: the price book in force (cost limits reserve money at it)."""
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
        self.admission = Admission(self.counters, self.tz, g.default_max_tokens, access, schedulers, prices)
        self.declared = config_limits(g.declared_quotas())
        self._reconciler: asyncio.Task | None = None
        self._store: Store | None = None
        self._reloader: Reloader | None = None
        self.seeder: Seeder | None = None
        self.local: LocalCounters | None = None

    def follow(self, store: Store, unwritten: Unwritten) -> None:
        """The ledger its limits, grants and counters follow, and the spool's records not written
        there yet (seeding counts them): given once the gateway has opened them, before start."""
        self._store = store
        self.seeder = Seeder(self.counters, store.db, unwritten)
        self.admission.seed = self.seeder.ensure
        self.admission.collecting = self.seeder.collecting
        if not self.settings.redis.url and store.db.dialect != "sqlite":
            lease_s = self.settings.governance.local_counters_lease_s
            self.local = LocalCounters(store.db, owner_id(self.settings), lease_s)
        # Limits and grants reloaded when the quotas generation moves; the lease renewed on every poll.
        self._reloader = Reloader(
            "governance",
            store.quotas.generation,
            self._load,
            self.settings.governance.refresh_interval_s,
            every_poll=self._renew if self.local is not None else None,
            logger=log,
        )

    async def start(self) -> None:
        if self._reloader is None:
            raise RuntimeError("governance follows no ledger yet (follow() first)")
        released = await self.counters.reclaim()
        if released:
            log.info("released %d quota reservations this gateway held before it restarted", released)
        if self.local is not None:
            await self.local.renew(force=True)
        await self._reloader.start()
        if self.local is not None and not self.local.holding and self.admission.limits:
            await self._reloader.stop()
            raise SharedWithoutRedis(refusal(self.local.holder))
        self._reconciler = asyncio.create_task(self._reconcile_loop(), name="quota-reconcile")

    async def stop(self) -> None:
        if self._reloader is not None:
            await self._reloader.stop()
        await cancel_and_wait(self._reconciler)
        await self.admission.drain(5.0)
        await self.counters.close()
        if self.local is not None:
            await self.local.release()

    async def _reconcile_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.governance.reconcile_interval_s)
            try:
                await self.reconcile()
            except Exception:  # database briefly unavailable: the counters keep counting
                log.warning("quota reconciliation failed", exc_info=True)

    def targets(self, limits: list[Limit], now: int, lims: LimitSet | None = None) -> list[Target]:
        lims = lims or self.admission.limits
        out = []
        for lim in limits:
            start, end = lims.window(lim, now)
            out.append(Target(lim.counter_key(start), lim, start, end + KEEP_MS))
        return out

    async def ensure_counters(self, limits: list[Limit], now: int) -> None:
        """Seed the counters of these limits' current periods that are not ready (a status read)."""
        if self.seeder is not None:
            await self.seeder.ensure(self.targets(limits, now))

    async def reconcile(self) -> int:
        """Compare every limit's counter for its current period with the ledger; raise the low ones."""
        assert self.seeder is not None
        targets = self.targets(self.admission.limits.limits, now_ms())
        return await self.seeder.reconcile(targets, lambda: self.admission.drain(5.0))

    async def refresh(self, force: bool = False) -> None:
        """Reload limits and grants when they changed (``force``: in any case; an admin's change
        shows on this gateway at once). Counters are seeded when a reserve needs them (a new
        limit, a new period, a counter lost)."""
        assert self._reloader is not None
        await self._reloader.refresh(force)

    async def _renew(self) -> None:
        assert self.local is not None
        await self.local.renew()
        self.admission.unavailable = self.local.unavailable()

    async def _load(self) -> None:
        assert self._store is not None
        store = self._store
        rows, grant_rows = await asyncio.to_thread(lambda: (store.quotas.limits(), store.quotas.grants(0)))
        limits = self.declared + [row_limit(r) for r in rows]
        new, old = LimitSet(limits, grants_of(grant_rows), self.tz), self.admission.limits
        # A limit new to this gateway (set, or deleted and set again) may find a counter of its
        # identity that stopped counting while the limit was away: it is seeded again.
        known = {lim.identity for lim in old.limits}
        now = now_ms()
        for t in self.targets([lim for lim in new.limits if lim.identity not in known], now, new):
            await self.counters.invalidate(t.key)
        self.admission.limits = new

    def health(self) -> dict:
        out: dict = {"counters": self.counters.health(), "limits": len(self.admission.limits.limits)}
        if self.seeder is not None and self.seeder.corrections:
            out["corrections"] = dict(self.seeder.corrections)
        if self.local is not None:
            out["local_counters"] = self.local.health()
        if self.admission.schedulers:
            out["queues"] = {name: s.stats() for name, s in self.admission.schedulers.items()}
        return out
