"""Alert rules and scheduled reports as the config declares them (``alerts:`` in tokenabacus.yaml).

Every rule names the channels it goes to (all of them by default); each kind judges one thing:

- ``quota``: a limit's use reached a threshold (80% and 100% by default), once per limit,
  threshold and period;
- ``spike``: a department's, project's or user's usage today, so far or projected to the end of
  the day, at or above ``factor_pct`` of its trailing daily mean (default 300% of 7 days), above
  a minimum volume; ``metric: tokens_per_request`` watches the size of requests instead (bulk
  thousand-token prompts);
- ``burst``: requests or tokens in one minute from one key or client IP above a threshold;
- ``drift``: our count and the upstream's differ by more than a tolerance today;
- ``error_rate``: errors among the last minutes' requests above a share;
- ``upstream_down``: a model's engine not ready.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tokenabacus.config.channels import ChannelConfig

Severity = Literal["info", "warning", "critical"]


class _Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    name: str = Field(min_length=1, max_length=100, pattern=r"^[\w.-]+$")
    channels: list[str] | None = None  # channel names; None: every channel
    severity: Severity = "warning"
    cooldown_minutes: float | None = Field(None, ge=0)  # None: alerts.cooldown_minutes


class QuotaRule(_Rule):
    type: Literal["quota"]
    thresholds: list[float] = Field(default_factory=lambda: [80.0, 100.0], min_length=1)

    @model_validator(mode="after")
    def _sane(self) -> QuotaRule:
        if any(not 0 < t <= 1000 for t in self.thresholds):
            raise ValueError("quota thresholds are percentages above 0 (e.g. 80, 100)")
        self.thresholds = sorted(set(self.thresholds))
        return self


class SpikeRule(_Rule):
    type: Literal["spike"]
    scope: Literal["department", "project", "user"] = "department"
    metric: Literal["tokens", "requests", "cost", "tokens_per_request"] = "tokens"
    factor_pct: float = Field(300.0, gt=100)
    baseline_days: int = Field(7, ge=1, le=90)
    # Below these today (so far), nothing pages anyone: tiny users spike all the time.
    min_tokens: int = Field(100_000, ge=0)
    min_requests: int = Field(50, ge=0)
    # A projection needs this much of the day behind it before it can fire on its own.
    project_after_hours: float = Field(2.0, ge=0, le=24)


class BurstRule(_Rule):
    type: Literal["burst"]
    by: Literal["key_id", "client_ip", "user"] = "key_id"
    requests_per_minute: int | None = Field(600, ge=1)
    tokens_per_minute: int | None = Field(None, ge=1)
    window_minutes: int = Field(5, ge=1, le=120)


class DriftRule(_Rule):
    type: Literal["drift"]
    tolerance_pct: float = Field(2.0, ge=0)
    min_tokens: int = Field(10_000, ge=0)


class ErrorRateRule(_Rule):
    type: Literal["error_rate"]
    max_pct: float = Field(10.0, gt=0, le=100)
    min_requests: int = Field(20, ge=1)
    window_minutes: int = Field(15, ge=1, le=1440)


class UpstreamDownRule(_Rule):
    type: Literal["upstream_down"]
    for_seconds: float = Field(60.0, ge=0)
    severity: Severity = "critical"


Rule = Annotated[
    QuotaRule | SpikeRule | BurstRule | DriftRule | ErrorRateRule | UpstreamDownRule, Field(discriminator="type")
]


class ScheduleConfig(BaseModel):
    """A report sent on a schedule: daily at ``at``, weekly on ``weekday``, monthly on ``day``,
    in ``timezone`` (default governance.timezone); it covers the period that just ended."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    name: str = Field(min_length=1, max_length=100, pattern=r"^[\w.-]+$")
    every: Literal["day", "week", "month"] = "day"
    at: str = Field("09:00", pattern=r"^([01]\d|2[0-3]):[0-5]\d$")
    weekday: Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"] = "mon"
    day: int = Field(1, ge=1, le=28)
    timezone: str | None = None
    channels: list[str] | None = None
    attach: Literal["xlsx", "csv", "none"] = "xlsx"
    top: int = Field(5, ge=1, le=50)


class AlertsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    enabled: bool = True
    language: Literal["zh", "en"] = "zh"
    dashboard_url: str | None = None  # linked from every message
    evaluate_interval_s: float = Field(60.0, ge=1)
    cooldown_minutes: float = Field(60.0, ge=0)
    # Deliveries waiting per channel (durable, in the ledger; a channel may set its own); past it a
    # new alert is dropped for that channel (a warning, and tokenabacus_alert_deliveries_dropped_total).
    delivery_queue: int = Field(100, ge=1, le=100_000)
    channels: list[ChannelConfig] = Field(default_factory=list)
    rules: list[Rule] = Field(default_factory=list)
    schedules: list[ScheduleConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _names(self) -> AlertsConfig:
        channels = [c.name for c in self.channels]
        if len(set(channels)) != len(channels):
            raise ValueError("alerts.channels: two channels have the same name")
        for kind, items in (("rules", self.rules), ("schedules", self.schedules)):
            names = [r.name for r in items]
            if len(set(names)) != len(names):
                raise ValueError(f"alerts.{kind}: two have the same name")
            for r in items:
                unknown = sorted(set(r.channels or []) - set(channels))
                if unknown:
                    raise ValueError(f"alerts.{kind} {r.name!r}: no channel named {', '.join(unknown)}")
        return self
