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

Money stays integer micro-units; the days are cut in a time zone. The history is the ledger's
daily sums (ledger/usage_sums.py, which bill.py shares).
"""

from __future__ import annotations

import calendar
import math
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta, tzinfo
from statistics import NormalDist
from typing import TYPE_CHECKING

from tokenabacus.dates import check_day
from tokenabacus.ledger.usage_sums import DaySum, daily_sums

if TYPE_CHECKING:
    from tokenabacus.ledger.database import Database

LEVEL = 0.80  # the interval: 80%, the planning figure (95% on a quarter is too wide to budget with)
MIN_DAYS = 14  # two full weeks: less cannot tell a weekday pattern from a trend
SEASON = 7  # days in the seasonal cycle
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


def forecast_total(y: Sequence[float], start: int, end: int, level: float = LEVEL) -> Total | None:
    """The forecast sum of steps ``start`` to ``end`` (step 1 is the day after the last one in
    ``y``) and its central ``level`` interval; None when the model cannot be fitted."""
    import numpy as np

    arr = np.asarray(y, dtype=float)
    if len(arr) < MIN_DAYS or not 1 <= start <= end:
        return None
    if np.ptp(arr) == 0:  # a constant history: nothing to estimate (and a degenerate likelihood)
        v = round(float(arr[0]) * (end - start + 1))
        return Total(v, v, v)
    try:
        mean, var = _sum_moments(arr, start, end)
    except (ValueError, np.linalg.LinAlgError):
        return None
    if not (math.isfinite(mean) and math.isfinite(var)):
        return None
    half = NormalDist().inv_cdf(0.5 + level / 2) * math.sqrt(max(var, 0.0))
    return Total(max(round(mean), 0), max(round(mean - half), 0), max(round(mean + half), 0))


def _sum_moments(arr, start: int, end: int) -> tuple[float, float]:
    """Mean and variance of the sum of the forecasts for steps start..end, exactly from the
    fitted state space: with a_{T+1} ~ N(a, P) the predicted state, y_{T+h} = Z T^{h-1} a_{T+1}
    + (state shocks between) + noise, so the sum is a linear combination of independent Gaussians."""
    import numpy as np
    from statsmodels.tsa.statespace.structural import UnobservedComponents

    scale = max(float(np.abs(arr).mean()), 1.0)  # the optimizer behaves on unit-sized data
    model = UnobservedComponents(arr / scale, level="local linear trend", seasonal=SEASON)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence chatter; a failed fit shows as non-finite numbers
        res = model.fit(disp=False)
    f = res.filter_results
    Z = f.design[0, :, 0]
    T = f.transition[:, :, 0]
    RQR = f.selection[:, :, 0] @ f.state_cov[:, :, 0] @ f.selection[:, :, 0].T
    noise = float(f.obs_cov[0, 0, 0])
    a, P = f.predicted_state[:, -1], f.predicted_state_cov[:, :, -1]
    rows = np.empty((end, len(a)))  # rows[h] = Z T^h: how the state at T+1 reaches y_{T+1+h}
    v = Z.copy()
    for h in range(end):
        rows[h] = v
        v = v @ T
    window = np.zeros(end)
    window[start - 1 : end] = 1.0
    g = window @ rows
    mean = float(g @ a)
    var = float(g @ P @ g) + (end - start + 1) * noise
    # The state shock of step j (entering the state at T+1+j) reaches the window's steps after j.
    for j in range(1, end):
        lo = max(start, j + 1)
        k = rows[lo - 1 - j : end - j].sum(axis=0)
        var += float(k @ RQR @ k)
    return mean * scale, var * scale * scale


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
) -> tuple[Horizon, list[dict]]:
    """Per group (a project or department), the forecast total of tokens and of cost (per
    currency charged) over ``horizon`` from the complete days before ``today`` (default: today in
    ``zone``). Money in micros. A group with fewer than MIN_DAYS days since its first record gets
    a note and no figures."""
    if by not in GROUPS:
        raise ValueError(f"--by {by!r}: forecast by project or department")
    today = today or datetime.now(zone).date()
    hz = parse_horizon(horizon, today)
    start, end = (hz.first - today).days + 1, (hz.last - today).days + 1
    first_day = today - timedelta(days=LOOKBACK_DAYS)
    sums = daily_sums(db, by, first_day, today, zone, filters)

    groups: dict[str | None, dict[str | None, dict[date, DaySum]]] = {}
    for (g, cur, day), s in sums.items():
        groups.setdefault(g, {}).setdefault(cur, {})[day] = s
    rows = []
    for g in sorted(groups, key=lambda x: (x is None, x or "")):
        found = _group_rows(by, g, groups[g], today, hz, start, end, level)
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


def _group_rows(
    by: str,
    g: str | None,
    by_currency: Mapping[str | None, Mapping[date, DaySum]],
    today: date,
    hz: Horizon,
    start: int,
    end: int,
    level: float,
) -> list[dict]:
    tokens: dict[date, int] = {}
    unpriced = 0
    for days in by_currency.values():
        for day, s in days.items():
            tokens[day] = tokens.get(day, 0) + s.tokens
            unpriced += s.unpriced
    first = min(tokens)
    n = (today - first).days
    base: dict[str, object] = {by: g, "history_days": n, "from": hz.first.isoformat(), "to": hz.last.isoformat()}
    base |= {"days": hz.days, "level": level}
    empty: dict[str, int | None] = {"tokens": None, "tokens_low": None, "tokens_high": None}
    no_cost = {"currency": None, "cost_micros": None, "cost_low_micros": None, "cost_high_micros": None}
    if n < MIN_DAYS:
        return [{**base, **empty, **no_cost, "note": _days_note(n)}]
    notes = []
    t = forecast_total(_series(tokens, first, today), start, end, level)
    if t is None:
        notes.append("the model could not be fitted to this history")
        tok = empty
    else:
        tok = {"tokens": t.point, "tokens_low": t.low, "tokens_high": t.high}
    # Cost per currency charged, busiest first; each from its own first priced day.
    costs = []
    for cur, days in by_currency.items():
        if cur is None:
            continue
        charged = {d: s.cost for d, s in days.items()}  # a currency is only set on a priced record
        costs.append((-sum(charged.values()), cur, min(charged), charged))
    costs.sort(key=lambda x: (x[0], x[1]))
    if unpriced:
        notes.append(f"{unpriced:,} unpriced record{'s' if unpriced != 1 else ''} in the history: cost covers the rest")
    if not costs:
        notes.append("no priced records: no cost forecast")
        return [{**base, **tok, **no_cost, "note": "; ".join(notes) or None}]
    out = []
    for i, (_, cur, c_first, charged) in enumerate(costs):
        row_notes = list(notes) if i == 0 else [f"{g or '(none)'} is also charged in {cur}"]
        cn = (today - c_first).days
        money: dict = {"currency": cur, "cost_micros": None, "cost_low_micros": None, "cost_high_micros": None}
        if cn < MIN_DAYS:
            row_notes.append("cost: " + _days_note(cn, f"{cur} charges"))
        elif (c := forecast_total(_series(charged, c_first, today), start, end, level)) is None:
            row_notes.append("cost: the model could not be fitted to this history")
        else:
            money |= {"cost_micros": c.point, "cost_low_micros": c.low, "cost_high_micros": c.high}
        out.append({**base, **(tok if i == 0 else empty), **money, "note": "; ".join(row_notes) or None})
    return out
