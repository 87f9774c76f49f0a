"""The brake on guessing keys as every route uses it: /v1, /admin, the console's sign-in, and the
admin views of /health and /metrics share one brake per process, so failures on one lock the
others too.

A caller whose IP or key prefix is locked out gets 429 with retry-after before its key is looked
up. Failures and lockouts are counted in /metrics and logged with the client IP, never a key or
any part of one (/v1 failures are in the ledger already, so only their lockouts are logged)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from tokenabacus.api.errors import APIError, unauthorized
from tokenabacus.governance.brake import AuthBrake
from tokenabacus.observe.auth_metrics import AuthMetrics

if TYPE_CHECKING:
    from tokenabacus.governance.keys import KeyCache

log = logging.getLogger(__name__)
AUTH_RATE_LIMITED = "auth_rate_limited"
KEY_EXPIRED = "key_expired"


def auth_rate_limited(wait_s: int) -> APIError:
    return APIError(
        429,
        f"Too many failed authentications from this address or with this key; try again in {wait_s} s.",
        "rate_limit_exceeded",
        None,
        AUTH_RATE_LIMITED,
        {"retry-after": str(wait_s)},
    )


def key_refusal(keys: KeyCache, key: str | None, timezone: str, fallback: APIError | None = None) -> APIError:
    """The 401 for a key that identified nobody: ``key_expired`` with the day it expired, else
    ``fallback`` (default: the usual invalid_api_key)."""
    at = keys.expired_at(key) if key else None
    if at is None:
        return fallback or unauthorized()
    from tokenabacus.calendar import zone_named
    from tokenabacus.governance.keylife import expired_message

    return APIError(401, expired_message(at, zone_named(timezone)), "invalid_request_error", None, KEY_EXPIRED)


class AuthGuard:
    def __init__(self, brake: AuthBrake, metrics: AuthMetrics) -> None:
        self.brake = brake
        self.metrics = metrics

    def refusal(self, route: str, ip: str | None, key: str | None) -> APIError | None:
        """The 429 for a locked-out caller, or None (the usual case, at the cost of a truth test)."""
        wait = self.brake.locked(ip, key)
        if wait is None:
            return None
        self.metrics.refused.labels(route).inc()
        return auth_rate_limited(wait)

    def failed(self, route: str, ip: str | None, key: str | None) -> None:
        """A key (or token) nobody holds was presented."""
        self.metrics.failures.labels(route).inc()
        if route != "v1":
            log.warning("failed authentication on %s from %s", route, ip or "an unknown address")
        for lock in self.brake.failed(ip, key):
            self.metrics.lockouts.labels(lock.by).inc()
            who = f"client {lock.who}" if lock.who else "a key prefix"
            log.warning(
                "locking out %s for %g s after %d failed authentications (the last on %s from %s)",
                who,
                lock.seconds,
                lock.failures,
                route,
                ip or "an unknown address",
            )
