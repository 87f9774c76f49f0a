"""A brake on guessing keys.

Failed authentications are counted per client IP and per presented key prefix in a sliding window
(the previous fixed window, weighted by how much of it still overlaps, plus the current one: O(1)
memory per address). Past the limit, that IP or prefix is locked out for a while, and every request
presenting a key from it is refused *before* the key is looked up, so a locked-out guesser learns
nothing, not even that a guess was right. Counting by prefix too stops a guesser who spreads one
key's guesses over many addresses.

Memory is bounded (``max_tracked`` counters and locks; the least recently failing are forgotten
first). A request from an IP that is not locked costs one truth test while nothing is locked
anywhere, and one or two dict lookups otherwise. Everything runs on the event loop: no locks.
State is per process, like the in-process counters.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

from tokenabacus.config.auth import AuthBrakeConfig
from tokenabacus.governance.access import parse_ip

PREFIX_CHARS = 12  # what identifies a guessed key: "sk-" and 9 random characters
BY_IP, BY_PREFIX = "ip", "key_prefix"


@dataclass(frozen=True, slots=True)
class Lockout:
    """A lock that just started: what the gateway logs and counts (never the key itself)."""

    by: str  # BY_IP or BY_PREFIX
    who: str  # the IP; for a prefix, nothing of the key (a prefix is part of a secret)
    failures: int
    seconds: float


@lru_cache(maxsize=4096)
def client_block(ip: str) -> str:
    """What one client is: an IPv4 address, or an IPv6 address's /64 (a single host commonly holds
    a whole /64, so counting its addresses one by one would brake nothing)."""
    if ":" not in ip:
        return ip
    addr = parse_ip(ip)  # an IPv4 client on a dual-stack socket is its IPv4 address
    if addr is None:
        return ip
    if addr.version == 4:
        return str(addr)
    return str(ipaddress.ip_network(f"{addr}/64", strict=False))


class AuthBrake:
    def __init__(self, cfg: AuthBrakeConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.enabled = cfg.enabled
        self.max_failures = cfg.max_failures
        self.window = cfg.window_s
        self.lockout = cfg.lockout_s
        self.max_tracked = cfg.max_tracked
        self.clock = clock
        # (kind, who) -> (window number, failures in the previous window, in this one)
        self._counts: OrderedDict[tuple[str, str], tuple[int, int, int]] = OrderedDict()
        # kind -> who -> locked until (clock). Plain strings as keys: a check is one dict lookup.
        self._locked: dict[str, dict[str, float]] = {BY_IP: {}, BY_PREFIX: {}}
        self._by_ip, self._by_prefix = self._locked[BY_IP], self._locked[BY_PREFIX]

    def _ids(self, ip: str | None, key: str | None) -> list[tuple[str, str]]:
        out = []
        if ip:
            out.append((BY_IP, client_block(ip)))
        if key:
            out.append((BY_PREFIX, key[:PREFIX_CHARS]))
        return out

    def locked(self, ip: str | None, key: str | None) -> int | None:
        """Seconds until this IP and key prefix may try again (for retry-after), or None."""
        by_ip, by_prefix = self._by_ip, self._by_prefix
        # Usually nothing is locked anywhere: two truth tests. Otherwise a dict lookup per kind
        # that has locks (an IPv4 address needs no parsing).
        until_ip = by_ip.get(ip if ":" not in ip else client_block(ip)) if by_ip and ip else None
        until_key = by_prefix.get(key[:PREFIX_CHARS]) if by_prefix and key else None
        if until_ip is None and until_key is None:
            return None
        now = self.clock()
        wait = max(until_ip or 0.0, until_key or 0.0) - now
        if wait <= 0:
            for kind, who in self._ids(ip, key):  # ended: forget it
                if self._locked[kind].get(who, now) <= now:
                    self._locked[kind].pop(who, None)
            return None
        return math.ceil(wait)

    def failed(self, ip: str | None, key: str | None) -> list[Lockout]:
        """Count one failed authentication; the locks it started (usually none)."""
        if not self.enabled:
            return []
        now = self.clock()
        number = int(now // self.window)
        into = now / self.window - number  # how far into the current window (0..1)
        started = []
        for ident in self._ids(ip, key):
            seen, before, current = self._counts.pop(ident, (number, 0, 0))
            if seen != number:  # a later window: the last one's count is "before", or nothing
                before, current = (current if seen == number - 1 else 0), 0
            current += 1
            self._counts[ident] = (number, before, current)
            if len(self._counts) > self.max_tracked:
                self._counts.popitem(last=False)
            estimate = before * (1 - into) + current
            kind, who = ident
            if estimate >= self.max_failures and self._locked[kind].get(who, 0.0) <= now:
                self._lock(self._locked[kind], who, now)
                started.append(Lockout(kind, who if kind == BY_IP else "", round(estimate), self.lockout))
        return started

    def _lock(self, locks: dict[str, float], who: str, now: float) -> None:
        if len(locks) >= self.max_tracked:
            for old in [k for k, until in locks.items() if until <= now]:
                del locks[old]
            while len(locks) >= self.max_tracked:  # still full: the oldest lock ends first
                del locks[next(iter(locks))]
        locks[who] = now + self.lockout

    def active(self) -> dict[str, int]:
        """Locks in force now, by kind (for /metrics, read from a scrape's thread: a copy first)."""
        now = self.clock()
        return {kind: sum(1 for until in list(locks.values()) if until > now) for kind, locks in self._locked.items()}
