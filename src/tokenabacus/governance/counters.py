"""Counters for quotas and rate limits: settled use plus open reservations, per counter key.

A counter key names one limit's identity in one period (``quotas.counter_key``), so changing a
limit's number keeps its use, and a new period starts from zero. Admission reserves an upper bound
on every applicable counter at once, all or nothing; settle releases the reservation and adds
what the request really used. Backends: ``MemoryCounters`` (one process) and ``RedisCounters``
(many processes, atomic scripts).

The ledger is the truth and a counter is its cache. A counter is *ready* only once it was seeded
from the ledger: a reserve that meets a counter that is absent or not ready answers ``Missing``
instead of judging it, and the caller seeds it (``begin_seed`` resets its use to zero and starts
collecting settles; ``finish_seed`` adds what the ledger and the spool held before) and tries
again. So a counter that was forgotten (a restart, a Redis flush or eviction, a limit deleted and
set again) is rebuilt before anyone reserves on it, never judged from zero.
"""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Protocol

from tokenabacus.calendar import now_ms


@dataclass(frozen=True, slots=True)
class Ask:
    """Reserve ``amount`` on ``key`` if use + reservations + amount stays within ``limit``."""

    key: str
    amount: int
    limit: int
    expire_at_ms: int  # when the counter may be forgotten (the end of its period, plus a margin)


@dataclass(frozen=True, slots=True)
class Commit:
    """Release what was reserved on ``key`` for a request and add what it used."""

    key: str
    used: int
    expire_at_ms: int


@dataclass(frozen=True, slots=True)
class Missing:
    """Counters that must be seeded from the ledger before a reserve can be judged on them."""

    keys: list[str]


# begin_seed's answers
SEED, SEEDED, WAIT = "seed", "seeded", "wait"


@dataclass(frozen=True, slots=True)
class Refusal:
    """The first ask that did not fit, with the counter's state when it was judged."""

    index: int
    used: int
    reserved: int


class Counters(Protocol):
    async def reserve(self, request_id: str, asks: list[Ask]) -> Refusal | Missing | None:
        """All asks or none: None when every ask fit and is now reserved under ``request_id``;
        ``Missing`` when a counter is not ready (nothing was reserved)."""
        ...

    def settle_now(self, request_id: str, commits: list[Commit]) -> Awaitable[None] | None:
        """Release ``request_id``'s reservation on each key (if still held) and add its use: done
        when this returns None, else when the awaitable is (the counters need I/O)."""
        ...

    async def settle(self, request_id: str, commits: list[Commit]) -> None: ...

    async def begin_seed(self, key: str, expire_at_ms: int) -> str:
        """SEED: the counter now counts from zero and the caller must ``finish_seed`` it with the
        ledger's figure; SEEDED: it is ready; WAIT: another process is seeding it."""
        ...

    async def finish_seed(self, key: str, amount: int) -> None:
        """Add the ledger's figure to a counter being seeded, and mark it ready."""
        ...

    async def correct(self, key: str, amount: int) -> None:
        """Add ``amount`` to a ready counter (the ledger holds more than it counted)."""
        ...

    async def seed(self, key: str, used: int, expire_at_ms: int) -> None:
        """Set a counter's use and mark it ready, unless it is ready already."""
        ...

    async def invalidate(self, key: str) -> None:
        """Mark a counter not ready: the next reserve seeds it from the ledger again (its limit
        was away, and its counter missed what was used meanwhile)."""
        ...

    async def usage(self, keys: list[str]) -> list[tuple[int, int]]:
        """(used, reserved) for each key; (0, 0) for an unknown key."""
        ...

    async def reclaim(self) -> int:
        """Release every reservation a previous life of this gateway left behind (it has none
        running yet); how many were released."""
        ...

    def health(self) -> dict: ...

    async def close(self) -> None: ...


@dataclass(slots=True)
class _Counter:
    used: int
    expire_at_ms: int
    reserved: int = 0
    ready: bool = False  # seeded from the ledger
    seeding: bool = False


class MemoryCounters:
    """Counters in this process. The event loop is single-threaded and nothing here awaits, so a
    check-then-add over several keys is atomic."""

    def __init__(self, reservation_ttl_s: float = 900.0) -> None:
        self.ttl_ms = int(reservation_ttl_s * 1000)
        self._counters: dict[str, _Counter] = {}
        # request_id -> key -> amount still reserved, and when the reservation lapses
        self._held: dict[str, tuple[int, dict[str, int]]] = {}
        self._last_sweep = 0

    def _get(self, key: str, expire_at_ms: int) -> _Counter:
        c = self._counters.get(key)
        if c is None:
            c = self._counters[key] = _Counter(0, expire_at_ms)
        return c

    def _sweep(self, now: int) -> None:
        """Drop lapsed reservations (a request that never settled) and expired counters."""
        if now - self._last_sweep < 1000:
            return
        self._last_sweep = now
        for rid in [r for r, (deadline, _) in self._held.items() if deadline <= now]:
            self._release(rid)
        for key in [k for k, c in self._counters.items() if c.expire_at_ms <= now and c.reserved == 0]:
            del self._counters[key]

    def _release(self, request_id: str) -> dict[str, int]:
        _, held = self._held.pop(request_id, (0, {}))
        for key, amount in held.items():
            c = self._counters.get(key)
            if c is not None:
                c.reserved -= amount
        return held

    async def reserve(self, request_id: str, asks: list[Ask]) -> Refusal | Missing | None:
        return self.reserve_now(request_id, asks)

    def reserve_now(self, request_id: str, asks: list[Ask]) -> Refusal | Missing | None:
        now = now_ms()
        self._sweep(now)
        missing = [a.key for a in asks if not ((c := self._counters.get(a.key)) and c.ready)]
        if missing:
            return Missing(missing)
        for i, a in enumerate(asks):
            c = self._counters[a.key]
            if c.used + c.reserved + a.amount > a.limit:
                return Refusal(i, c.used, c.reserved)
        held: dict[str, int] = {}
        for a in asks:
            self._get(a.key, a.expire_at_ms).reserved += a.amount
            held[a.key] = held.get(a.key, 0) + a.amount
        if held:
            self._held[request_id] = (now + self.ttl_ms, held)
        return None

    async def settle(self, request_id: str, commits: list[Commit]) -> None:
        self.settle_now(request_id, commits)

    def settle_now(self, request_id: str, commits: list[Commit]) -> None:
        """Synchronous: the serving layer settles without a task per request. Use added to a
        counter that is not ready is harmless: seeding starts it from zero again."""
        self._release(request_id)
        for c in commits:
            if c.used:
                self._get(c.key, c.expire_at_ms).used += c.used

    async def begin_seed(self, key: str, expire_at_ms: int) -> str:
        c = self._counters.get(key)
        if c is not None and c.ready:
            return SEEDED
        if c is not None and c.seeding:
            return WAIT
        if c is None:
            c = self._counters[key] = _Counter(0, expire_at_ms)
        c.used, c.seeding, c.expire_at_ms = 0, True, max(c.expire_at_ms, expire_at_ms)
        return SEED

    async def finish_seed(self, key: str, amount: int) -> None:
        c = self._counters.get(key)
        if c is not None and c.seeding:
            c.used += amount
            c.seeding, c.ready = False, True

    async def correct(self, key: str, amount: int) -> None:
        c = self._counters.get(key)
        if c is not None and c.ready:
            c.used += amount

    async def invalidate(self, key: str) -> None:
        c = self._counters.get(key)
        if c is not None:
            c.ready = False

    async def seed(self, key: str, used: int, expire_at_ms: int) -> None:
        c = self._counters.get(key)
        if c is None or not c.ready:
            reserved = c.reserved if c else 0
            self._counters[key] = _Counter(used, expire_at_ms, reserved, ready=True)

    async def usage(self, keys: list[str]) -> list[tuple[int, int]]:
        out = []
        for k in keys:
            c = self._counters.get(k)
            out.append((c.used, c.reserved) if c else (0, 0))
        return out

    async def reclaim(self) -> int:
        return 0  # nothing outlives this process

    def health(self) -> dict:
        return {"backend": "memory", "ok": True, "counters": len(self._counters), "reservations": len(self._held)}

    async def close(self) -> None:
        pass
