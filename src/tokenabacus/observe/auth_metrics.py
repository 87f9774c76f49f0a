"""/metrics for failed authentications and the brake on guessing keys (governance/brake.py).

Counted where they happen rather than from ledger records: only /v1 writes records, and a failed
/admin, console, /health or /metrics authentication must show too. Labels are fixed sets (the
route, what was locked), so an attack from many addresses adds no series."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

ROUTES = ("v1", "admin", "console", "health", "metrics")


class AuthMetrics:
    def __init__(self, registry: CollectorRegistry, active: Callable[[], dict[str, int]]) -> None:
        self.failures = Counter(
            "tokenabacus_auth_failures",
            "Failed authentications (a key or token nobody holds), by route: v1, admin, console, health, metrics.",
            ["route"], registry=registry,
        )  # fmt: skip
        self.refused = Counter(
            "tokenabacus_auth_refused",
            "Requests answered 429 because their client IP or key prefix is locked out after failed "
            "authentications, by route.",
            ["route"], registry=registry,
        )  # fmt: skip
        self.lockouts = Counter(
            "tokenabacus_auth_lockouts", "Lockouts started, by what was locked: ip or key_prefix.", ["by"],
            registry=registry,
        )  # fmt: skip
        for route in ROUTES:  # every series exists from the start, at 0
            self.failures.labels(route)
            self.refused.labels(route)
        registry.register(_Locked(active))


class _Locked(Collector):
    def __init__(self, read: Callable[[], dict[str, int]]) -> None:
        self.read = read

    def collect(self) -> Iterable[Any]:
        g = GaugeMetricFamily(
            "tokenabacus_auth_locked", "Client IPs and key prefixes locked out now, by kind.", labels=["by"]
        )
        for by, n in self.read().items():
            g.add_metric([by], n)
        yield g
