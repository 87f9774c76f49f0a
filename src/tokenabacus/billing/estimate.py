"""The planner: what a workload would cost at the prices in force now.

It charges exactly as the gateway does: the same PriceBook (config versions merged with the
ledger's) and ``cost_micros``, once per request, each request rounded half up on its own, so the
estimate of N identical requests is N times the cost of one, as the ledger would hold it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tokenabacus.billing.prices import PriceBook, book_of, config_versions, cost_micros
from tokenabacus.calendar import DAY_MS

if TYPE_CHECKING:
    from tokenabacus.config import Settings
    from tokenabacus.ledger.store import Store

MAX_DAYS = 3660
MAX_COUNT = 10**12  # requests per day or tokens per request: beyond is a typo


class NoPrice(LookupError):
    """The model has no price in force."""


def price_book(settings: Settings, store: Store | None) -> PriceBook:
    """The book a gateway with these settings charges from (no ledger: the config's prices only)."""
    from zoneinfo import ZoneInfo

    config = config_versions(settings.prices, ZoneInfo(settings.governance.timezone))
    return book_of(config, store.prices.versions() if store is not None else ())


def _count(value: int, what: str, low: int = 0, high: int = MAX_COUNT) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{what} must be a whole number from {low:,} to {high:,}")
    return value


def estimate(
    book: PriceBook,
    model: str,
    requests_per_day: int,
    prompt_tokens: int,
    completion_tokens: int,
    cached_tokens: int = 0,
    days: int = 30,
    now: int = 0,
) -> dict:
    """Tokens and cost of ``requests_per_day`` requests of this shape for ``days`` days at the
    version in force at ``now`` (UTC ms). Money in micros. NoPrice when the model has none;
    ValueError names a bad figure."""
    _count(requests_per_day, "requests per day")
    _count(prompt_tokens, "prompt tokens")
    _count(completion_tokens, "completion tokens")
    _count(cached_tokens, "cached tokens")
    _count(days, "days", 1, MAX_DAYS)
    if cached_tokens > prompt_tokens:
        raise ValueError(f"cached tokens ({cached_tokens:,}) are part of the prompt ({prompt_tokens:,}): at most that")
    pv = book.at(model, now)
    if pv is None:
        raise NoPrice(f"model {model!r} has no price in force (see `tokenabacus prices list`)")
    per_request = cost_micros(pv, prompt_tokens, completion_tokens, cached_tokens)
    n = requests_per_day * days
    later = [v for v in book.history(model) if now < v.effective_from <= now + days * DAY_MS]
    note = None
    if later:  # the estimate keeps today's price; say that the book changes within the period
        note = f"a new price ({later[0].version_id}) takes effect within these {days} days; not included"
    return {
        "model": model,
        "price_version": pv.version_id,
        "currency": pv.currency,
        "days": days,
        "requests_per_day": requests_per_day,
        "requests": n,
        "prompt_tokens": n * prompt_tokens,
        "cached_tokens": n * cached_tokens,
        "completion_tokens": n * completion_tokens,
        "total_tokens": n * (prompt_tokens + completion_tokens),
        "cost_per_request_micros": per_request,
        "cost_per_day_micros": per_request * requests_per_day,
        "cost_micros": per_request * n,
        "input_per_mtok_micros": pv.input,
        "cached_per_mtok_micros": pv.cached,
        "output_per_mtok_micros": pv.output,
        "note": note,
    }
