"""Quotas, rate limits and fair sharing as the config declares them (``governance:``)."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from tokenabacus.config.base import _Strict
from tokenabacus.money import check_currency, parse_amount

SCOPES = ("key", "user", "project", "department", "global")
METRICS = ("tokens", "requests", "cost")  # cost: "cost:CNY" in storage, money in micro-units
PERIODS = ("minute", "day", "week", "month", "total")


class QuotaDecl(_Strict):
    """A limit in the config file: one scope (or ``global: true``), one metric, one period."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    key: str | None = None  # a key id
    user: str | None = None
    project: str | None = None
    department: str | None = None
    global_: bool = Field(False, alias="global")
    model: str | None = None
    tokens: int | None = Field(None, ge=0)
    requests: int | None = Field(None, ge=0)
    cost: str | int | float | None = None  # money, e.g. 5000 (in ``currency``)
    currency: str = "CNY"
    period: Literal["minute", "day", "week", "month", "total"]

    @model_validator(mode="after")
    def _one_of_each(self) -> QuotaDecl:
        scopes = [s for s in ("key", "user", "project", "department") if getattr(self, s)]
        if len(scopes) + int(self.global_) != 1:
            raise ValueError("name exactly one scope: key, user, project, department or global: true")
        if sum(x is not None for x in (self.tokens, self.requests, self.cost)) != 1:
            raise ValueError("give exactly one of tokens, requests or cost")
        if self.cost is not None:
            parse_amount(self.cost, "cost")
            self.currency = check_currency(self.currency)
        return self

    @property
    def scope(self) -> tuple[str, str | None]:
        for s in ("key", "user", "project", "department"):
            if getattr(self, s):
                return s, getattr(self, s)
        return "global", None

    @property
    def metric(self) -> tuple[str, int]:
        """(metric, limit): tokens, requests, or ``cost:CUR`` with the limit in micro-units."""
        if self.tokens is not None:
            return "tokens", self.tokens
        if self.cost is not None:
            return f"cost:{self.currency}", parse_amount(self.cost, "cost")
        return "requests", self.requests or 0


class RateLimitDecl(_Strict):
    """Requests and/or tokens per minute for a key, user, project, department or model."""

    key: str | None = None
    user: str | None = None
    project: str | None = None
    department: str | None = None
    model: str | None = None
    rpm: int | None = Field(None, ge=0)
    tpm: int | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _check(self) -> RateLimitDecl:
        scopes = [s for s in ("key", "user", "project", "department") if getattr(self, s)]
        if len(scopes) > 1 or not (scopes or self.model):
            raise ValueError("name one of key, user, project or department, or a model alone")
        if self.rpm is None and self.tpm is None:
            raise ValueError("give rpm, tpm or both")
        return self

    def quotas(self) -> list[QuotaDecl]:
        scope = {s: getattr(self, s) for s in ("key", "user", "project", "department") if getattr(self, s)}
        if not scope:
            scope = {"global": True}
        base = {**scope, "model": self.model, "period": "minute"}
        out = []
        if self.rpm is not None:
            out.append(QuotaDecl.model_validate({**base, "requests": self.rpm}))
        if self.tpm is not None:
            out.append(QuotaDecl.model_validate({**base, "tokens": self.tpm}))
        return out


class FairConfig(_Strict):
    weights: dict[str, float] = Field(default_factory=dict)  # project -> weight (default 1)
    queue_timeout_s: float = Field(30.0, gt=0)


class GovernanceConfig(_Strict):
    # Days, weeks (from Monday) and months start at midnight here: Asia/Shanghai cuts at Beijing midnight.
    timezone: str = "UTC"
    # What a request without max_tokens reserves (and is held to) when a token limit applies to it.
    default_max_tokens: int = Field(4096, ge=1)
    # A reservation is a lease its gateway renews while the request runs: one a dead process left
    # behind lapses this long after its last renewal (a restarted gateway reclaims its own at once).
    reservation_ttl_s: float = Field(30.0, gt=0)
    # How often every counter in use is compared with the ledger's sum and raised to it if lower.
    reconcile_interval_s: float = Field(30.0, gt=0)
    # A PostgreSQL or MariaDB ledger shared by gateways without Redis: quotas need one gateway to
    # hold the ledger's "local-counters" lease (see README "Quotas"); how long it lasts unrenewed.
    local_counters_lease_s: float = Field(30.0, gt=0)
    # How often running gateways look for quota, grant and org changes.
    refresh_interval_s: float = Field(1.0, gt=0)
    # A caller not allowed a model gets 404 as if it did not exist (true) or 403 (false).
    hide_forbidden_models: bool = False
    quotas: list[QuotaDecl] = Field(default_factory=list)
    rate_limits: list[RateLimitDecl] = Field(default_factory=list)
    fair: FairConfig = FairConfig()

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {v!r} (use an IANA name such as UTC or Asia/Shanghai)") from None
        return v

    def declared_quotas(self) -> list[QuotaDecl]:
        return [*self.quotas, *(q for r in self.rate_limits for q in r.quotas())]
