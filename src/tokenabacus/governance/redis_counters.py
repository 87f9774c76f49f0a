"""Counters shared by many gateway processes, in Redis: every operation is one Lua script, so one
atomic round trip, and a reserve over several keys is all or nothing across processes.

Redis keys (all under ``prefix``), for counter key K and request R:
  ``c:K``  hash: ``used``, ``reserved`` (the sum of live reservations), and ``r:R`` = R's amount
  ``d:K``  sorted set: R scored by the server time (ms) when its reservation lapses
  ``q:R``  set: the counter keys R holds, so settle releases them all (as ``MemoryCounters`` does)
``c:K`` and ``d:K`` expire at the counter's ``expire_at_ms``, ``q:R`` when R's reservation lapses.
Settle reaches the keys named in ``q:R``, so this needs a single Redis server, not Cluster.

When Redis fails: ``on_error="closed"`` refuses reserves (``CountersUnavailable``); ``"open"``
counts in a local ``MemoryCounters`` until Redis answers again (retried at most once a second).
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from redis.asyncio import Redis
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError
from redis.retry import Retry

from tokenabacus.governance.counters import Ask, Commit, MemoryCounters, Refusal
from tokenabacus.governance.errors import CountersUnavailable

log = logging.getLogger(__name__)

RETRY_S = 1.0  # while Redis is down, try it again at most this often

# Shared by the scripts that judge or report "reserved": lapse by the server's clock, never a client's.
_LAPSE = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
-- Drop reservations whose holder never settled (its process died), so they block nobody.
local function sweep(c, d, now)
  local lapsed = redis.call('ZRANGEBYSCORE', d, '-inf', now)
  for _, rid in ipairs(lapsed) do
    local amount = redis.call('HGET', c, 'r:' .. rid)
    if amount then
      redis.call('HDEL', c, 'r:' .. rid)
      redis.call('HINCRBY', c, 'reserved', '-' .. amount)
    end
  end
  if #lapsed > 0 then redis.call('ZREMRANGEBYSCORE', d, '-inf', now) end
end
"""

# KEYS: c, d per ask, then q. ARGV: request id, ttl ms, then key, amount, limit, expire_at_ms per ask.
_RESERVE = (
    _LAPSE
    + """
local rid, n = ARGV[1], (#KEYS - 1) / 2
local now = now_ms()
for i = 1, n do
  local c, d, a = KEYS[2 * i - 1], KEYS[2 * i], 3 + 4 * (i - 1)
  sweep(c, d, now)
  local v = redis.call('HMGET', c, 'used', 'reserved')
  local used, reserved = tonumber(v[1]) or 0, tonumber(v[2]) or 0
  if used + reserved + tonumber(ARGV[a + 1]) > tonumber(ARGV[a + 2]) then
    return {i - 1, used, reserved}
  end
end
local deadline = string.format('%d', now + tonumber(ARGV[2]))
for i = 1, n do
  local c, d, a = KEYS[2 * i - 1], KEYS[2 * i], 3 + 4 * (i - 1)
  redis.call('HINCRBY', c, 'reserved', ARGV[a + 1])
  redis.call('HINCRBY', c, 'r:' .. rid, ARGV[a + 1])
  redis.call('ZADD', d, deadline, rid)
  redis.call('PEXPIREAT', c, ARGV[a + 3])
  redis.call('PEXPIREAT', d, ARGV[a + 3])
  redis.call('SADD', KEYS[#KEYS], ARGV[a])
end
if n > 0 then redis.call('PEXPIREAT', KEYS[#KEYS], deadline) end
return 0
"""
)

# KEYS: q, then c, d per commit. ARGV: prefix, request id, then used, expire_at_ms per commit.
# Releasing a lapsed but not yet swept reservation is what the sweep would do, so no clock here.
_SETTLE = """
local prefix, rid = ARGV[1], ARGV[2]
local function release(c, d)
  local amount = redis.call('HGET', c, 'r:' .. rid)
  if amount then
    redis.call('HDEL', c, 'r:' .. rid)
    redis.call('HINCRBY', c, 'reserved', '-' .. amount)
  end
  redis.call('ZREM', d, rid)
end
for _, key in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  release(prefix .. 'c:' .. key, prefix .. 'd:' .. key)
end
redis.call('DEL', KEYS[1])
for i = 1, (#KEYS - 1) / 2 do
  local c, d, a = KEYS[2 * i], KEYS[2 * i + 1], 3 + 2 * (i - 1)
  release(c, d)  -- q:R is gone once R lapsed; a lapsed entry may still sit here unswept
  if tonumber(ARGV[a]) ~= 0 then
    redis.call('HINCRBY', c, 'used', ARGV[a])
    redis.call('PEXPIREAT', c, ARGV[a + 1])
  end
end
return 0
"""

# KEYS: c. ARGV: used, expire_at_ms. The whole counter must be absent, not just its use.
_SEED = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'used', ARGV[1], 'reserved', 0)
redis.call('PEXPIREAT', KEYS[1], ARGV[2])
return 1
"""

# KEYS: c, d per key. Returns {used, reserved} per key, lapsed reservations swept first.
_USAGE = (
    _LAPSE
    + """
local now, out = now_ms(), {}
for i = 1, #KEYS / 2 do
  local c = KEYS[2 * i - 1]
  sweep(c, KEYS[2 * i], now)
  local v = redis.call('HMGET', c, 'used', 'reserved')
  out[i] = {tonumber(v[1]) or 0, tonumber(v[2]) or 0}
end
return out
"""
)


def mask_password(url: str) -> str:
    """The URL as it may be logged and shown: any password replaced by ***."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


class _Down(Exception):
    """Redis did not answer (or is known to be down and not due for a retry)."""


class RedisCounters:
    def __init__(
        self,
        url: str,
        reservation_ttl_s: float = 900.0,
        prefix: str = "tokenabacus:",
        on_error: str = "closed",
        timeout_s: float = 0.5,
    ) -> None:
        if on_error not in ("closed", "open"):
            raise ValueError(f"on_error must be 'closed' or 'open', not {on_error!r}")
        self.url = mask_password(url)
        self.prefix = prefix
        self.on_error = on_error
        self.ttl_ms = max(1, int(reservation_ttl_s * 1000))
        # No retries inside redis-py: a dead server must cost one timeout, not several.
        self._redis = Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, retry=Retry(NoBackoff(), 0)
        )
        self._reserve = self._redis.register_script(_RESERVE)
        self._settle = self._redis.register_script(_SETTLE)
        self._seed = self._redis.register_script(_SEED)
        self._usage = self._redis.register_script(_USAGE)
        self._fallback = MemoryCounters(reservation_ttl_s)
        # Requests whose reservation the fallback holds (monotonic deadline): they settle there too.
        self._local: dict[str, float] = {}
        self._local_swept = 0.0
        self._down_since: datetime | None = None
        self._retry_at = 0.0

    def _c(self, key: str) -> str:
        return f"{self.prefix}c:{key}"

    def _d(self, key: str) -> str:
        return f"{self.prefix}d:{key}"

    async def _eval(self, script: AsyncScript, keys: list[str], args: list[Any]) -> Any:
        now = time.monotonic()
        if self._down_since is not None:
            if now < self._retry_at:
                raise _Down
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
            raise _Down from e
        if self._down_since is not None:
            log.info("redis is back at %s (down since %s)", self.url, self._down_since.isoformat())
            self._down_since = None
        return result

    def _unavailable(self) -> CountersUnavailable:
        return CountersUnavailable(f"the quota counters (Redis at {self.url}) are unavailable")

    async def reserve(self, request_id: str, asks: list[Ask]) -> Refusal | None:
        if not asks:
            return None  # nothing to hold: no need for Redis either
        keys = [k for a in asks for k in (self._c(a.key), self._d(a.key))] + [f"{self.prefix}q:{request_id}"]
        args: list[Any] = [request_id, self.ttl_ms]
        for a in asks:
            args += [a.key, a.amount, a.limit, a.expire_at_ms]
        try:
            result = await self._eval(self._reserve, keys, args)
        except _Down:
            if self.on_error == "closed":
                raise self._unavailable() from None
            return await self._reserve_locally(request_id, asks)
        if result == 0:
            return None
        index, used, reserved = result
        return Refusal(int(index), int(used), int(reserved))

    async def _reserve_locally(self, request_id: str, asks: list[Ask]) -> Refusal | None:
        now = time.monotonic()
        if now - self._local_swept >= 1.0:  # forget lapsed ones (the fallback released them) or this only grows
            self._local_swept = now
            self._local = {rid: t for rid, t in self._local.items() if t > now}
        refusal = await self._fallback.reserve(request_id, asks)
        if refusal is None:
            self._local[request_id] = now + self.ttl_ms / 1000
        return refusal

    async def settle(self, request_id: str, commits: list[Commit]) -> None:
        """Never raises: the ledger has the use even when Redis does not."""
        if self._local.pop(request_id, None) is not None:
            await self._fallback.settle(request_id, commits)
            return
        keys = [f"{self.prefix}q:{request_id}"] + [k for c in commits for k in (self._c(c.key), self._d(c.key))]
        args: list[Any] = [self.prefix, request_id]
        for c in commits:
            args += [c.used, c.expire_at_ms]
        try:
            await self._eval(self._settle, keys, args)
        except _Down:
            if self.on_error == "open":
                await self._fallback.settle(request_id, commits)
            else:
                log.warning("redis unavailable: use of request %s is not counted in Redis", request_id)

    async def seed(self, key: str, used: int, expire_at_ms: int) -> None:
        try:
            await self._eval(self._seed, [self._c(key)], [used, expire_at_ms])
        except _Down:
            await self._fallback.seed(key, used, expire_at_ms)  # the local counters start from the ledger too

    async def usage(self, keys: list[str]) -> list[tuple[int, int]]:
        if not keys:
            return []
        try:
            result = await self._eval(self._usage, [k for key in keys for k in (self._c(key), self._d(key))], [])
        except _Down:
            if self.on_error == "closed":
                raise self._unavailable() from None
            return await self._fallback.usage(keys)
        return [(int(used), int(reserved)) for used, reserved in result]

    def health(self) -> dict:
        since = self._down_since.isoformat() if self._down_since else None
        return {"backend": "redis", "ok": since is None, "on_error": self.on_error, "url": self.url, "since": since}

    async def close(self) -> None:
        await self._redis.aclose()
