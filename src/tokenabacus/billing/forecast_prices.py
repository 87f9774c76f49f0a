"""What a forecast token costs: a group's recent model mix priced by the price book, day by day.

A group's forecast cost is its forecast tokens priced per model at the version in force on each
day of the horizon, the tokens split among models (and, within a model, among uncached prompt,
cached prompt and completion tokens) as the group used them over the last ``MIX_DAYS`` complete
days. Why this and not a forecast of the cost series itself:

* The cost history mixes prices that no longer hold: a price cut halfway through the history is a
  step down that a trend model extrapolates into next month (down to ¥0 once the "trend" crosses
  zero), and a price rise scheduled for next month is invisible to it. The book knows the prices
  that will charge the horizon's requests, including versions that start within it.
* Tokens and cost then agree: the cost is the tokens at known prices, its interval is the tokens'
  interval at those prices, and one fit per group serves both.
* Per-model fits of the tokens would follow each model's own trend, but a model's daily series is
  sparse and noisy (a model used a few times a week cannot be fitted), the fits multiply, and the
  groups' intervals could not be added up. The group's total is the best-measured series; the
  recent mix is the best estimate of how it will be spread.

A model with no price in force stays unpriced: its share of the tokens is left out of the cost
(and said in the row's note), never charged as zero.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta, tzinfo

from tokenabacus.billing.prices import MTOK, PriceBook, PriceVersion
from tokenabacus.calendar import midnight_ms
from tokenabacus.ledger.usage_sums import ModelSum

MIX_DAYS = 28  # four whole weeks: every weekday's mix weighs the same


@dataclass(slots=True)
class Pricing:
    """Per currency, the price of one forecast token on each horizon day (micros, by step:
    index 0 is the day after the history), and the models left unpriced with their share."""

    rates: dict[str, list[float]] = field(default_factory=dict)
    unpriced: dict[str, float] = field(default_factory=dict)  # model -> share of the mix's tokens
    tokens: int = 0  # the mix's tokens (0: nothing recent to price by)


def exact_cost(pv: PriceVersion, s: ModelSum) -> int:
    """What ``s``'s tokens cost at ``pv``, in micros times 1M (billing.prices.cost_micros before
    its rounding): uncached prompt at the input price, cached at the cached price, completion at
    the output price."""
    hit = min(max(s.cached, 0), s.prompt)
    cached_price = pv.input if pv.cached is None else pv.cached
    return (s.prompt - hit) * pv.input + hit * cached_price + s.completion * pv.output


def pricing(book: PriceBook, mix: Mapping[str, ModelSum], days: list[date], today: date, zone: tzinfo) -> Pricing:
    """The price per forecast token on each of ``days`` (the horizon, steps counted from
    ``today``), per currency, for a group whose recent tokens per model are ``mix``. A day is
    priced at the versions in force when it begins."""
    out = Pricing(tokens=sum(s.prompt + s.completion for s in mix.values()))
    if not out.tokens or not days:
        return out
    steps = (days[-1] - today).days + 1
    for model, s in sorted(mix.items()):
        n = s.prompt + s.completion
        if not n:
            continue
        for d in days:
            pv = book.at(model, midnight_ms(d, zone))
            if pv is None:
                out.unpriced[model] = n / out.tokens
                continue
            rate = out.rates.setdefault(pv.currency, [0.0] * steps)
            rate[(d - today).days] += exact_cost(pv, s) / MTOK / out.tokens
    return out


def window(today: date) -> tuple[date, date]:
    """The days whose mix prices the forecast: the ``MIX_DAYS`` complete days before today."""
    return today - timedelta(days=MIX_DAYS), today
