"""The one loop that keeps a cache in step with the database: poll a generation
(ledger/generation.py) every ``interval_s`` and reload the cache when it moved. Keys, quotas and
prices are each served by one Reloader.

The generation is read before the rows: a change landing between the two reads is simply loaded
again on the next poll. One reload at a time, so a slow one never undoes a newer one. A failed
poll keeps the cache as it is (the database may be briefly unavailable) and says so in the log.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from tokenabacus.tasks import cancel_and_wait

log = logging.getLogger(__name__)


class Reloader:
    def __init__(
        self,
        name: str,
        generation: Callable[[], int],
        reload: Callable[[], Awaitable[None]],
        interval_s: float,
        miss_interval_s: float = 0.1,
        every_poll: Callable[[], Awaitable[None]] | None = None,
        logger: logging.Logger = log,
    ) -> None:
        """``generation``: reads the generation (synchronous: run in a worker thread);
        ``reload``: loads the cache again; ``every_poll``: runs before each check, changed or
        not (a lease to renew); ``miss_interval_s``: how often ``check_soon`` reads at most;
        ``logger``: where a failed poll is reported (the cache owner's)."""
        self.name = name
        self._generation = generation
        self._reload = reload
        self.interval_s = interval_s
        self.miss_interval_s = miss_interval_s
        self._every_poll = every_poll
        self._log = logger
        self.seen = -1  # the generation the cache holds
        self._lock = asyncio.Lock()
        self._task: asyncio.Task | None = None
        self._checking: asyncio.Task | None = None
        self._last_check = 0.0

    async def start(self) -> None:
        await self.refresh(force=True)
        self._task = asyncio.create_task(self._poll(), name=self.name.replace(" ", "-") + "-refresh")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)

    async def refresh(self, force: bool = False) -> None:
        """Reload when the generation moved (``force``: in any case)."""
        async with self._lock:
            if self._every_poll is not None:
                await self._every_poll()
            gen = await asyncio.to_thread(self._generation)
            if force or gen != self.seen:
                await self._reload()
                self.seen = gen

    async def check_soon(self) -> None:
        """A cache miss: wait for the next coalesced check of the generation (at most one per
        miss interval), so a row added a moment ago is found at once while misses by the
        thousand cannot hammer the database. Raises what the check raised."""
        if self._checking is None or self._checking.done():
            self._checking = asyncio.create_task(self._checked())
        await asyncio.shield(self._checking)

    async def _checked(self) -> None:
        wait = self.miss_interval_s - (time.monotonic() - self._last_check)
        if wait > 0:
            await asyncio.sleep(wait)
        self._last_check = time.monotonic()
        await self.refresh()

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.refresh()
            except Exception:  # database briefly unavailable: keep serving what the cache holds
                self._log.warning("%s refresh failed", self.name, exc_info=True)
