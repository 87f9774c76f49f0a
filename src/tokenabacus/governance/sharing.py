"""Quotas on a ledger shared by several gateways without Redis: never per-process silently.

In-process counters are exact for one gateway only; two gateways on one PostgreSQL or MariaDB
ledger would each allow the whole limit. So without ``redis.url`` on such a ledger, one gateway at
a time holds the ledger's ``local-counters`` lease and enforces quotas; another gateway refuses
to start while limits exist, and refuses requests under a limit set later (503,
``quota_backend_unavailable``) while it does not hold the lease. The holder is named by host and
data directory, so a gateway restarted after a crash takes its lease back at once.
"""

from __future__ import annotations

import asyncio
import logging
import time

from tokenabacus.ledger.database import Database
from tokenabacus.ledger.leases import Lease

log = logging.getLogger(__name__)

LEASE = "local-counters"


class SharedWithoutRedis(Exception):
    """Quotas exist, the ledger is shared and another gateway holds the local-counters lease."""


def refusal(holder: str | None) -> str:
    return (
        f"quotas on this shared ledger are enforced by another gateway ({holder or 'unknown'}) with "
        "in-process counters; two gateways would each allow the whole limit. Set redis.url on every "
        "gateway that shares this ledger (see README, Quotas)"
    )


def take_at_start(db: Database, owner: str, lease_s: float, has_limits: bool) -> None:
    """The CLI's preflight (synchronous): take the lease, or refuse to start while limits exist."""
    lease = Lease(db, LEASE, owner, lease_s)
    if not lease.acquire() and has_limits:
        raise SharedWithoutRedis(refusal(lease.holder_now()))


class LocalCounters:
    """This gateway's hold on the local-counters lease, renewed as governance refreshes."""

    def __init__(self, db: Database, owner: str, lease_s: float) -> None:
        self.lease = Lease(db, LEASE, owner, lease_s)
        self.every = lease_s / 3
        self.holding = True  # until the first renewal says otherwise (a warning then, not at every start)
        self.holder: str | None = None
        self._renewed = 0.0

    async def renew(self, force: bool = False) -> bool:
        now = time.monotonic()
        if force or now - self._renewed >= self.every:
            self._renewed = now
            got = await asyncio.to_thread(self.lease.acquire)
            if not got:
                self.holder = await asyncio.to_thread(self.lease.holder_now)
            if got != self.holding:
                if got:
                    log.info("this gateway now enforces quotas on the shared ledger (local-counters lease)")
                else:
                    log.warning("quota counters unavailable here: %s", refusal(self.holder))
            self.holding = got
        return self.holding

    def unavailable(self) -> str | None:
        """Why requests under a limit are refused here, or None while this gateway holds the lease."""
        return None if self.holding else refusal(self.holder)

    async def release(self) -> None:
        if self.holding:
            await asyncio.to_thread(self.lease.release)
            self.holding = False

    def health(self) -> dict:
        return {"holding": self.holding, "holder": None if self.holding else self.holder}
