"""Limits (quotas and rate limits) and the grants that raise them: what applies to a request.

A quota and a rate limit are the same thing at different periods: a rate limit is a limit per
minute. Each has an identity (scope, model filter, metric, period) that names its counter, so
changing its number keeps its use. The config file declares limits; ``quota set`` stores more at
run time, and a stored limit with the same identity replaces the declared one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from tokenabacus.calendar import period_bounds
from tokenabacus.config import QuotaDecl
from tokenabacus.governance.keys import Identity
from tokenabacus.ledger.record import REJECTED, UsageRecord

RATE_PERIOD = "minute"
# A counter is kept a day past its period's end: a request still settling after the reset finds it.
KEEP_MS = 86_400_000


@dataclass(frozen=True, slots=True)
class Limit:
    quota_id: str
    scope_kind: str  # key | user | project | department | global
    scope_value: str | None
    model: str | None  # None: every model
    metric: str  # tokens | requests
    period: str  # minute | day | week | month | total
    limit: int
    source: str  # config | runtime
    identity: str = field(init=False, compare=False)  # names the counter: scope, model, metric, period

    def __post_init__(self) -> None:
        ident = f"{self.scope_kind}={self.scope_value or '*'}|model={self.model or '*'}|{self.metric}|{self.period}"
        object.__setattr__(self, "identity", ident)

    @property
    def is_rate(self) -> bool:
        return self.period == RATE_PERIOD

    def scope_label(self) -> str:
        who = "all callers" if self.scope_kind == "global" else f"{self.scope_kind} '{self.scope_value}'"
        return who + (f" on model '{self.model}'" if self.model else "")

    def counter_key(self, period_start_ms: int) -> str:
        return f"q:{self.identity}|{period_start_ms}"

    def covers(self, rec: UsageRecord) -> bool:
        """Whether a record counts against this limit (its scope and model filter)."""
        if self.model is not None and rec.model != self.model:
            return False
        if self.scope_kind == "global":
            return True
        return getattr(rec, _SCOPE_FIELD[self.scope_kind]) == self.scope_value

    def used_by(self, rec: UsageRecord) -> int:
        """What a record adds to this limit's counter, as the ledger sums it (ledger/usage.used_since)."""
        if self.metric == "requests":
            return 0 if rec.status == REJECTED else 1
        if self.metric == "tokens":
            return rec.total_tokens or 0
        # cost:CUR: what the record was charged in that currency (the enrich step ran before settle).
        return rec.cost_micros or 0 if rec.currency == self.metric[5:] else 0


_SCOPE_FIELD = {"key": "key_id", "user": "user", "project": "project", "department": "department"}


def config_limits(decls: Iterable[QuotaDecl]) -> list[Limit]:
    out = []
    for d in decls:
        kind, value = d.scope
        metric, amount = d.metric
        ident = f"{kind}={value or '*'}|model={d.model or '*'}|{metric}|{d.period}"
        qid = "cfg_" + hashlib.sha256(ident.encode()).hexdigest()[:10]
        out.append(Limit(qid, kind, value, d.model, metric, d.period, amount, "config"))
    return out


def row_limit(r: dict) -> Limit:
    return Limit(
        r["quota_id"],
        r["scope_kind"],
        r["scope_value"],
        r["model"],
        r["metric"],
        r["period"],
        int(r["limit_value"]),
        "runtime",
    )


@dataclass(frozen=True, slots=True)
class Grant:
    scope_kind: str
    scope_value: str | None
    model: str | None
    metric: str
    amount: int
    approved_at_ms: int

    def raises(self, lim: Limit, tz: ZoneInfo, now_ms: int) -> bool:
        """A grant raises a limit of its scope, metric and model for the period it was approved in."""
        if lim.is_rate or (lim.scope_kind, lim.scope_value, lim.model, lim.metric) != (
            self.scope_kind,
            self.scope_value,
            self.model,
            self.metric,
        ):
            return False
        start, end = period_bounds(lim.period, now_ms, tz)
        return start <= self.approved_at_ms < end


# Distinct callers whose applicable limits are remembered per snapshot (the hot path's lookups).
CACHED_CALLERS = 10_000


class LimitSet:
    """An immutable snapshot of the limits in force, indexed by scope for the hot path."""

    def __init__(self, limits: list[Limit], grants: list[Grant], tz: ZoneInfo) -> None:
        by_identity = {lim.identity: lim for lim in limits if lim.source == "config"}
        by_identity.update({lim.identity: lim for lim in limits if lim.source == "runtime"})
        self.limits = list(by_identity.values())
        self.grants = grants
        self.tz = tz
        self._by_scope: dict[tuple[str, str | None], list[Limit]] = {}
        for lim in self.limits:
            self._by_scope.setdefault((lim.scope_kind, lim.scope_value), []).append(lim)
        self._applicable: dict[tuple, list[Limit]] = {}
        self._windows: dict[str, tuple[int, int]] = {}  # period -> the current one's bounds

    def __bool__(self) -> bool:
        return bool(self.limits)

    def applicable(self, ident: Identity, model: str) -> list[Limit]:
        return self.applicable_to(ident.key_id, ident.user, ident.project, ident.department, model)

    def applicable_to(
        self, key_id: str | None, user: str | None, project: str | None, department: str | None, model: str | None
    ) -> list[Limit]:
        if not self._by_scope:
            return []
        who = (key_id, user, project, department, model)
        found = self._applicable.get(who)
        if found is None:
            if len(self._applicable) >= CACHED_CALLERS:
                self._applicable.clear()
            found = self._applicable[who] = self._find(who)
        return found

    def _find(self, who: tuple[str | None, ...]) -> list[Limit]:
        key_id, user, project, department, model = who
        out: list[Limit] = []
        for scope in (
            ("key", key_id),
            ("user", user),
            ("project", project),
            ("department", department),
            ("global", None),
        ):
            if scope[1] is None and scope[0] != "global":
                continue
            for lim in self._by_scope.get(scope, ()):
                if lim.model is None or lim.model == model:
                    out.append(lim)
        # Rate limits are judged first: a flood is told to slow down, not that its month is spent.
        out.sort(key=lambda lim: not lim.is_rate)
        return out

    def granted(self, lim: Limit, now_ms: int) -> int:
        return sum(g.amount for g in self.grants if g.raises(lim, self.tz, now_ms))

    def effective(self, lim: Limit, now_ms: int) -> int:
        return lim.limit + (self.granted(lim, now_ms) if self.grants else 0)

    def window(self, lim: Limit, now_ms: int) -> tuple[int, int]:
        w = self._windows.get(lim.period)
        if w is None or not w[0] <= now_ms < w[1]:
            w = self._windows[lim.period] = period_bounds(lim.period, now_ms, self.tz)
        return w
