"""Token figures from outside (an upstream's usage) are claims, not facts: only sane ones count."""

from __future__ import annotations

from typing import Any

# Far above any context window, far below what a 32-bit ledger column or a sum of many rows holds.
MAX_TOKENS_FIGURE = 1_000_000_000


def token_figure(v: Any) -> int | None:
    """A usable token count, or None: not a bool, not a float, not negative, not absurd."""
    if type(v) is int and 0 <= v <= MAX_TOKENS_FIGURE:
        return v
    return None


def upstream_figures(usage: Any) -> tuple[int | None, int | None, int | None, bool]:
    """(prompt, completion, cached, lied) from an upstream's usage object. `lied` is True when a
    figure was present but unusable, so the caller can say so."""
    if not isinstance(usage, dict):
        return None, None, None, usage is not None
    raw_p, raw_c = usage.get("prompt_tokens"), usage.get("completion_tokens")
    details = usage.get("prompt_tokens_details")
    raw_cached = details.get("cached_tokens") if isinstance(details, dict) else None
    p, c, cached = token_figure(raw_p), token_figure(raw_c), token_figure(raw_cached)
    lied = any(raw is not None and good is None for raw, good in ((raw_p, p), (raw_c, c), (raw_cached, cached)))
    if cached is not None and p is not None and cached > p:
        cached, lied = None, True
    return p, c, cached, lied
