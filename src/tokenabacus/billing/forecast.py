"""Forecasts of tokens and cost per project or department from the ledger's daily history.

The model is statsmodels' ``UnobservedComponents``: a local linear trend (level and slope) plus a
stochastic weekly seasonal and noise, fitted by maximum likelihood with an exact diffuse start.
Why this one and not Holt-Winters (``ExponentialSmoothing`` / ETS(A,A,A)): finance wants the total
over a month or a quarter with an interval, and that interval has to carry the uncertainty of the
level, slope and weekday pattern *estimated from the history*. The ETS forms treat their fitted
initial states as known, so their interval for the total is far too narrow (on simulated 60-day
histories an "80%" interval held the true 30-day total 42% of the time, the 90-day total 22%);
the Kalman filter's diffuse start carries that estimation error into the state covariance, and the
same experiment covers 85% and 90%. The total over the horizon is Gaussian with a variance
computed exactly from the state space (forecast errors of consecutive days are correlated, so
the per-day intervals statsmodels reports cannot simply be added up).

The cost is the forecast tokens priced by the price book, day by day, at the group's recent model
mix (billing/forecast_prices.py says why, rather than a forecast of the cost series). Fits are kept
per series, so a second forecast of the same day answers without fitting (billing/forecast_model.py).

Money stays integer micro-units; the days are cut in a time zone. The history is the ledger's
daily sums (ledger/usage_sums.py, which bill.py shares).
"""

from __future__ import annotations

import calendar
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta, tzinfo
from pathlib import Path
from statistics import NormalDist
from typing import TYPE_CHECKING

from tokenabacus.billing import forecast_prices as fp
from tokenabacus.billing.forecast_model import Fitted, fit, moments
from tokenabacus.billing.prices import PriceBook, PriceVersion
from tokenabacus.calendar import midnight_ms
from tokenabacus.dates import check_day
from tokenabacus.ledger.usage_sums import DaySum, ModelSum, daily_sums, model_sums

if TYPE_CHECKING:
    from tokenabacus.ledger.database import Database

LEVEL = 0.80  # the interval: 80%, the planning figure (95% on a quarter is too wide to budget with)
MIN_DAYS = 14  # two full weeks: less cannot tell a weekday pattern from a trend
LOOKBACK_DAYS = 365  # history read: a year is plenty for a trend and a week
MAX_HORIZON_DAYS = 366
GROUPS = ("project", "department")
_NDAYS = re.compile(r"^(\d{1,3})\s*d(ays?)?$")


# A forecast row's columns, as printed and exported (CLI and /admin/forecast alike).
COLUMNS = ["history_days", "from", "to", "days", "level", "tokens", "tokens_low", "tokens_high", "currency"]
MONEY = ["cost_micros", "cost_low_micros", "cost_high_micros"]


# With the month-end horizon: what the month's complete days used, and that plus the forecast.
MONTH_END = ["so_far_tokens", "month_tokens", "month_tokens_low", "month_tokens_high"]
MONTH_END += ["so_far_cost_micros", "month_cost_micros", "month_cost_low_micros", "month_cost_high_micros"]


def columns(by: str, horizon: str = "") -> list[str]:
    extra = MONTH_END if horizon.strip().lower() == "month-end" else []
    return [by, *COLUMNS, *MONEY, *extra, "note"]


def parse_day(text: str, what: str) -> date:
    try:
        day = date.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"{what} {text!r}: expected a date like 2026-11-01") from None
    check_day(day, what, text)
    return day


# Horizons -----------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Horizon:
    first: date
    last: date
    label: str
    # month-end: the month's complete days before today are actual figures, added to the forecast.
    actual_from: date | None = None

    @property
    def days(self) -> int:
        return (self.last - self.first).days + 1


def _next_month(day: date) -> date:
    return date(day.year + day.month // 12, day.month % 12 + 1, 1)


def parse_horizon(spec: str, today: date) -> Horizon:
    """``30d`` / ``90d`` (that many days from today on), ``month`` (the next calendar month),
    ``quarter`` (the next calendar quarter), ``month-end`` (this month: its complete days as
    recorded, the rest from today forecast)."""
    s = spec.strip().lower()
    if m := _NDAYS.match(s):
        n = int(m.group(1))
        if not 1 <= n <= MAX_HORIZON_DAYS:
            raise ValueError(f"horizon {spec!r}: give 1 to {MAX_HORIZON_DAYS} days")
        return Horizon(today, today + timedelta(days=n - 1), f"the {n} days from {today.isoformat()}")
    if s == "month-end":
        last = today.replace(day=calendar.monthrange(today.year, today.month)[1])
        return Horizon(
            today, last, f"{today:%Y-%m} (actual to {today.isoformat()}, then forecast)", today.replace(day=1)
        )
    if s == "month":
        first = _next_month(today)
        last = first.replace(day=calendar.monthrange(first.year, first.month)[1])
        return Horizon(first, last, f"{first:%Y-%m}")
    if s == "quarter":
        q = (today.month - 1) // 3  # this quarter, 0-3
        first = date(today.year + (q == 3), (q + 1) % 4 * 3 + 1, 1)
        end = _next_month(_next_month(first))
        last = end.replace(day=calendar.monthrange(end.year, end.month)[1])
        return Horizon(first, last, f"{first.year}-Q{(first.month - 1) // 3 + 1}")
    raise ValueError(f"horizon {spec!r}: use 30d, 90d (any 1-{MAX_HORIZON_DAYS}d), month, quarter or month-end")


# The model ----------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Total:
    """A forecast total with its interval (the low end floored at zero: usage is never negative)."""

    point: int
    low: int
    high: int


def _total(fitted: Fitted | None, weights: Sequence[float], level: float) -> Total | None:
    if fitted is None:
        return None
    mean, var = moments(fitted, weights)
    if not (math.isfinite(mean) and math.isfinite(var)):
        return None
    half = NormalDist().inv_cdf(0.5 + level / 2) * math.sqrt(max(var, 0.0))
    return Total(max(round(mean), 0), max(round(mean - half), 0), max(round(mean + half), 0))


def _window(start: int, end: int) -> list[float]:
    return [0.0] * (start - 1) + [1.0] * (end - start + 1)


def forecast_total(
    y: Sequence[float], start: int, end: int, level: float = LEVEL, cache_dir: Path | None = None
) -> Total | None:
    """The forecast sum of steps ``start`` to ``end`` (step 1 is the day after the last one in
    ``y``) and its central ``level`` interval; None when the model cannot be fitted."""
    if len(y) < MIN_DAYS or not 1 <= start <= end:
        return None
    return _total(fit(y, cache_dir), _window(start, end), level)


# The forecast -------------------------------------------------------------------------------------
def _days_note(n: int, what: str = "history") -> str:
    return f"only {n} day{'s' if n != 1 else ''} of {what} (a forecast needs {MIN_DAYS})"


def forecast(
    db: Database,
    by: str,
    horizon: str,
    zone: tzinfo,
    today: date | None = None,
    filters: Mapping[str, str] | None = None,
    level: float = LEVEL,
    book: PriceBook | None = None,
    cache_dir: Path | None = None,
) -> tuple[Horizon, list[dict]]:
    """Per group (a project or department), the forecast total of tokens and of cost (per
    currency charged) over ``horizon`` from the complete days before ``today`` (default: today in
    ``zone``). Money in micros, priced by ``book`` (default: the ledger's stored versions only;
    pass the gateway's book, which merges the config file's). A group with fewer than MIN_DAYS
    days since its first record gets a note and no figures. Fits are kept in memory and, with
    ``cache_dir``, on disk."""
    if by not in GROUPS:
        raise ValueError(f"--by {by!r}: forecast by project or department")
    today = today or datetime.now(zone).date()
    hz = parse_horizon(horizon, today)
    first_day = today - timedelta(days=LOOKBACK_DAYS)
    sums = daily_sums(db, by, first_day, today, zone, filters)
    if book is None:
        from tokenabacus.ledger.meta import Meta
        from tokenabacus.ledger.prices import PriceStore

        book = PriceBook(stored=[PriceVersion.of_row(r) for r in PriceStore(db, Meta(db)).versions()])
    mix_from, mix_to = fp.window(today)
    mixes: dict[str | None, dict[str, ModelSum]] = {}
    for (g, model), m in model_sums(db, by, midnight_ms(mix_from, zone), midnight_ms(mix_to, zone), filters).items():
        mixes.setdefault(g, {})[model] = m

    groups: dict[str | None, dict[str | None, dict[date, DaySum]]] = {}
    for (g, cur, day), s in sums.items():
        groups.setdefault(g, {}).setdefault(cur, {})[day] = s
    days = [hz.first + timedelta(days=i) for i in range(hz.days)]
    rows = []
    for g in sorted(groups, key=lambda x: (x is None, x or "")):
        price = fp.pricing(book, mixes.get(g, {}), days, today, zone)
        found = _group_rows(by, g, groups[g], today, hz, price, level, cache_dir)
        if hz.actual_from is not None:
            _add_actuals(found, groups[g], hz.actual_from, today)
        rows += found
    return hz, rows


def _add_actuals(
    rows: list[dict], by_currency: Mapping[str | None, Mapping[date, DaySum]], first: date, today: date
) -> None:
    """The month so far (complete days from ``first`` up to today) beside the forecast of the
    rest, and their sums: tokens on a group's first row (as its forecast is), cost per currency."""

    def plus(a: int, b: int | None) -> int | None:
        return None if b is None else a + b

    tokens = sum(s.tokens for days in by_currency.values() for d, s in days.items() if first <= d < today)
    for i, r in enumerate(rows):
        days = by_currency.get(r["currency"], {}) if r["currency"] else {}
        spent = sum(s.cost for d, s in days.items() if first <= d < today) if r["currency"] else None
        mine = tokens if i == 0 else None
        r |= {
            "so_far_tokens": mine,
            **{
                f"month_{k}": None if mine is None else plus(mine, r[k])
                for k in ("tokens", "tokens_low", "tokens_high")
            },
            "so_far_cost_micros": spent,
            **{
                f"month_{k}": None if spent is None else plus(spent, r[k])
                for k in ("cost_micros", "cost_low_micros", "cost_high_micros")
            },
        }


def _series(by_day: Mapping[date, int], first: date, today: date) -> list[float]:
    return [float(by_day.get(first + timedelta(days=i), 0)) for i in range((today - first).days)]


def _unpriced_note(price: fp.Pricing, none_priced: bool = False) -> str:
    names = ", ".join(sorted(price.unpriced))
    if none_priced:
        return f"no price in force for the models used in the last {fp.MIX_DAYS} days ({names}): no cost forecast"
    share = sum(price.unpriced.values())
    return (
        f"{share:.1%} of the last {fp.MIX_DAYS} days' tokens are of models with no price in force "
        f"({names}): the cost covers the rest"
    )


def _group_rows(
    by: str,
    g: str | None,
    by_currency: Mapping[str | None, Mapping[date, DaySum]],
    today: date,
    hz: Horizon,
    price: fp.Pricing,
    level: float,
    cache_dir: Path | None,
) -> list[dict]:
    tokens: dict[date, int] = {}
    for days in by_currency.values():
        for day, s in days.items():
            tokens[day] = tokens.get(day, 0) + s.tokens
    first = min(tokens)
    n = (today - first).days
    base: dict[str, object] = {by: g, "history_days": n, "from": hz.first.isoformat(), "to": hz.last.isoformat()}
    base |= {"days": hz.days, "level": level}
    empty: dict[str, int | None] = {"tokens": None, "tokens_low": None, "tokens_high": None}
    no_cost = {"currency": None, "cost_micros": None, "cost_low_micros": None, "cost_high_micros": None}
    if n < MIN_DAYS:
        return [{**base, **empty, **no_cost, "note": _days_note(n)}]
    fitted = fit(_series(tokens, first, today), cache_dir)
    start, end = (hz.first - today).days + 1, (hz.last - today).days + 1
    t = _total(fitted, _window(start, end), level)
    if t is None:
        return [{**base, **empty, **no_cost, "note": "the model could not be fitted to this history"}]
    tok = {"tokens": t.point, "tokens_low": t.low, "tokens_high": t.high}
    if not price.rates:
        note = (
            _unpriced_note(price, none_priced=True)
            if price.unpriced
            else (f"no use in the last {fp.MIX_DAYS} days to price the forecast by: no cost forecast")
        )
        return [{**base, **tok, **no_cost, "note": note}]
    notes = [_unpriced_note(price)] if price.unpriced else []
    # Cost per currency charged, the dearest first: the tokens' forecast at that currency's prices.
    costs = sorted(((_total(fitted, w, level), cur) for cur, w in price.rates.items()), key=_dearest)
    out = []
    for i, (c, cur) in enumerate(costs):
        row_notes = list(notes) if i == 0 else [f"{g or '(none)'} is also charged in {cur}"]
        money: dict = {"currency": cur, "cost_micros": None, "cost_low_micros": None, "cost_high_micros": None}
        if c is None:
            row_notes.append("cost: the model could not be fitted to this history")
        else:
            money |= {"cost_micros": c.point, "cost_low_micros": c.low, "cost_high_micros": c.high}
        out.append({**base, **(tok if i == 0 else empty), **money, "note": "; ".join(row_notes) or None})
    return out


def _dearest(x: tuple[Total | None, str]) -> tuple[int, str]:
    return (-(x[0].point if x[0] else 0), x[1])
