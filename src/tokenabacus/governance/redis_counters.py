"""Counters shared by many gateway processes, in Redis: every operation is one Lua script, so one
atomic round trip, and a reserve over several keys is all or nothing across processes.

Redis keys (all under ``prefix``), for counter key K and request R:
  ``c:K``  hash: ``used``, ``reserved`` (the sum of live reservations), ``r:R`` = R's amount,
           ``s`` once seeded from the ledger (ready), ``seeding`` = lease:token while being seeded
  ``d:K``  sorted set: R scored by the server time (ms) when its reservation lapses
  ``q:R``  set: the counter keys R holds, so settle releases them all (as ``MemoryCounters`` does)
  ``o:O``  set: the requests owner O (a gateway process, stable across its restarts) holds
``c:K`` and ``d:K`` expire at the counter's ``expire_at_ms``, ``q:R`` when R's reservation lapses.
A reservation is a lease renewed while its request runs, so a dead process's room comes back one
lease later, and at once when that gateway starts again (``reclaim``).
The scripts name keys from ``prefix``, so this needs a single Redis server, not Cluster.

Concurrent reserves (and settles) are coalesced: those that arrive in the same event-loop turn, or
while the previous batch is in flight, go out as one script call that handles them in arrival
order, each all or nothing as if sent alone. redis-py's per-command cost (in this process, on the
event loop) is paid once per batch instead of once per request; the requests' data travels as one
JSON argument, which orjson writes far faster than redis-py encodes separate arguments.

When Redis fails: ``on_error="closed"`` refuses reserves (``CountersUnavailable``); ``"open"``
counts in a local ``MemoryCounters`` until Redis answers again (retried at most once a second).
A batch that fails fails for every request in it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from tokenabacus.governance import redis_scripts as lua
from tokenabacus.governance.batcher import Batcher, Down
from tokenabacus.governance.counters import SEED, SEEDED, WAIT, Ask, Commit, MemoryCounters, Missing, Refusal
from tokenabacus.governance.errors import CountersUnavailable

log = logging.getLogger(__name__)

RETRY_S = 1.0  # while Redis is down, try it again at most this often
SEED_LEASE_MS = 10_000  # a seeder that died mid-seed is taken over after this long


def mask_password(url: str) -> str:
    """The URL as it may be logged and shown: any password replaced by ***."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


_Reserve = tuple[str, list[Ask]]
_Settle = tuple[str, list[Commit]]


class RedisCounters:
    def __init__(
        self,
        url: str,
        reservation_ttl_s: float = 30.0,
        prefix: str = "tokenabacus:",
        on_error: str = "closed",
        timeout_s: float = 0.5,
        owner: str | None = None,
    ) -> None:
        """``owner`` names this process's reservations: a restarted gateway passes the same one
        and ``reclaim``s what its previous life held. Reservations are leases of
        ``reservation_ttl_s``, renewed while their requests run."""
        if on_error not in ("closed", "open"):
            raise ValueError(f"on_error must be 'closed' or 'open', not {on_error!r}")
        self.url = mask_password(url)
        self.prefix = prefix
        self.on_error = on_error
        self.owner = owner or uuid.uuid4().hex
        self.ttl_ms = max(1, int(reservation_ttl_s * 1000))
        # No retries inside redis-py: a dead server must cost one timeout, not several. (The asyncio
        # Retry class: the synchronous one makes redis-py warn.)
        self._redis = Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, retry=Retry(NoBackoff(), 0)
        )
        self._reserve = self._redis.register_script(lua.RESERVE)
        self._settle = self._redis.register_script(lua.SETTLE)
        self._renew = self._redis.register_script(lua.RENEW)
        self._reclaim = self._redis.register_script(lua.RECLAIM)
        self._begin_seed = self._redis.register_script(lua.BEGIN_SEED)
        self._finish_seed = self._redis.register_script(lua.FINISH_SEED)
        self._correct = self._redis.register_script(lua.CORRECT)
        self._seed = self._redis.register_script(lua.SEED)
        self._invalidate = self._redis.register_script(lua.INVALIDATE)
        self._usage = self._redis.register_script(lua.USAGE)
        self._reserves: Batcher[_Reserve, Refusal | Missing | None] = Batcher(
            self._send_reserves, drop_unsent=True, orphan=self._orphaned
        )
        self._settles: Batcher[_Settle, None] = Batcher(self._send_settles, drop_unsent=False)
        self._fallback = MemoryCounters(reservation_ttl_s)
        # Requests whose reservation the fallback holds (monotonic deadline): they settle there too.
        self._local: dict[str, float] = {}
        self._local_swept = 0.0
        # Requests holding a reservation in Redis, and its keys: their leases are renewed.
        self._live: dict[str, list[str]] = {}
        self._renewer: asyncio.Task[None] | None = None
        self._seeding: dict[str, str] = {}  # counters this process seeds now: their token
        self._down_since: datetime | None = None
        self._retry_at = 0.0

    def _c(self, key: str) -> str:
        return f"{self.prefix}c:{key}"

    def _d(self, key: str) -> str:
        return f"{self.prefix}d:{key}"

    def _known_down(self) -> bool:
        """Down and not due for a retry: no need to queue for Redis."""
        return self._down_since is not None and time.monotonic() < self._retry_at

    async def _eval(self, script: AsyncScript, keys: list[str], args: list[Any]) -> Any:
        now = time.monotonic()
        if self._down_since is not None:
            if now < self._retry_at:
                raise Down
            self._retry_at = now + RETRY_S  # this call probes; others wait for the next second
        try:
            result = await script(keys=keys, args=args)
        except (RedisError, OSError) as e:  # OSError covers socket errors and builtin TimeoutError
            # A script that timed out may still have run; a reservation it made lapses after the TTL.
            self._retry_at = time.monotonic() + RETRY_S
            if self._down_since is None:
                self._down_since = datetime.now(UTC)
                then = "using local counters" if self.on_error == "open" else "refusing requests under limits"
                log.warning("redis unavailable at %s (%s): %s until it is back", self.url, e, then)
            raise Down from e
        if self._down_since is not None:
            log.info("redis is back at %s (down since %s)", self.url, self._down_since.isoformat())
            self._down_since = None
        return result

    def _unavailable(self) -> CountersUnavailable:
        return CountersUnavailable(f"the quota counters (Redis at {self.url}) are unavailable")

    async def reserve(self, request_id: str, asks: list[Ask]) -> Refusal | Missing | None:
        if not asks:
            return None  # nothing to hold: no need for Redis either
        if self._known_down():
            return await self._reserve_down(request_id, asks)
        fut = self._reserves.submit((request_id, asks))
        try:
            result = await fut
        except Down:
            return await self._reserve_down(request_id, asks)
        except asyncio.CancelledError:
            # Cancelled after the answer came but before this resumed: the reservation is made. (A cancel
            # while the batch is in flight cancels fut, and the batcher hands its answer to _orphaned.)
            if fut.done() and not fut.cancelled() and fut.exception() is None and fut.result() is None:
                self._release(request_id, asks)
            raise
        if result is None:
            self._live[request_id] = [a.key for a in asks]
            if self._renewer is None:
                self._renewer = asyncio.create_task(self._renew_leases(), name="redis-lease-renewal")
        return result

    async def _send_reserves(self, batch: list[_Reserve]) -> list[Refusal | Missing | None]:
        # Tuples: orjson writes slotted dataclasses several times slower.
        data = [(rid, [(a.key, a.amount, a.limit, a.expire_at_ms) for a in asks]) for rid, asks in batch]
        refused = await self._eval(self._reserve, [], [self.prefix, self.ttl_ms, self.owner, orjson.dumps(data)])
        results: list[Refusal | Missing | None] = [None] * len(batch)
        for i in range(0, len(refused), 4):
            pos, index, used = refused[i], int(refused[i + 1]), int(refused[i + 2])
            if used < 0:
                results[pos] = Missing([batch[pos][1][index].key])
            else:
                results[pos] = Refusal(index, used, int(refused[i + 3]))
        return results

    def _orphaned(self, item: _Reserve, result: Refusal | Missing | None) -> None:
        """A reserve whose caller was cancelled while its batch was in flight: undo what it got."""
        if result is None:
            self._release(*item)

    def _release(self, request_id: str, asks: list[Ask]) -> None:
        fut = self._settles.submit((request_id, [Commit(a.key, 0, a.expire_at_ms) for a in asks]))
        fut.add_done_callback(lambda f: f.cancelled() or f.exception())  # nobody awaits it: mark it seen

    async def _renew_leases(self) -> None:
        """Every third of a lease, extend the leases of the requests still running."""
        while True:
            await asyncio.sleep(self.ttl_ms / 3000)
            if not self._live:
                continue
            data = orjson.dumps(list(self._live.items()))
            try:
                await self._eval(self._renew, [], [self.prefix, self.ttl_ms, data])
            except Down:
                pass  # tried again next time; a lease that lapses meanwhile frees its room early

    async def reclaim(self) -> int:
        """Release every reservation a previous life of this owner left (it has none running)."""
        try:
            return int(await self._eval(self._reclaim, [], [self.prefix, self.owner]))
        except Down:
            return 0  # its leases lapse on their own

    async def _reserve_down(self, request_id: str, asks: list[Ask]) -> Refusal | Missing | None:
        if self.on_error == "closed":
            raise self._unavailable() from None
        now = time.monotonic()
        if now - self._local_swept >= 1.0:  # forget lapsed ones (the fallback released them) or this only grows
            self._local_swept = now
            self._local = {rid: t for rid, t in self._local.items() if t > now}
        refusal = await self._fallback.reserve(request_id, asks)
        if refusal is None:
            self._local[request_id] = now + self.ttl_ms / 1000
        return refusal

    def settle_now(self, request_id: str, commits: list[Commit]) -> Awaitable[None] | None:
        return asyncio.ensure_future(self.settle(request_id, commits))

    async def settle(self, request_id: str, commits: list[Commit]) -> None:
        """Never raises: the ledger has the use even when Redis does not. Returns once the settle's
        batch is done, so the next reserve sees this use."""
        self._live.pop(request_id, None)
        if self._local.pop(request_id, None) is not None:
            self._fallback.settle_now(request_id, commits)
        elif self._known_down():
            self._settle_down(request_id, commits)
        else:
            try:
                await self._settles.submit((request_id, commits))
            except Down:  # only when the sender was cancelled: a shutdown
                log.warning("redis settle cut short: use of request %s is not counted in Redis", request_id)

    async def _send_settles(self, batch: list[_Settle]) -> list[None]:
        # Falls back here, not in settle(): a settle whose caller stopped waiting still counts.
        try:
            data = [(rid, [(c.key, c.used, c.expire_at_ms) for c in commits]) for rid, commits in batch]
            await self._eval(self._settle, [], [self.prefix, self.owner, orjson.dumps(data)])
        except Down:
            for request_id, commits in batch:
                self._settle_down(request_id, commits)
        return [None] * len(batch)

    def _settle_down(self, request_id: str, commits: list[Commit]) -> None:
        if self.on_error == "open":
            self._fallback.settle_now(request_id, commits)
        else:
            log.warning("redis unavailable: use of request %s is not counted in Redis", request_id)

    async def begin_seed(self, key: str, expire_at_ms: int) -> str:
        token = uuid.uuid4().hex
        try:
            got = await self._eval(self._begin_seed, [self._c(key)], [expire_at_ms, SEED_LEASE_MS, token])
        except Down:
            if self.on_error == "closed":
                raise self._unavailable() from None
            return await self._fallback.begin_seed(key, expire_at_ms)
        if int(got) == 1:
            self._seeding[key] = token
            return SEED
        return SEEDED if int(got) == 0 else WAIT

    async def finish_seed(self, key: str, amount: int) -> None:
        token = self._seeding.pop(key, None)
        if token is None:  # begun in the fallback (Redis was down)
            return await self._fallback.finish_seed(key, amount)
        try:
            await self._eval(self._finish_seed, [self._c(key)], [amount, token])
        except Down:
            pass  # the seeding lapses and whoever reserves next seeds again

    async def correct(self, key: str, amount: int) -> None:
        try:
            await self._eval(self._correct, [self._c(key)], [amount])
        except Down:
            await self._fallback.correct(key, amount)

    async def invalidate(self, key: str) -> None:
        await self._fallback.invalidate(key)
        try:
            await self._eval(self._invalidate, [self._c(key)], [])
        except Down:
            pass  # when it is back, the counter there is checked by the reconciliation

    async def seed(self, key: str, used: int, expire_at_ms: int) -> None:
        try:
            await self._eval(self._seed, [self._c(key)], [used, expire_at_ms])
        except Down:
            await self._fallback.seed(key, used, expire_at_ms)  # the local counters start from the ledger too

    async def usage(self, keys: list[str]) -> list[tuple[int, int]]:
        if not keys:
            return []
        try:
            result = await self._eval(self._usage, [k for key in keys for k in (self._c(key), self._d(key))], [])
        except Down:
            if self.on_error == "closed":
                raise self._unavailable() from None
            return await self._fallback.usage(keys)
        return [(int(used), int(reserved)) for used, reserved in result]

    def health(self) -> dict:
        since = self._down_since.isoformat() if self._down_since else None
        return {"backend": "redis", "ok": since is None, "on_error": self.on_error, "url": self.url, "since": since}

    async def close(self) -> None:
        # Reserves first: a cancelled one may queue the settle that releases it.
        await self._reserves.drain()
        await self._settles.drain()
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer
        await self._redis.aclose()
