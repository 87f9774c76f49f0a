"""The config file's ``prices:``: price versions declared as exact decimals."""

from __future__ import annotations

from datetime import UTC, date, datetime

from pydantic import ConfigDict, Field, model_validator

from tokenabacus.calendar import parse_time
from tokenabacus.config.base import _Strict
from tokenabacus.money import check_currency, parse_price


class PriceDecl(_Strict):
    """A price version in the config file, e.g. ``{model: qwen-7b, input: 0.8, output: 2.4,
    cached: 0.2, per: 1k, currency: CNY, from: "2026-11-01"}``. Prices are exact decimals (a YAML
    number is read as it was written); ``from`` without a zone is in governance.timezone, and an
    entry without ``from`` has always been in force. A version set at run time with the same model
    and start replaces this one (billing/prices.PriceBook)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    model: str = Field(min_length=1, max_length=200)
    input: str | int | float
    output: str | int | float
    cached: str | int | float | None = None  # None: cached input tokens at the input price
    per: str | int  # 1k or 1M tokens
    currency: str = "CNY"
    from_: str | datetime | date | None = Field(None, alias="from")
    note: str | None = None

    @model_validator(mode="after")
    def _exact(self) -> PriceDecl:
        self.micros()
        self.currency = check_currency(self.currency)
        if self.from_ is not None:
            parse_time(self.from_, UTC, "from")
        return self

    def micros(self) -> tuple[int, int | None, int]:
        """(input, cached, output) in micros per 1M tokens; ValueError names a bad one."""
        cached = None if self.cached is None else parse_price(self.cached, self.per, "cached")
        return parse_price(self.input, self.per, "input"), cached, parse_price(self.output, self.per, "output")
