"""A key's life: when it expires, the budget it is born with, and rotation to a new secret.

Times people give are read in governance.timezone. A date alone means "valid through that day":
the key is refused from the next local midnight on. A duration (``--ttl 90d``, ``--grace 24h``)
is a number and one unit: s, m (minutes), h, d or w.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta, tzinfo

from tokenabacus.calendar import midnight_ms, now_ms, parse_time
from tokenabacus.ledger.admin_events import Actor
from tokenabacus.ledger.store import Store

_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_UNIT_MS = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 7 * 86_400_000}
_DATE = re.compile(r"^\s*\d{4}-\d{2}-\d{2}\s*$")
KEY_CREATE, KEY_ROTATE = "key.create", "key.rotate"  # admin event actions
DEFAULT_GRACE = "24h"


def parse_duration(text: str, what: str) -> int:
    """``90d``, ``24h``, ``30m``, ``3s``, ``2w`` as milliseconds; ValueError (one line) otherwise."""
    m = _DURATION.match(text)
    if m is None:
        raise ValueError(f"{what} {text!r}: expected a number and a unit, s, m (minutes), h, d or w, like 90d")
    return int(m.group(1)) * _UNIT_MS[m.group(2)]


def parse_expiry(text: str, zone: tzinfo, what: str = "--expires") -> int:
    """When a key given ``--expires TEXT`` is refused from, as UTC ms. A date is the whole day
    (2027-03-31: refused from 2027-04-01 00:00 in ``zone``); a date-time is that instant."""
    if _DATE.match(text):
        day = date.fromisoformat(text.strip())
        return midnight_ms(day + timedelta(days=1), zone)
    return parse_time(text, zone, what)


def expires_at(expires: str | None, ttl: str | None, zone: tzinfo, at_ms: int | None = None) -> int | None:
    """The expiry of a new key from ``--expires`` or ``--ttl`` (at most one); None: never. A time
    already past is refused: such a key could never be used."""
    if expires is not None and ttl is not None:
        raise ValueError("give --expires or --ttl, not both")
    now = now_ms() if at_ms is None else at_ms
    if expires is not None:
        at = parse_expiry(expires, zone)
    elif ttl is not None:
        at = now + parse_duration(ttl, "--ttl")
    else:
        return None
    if at <= now:
        raise ValueError("the key would already have expired: give a time in the future")
    return at


def expiry_label(at_ms: int, zone: tzinfo) -> str:
    """``2027-03-31 (Asia/Shanghai)`` for a key valid through that day, else the date and time."""
    local = datetime.fromtimestamp(at_ms / 1000, zone)
    if _whole_day(at_ms, zone):
        text = (local.date() - timedelta(days=1)).isoformat()
        return f"{text} ({zone})"
    return f"{local.date().isoformat()} {local.strftime('%H:%M:%S')} ({zone})"


def _whole_day(at_ms: int, zone: tzinfo) -> bool:
    local = datetime.fromtimestamp(at_ms / 1000, zone)
    return (local.hour, local.minute, local.second, local.microsecond) == (0, 0, 0, 0)


def validity(at_ms: int, zone: tzinfo) -> str:
    """``valid through 2027-03-31 (Asia/Shanghai)``, or ``valid until`` a date and time."""
    return f"valid {'through' if _whole_day(at_ms, zone) else 'until'} {expiry_label(at_ms, zone)}"


def expired_message(at_ms: int, zone: tzinfo) -> str:
    if _whole_day(at_ms, zone):
        when = f"on {expiry_label(at_ms, zone)}"  # the last day it was valid
    else:
        when = f"at {expiry_label(at_ms, zone)}"
    return f"API key expired {when}; ask an admin for a new one."


@dataclass(frozen=True, slots=True)
class Rotated:
    key: str  # the new secret, shown once
    row: dict  # the stored row
    previous_until: int  # the old secret is refused from this time on


def rotate_key(store: Store, key_id: str, grace_ms: int, actor: Actor | None = None) -> Rotated | None:
    """Give a live key a new secret; the old one keeps working for ``grace_ms``. None when there is
    no live key with that id."""
    from tokenabacus.governance.keys import generate_key, hash_key

    key = generate_key()
    until = now_ms() + grace_ms
    row = store.keys.rotate(key_id, hash_key(key), key[:8], until, actor or Actor(None, None))
    if row is None:
        return None
    return Rotated(key, row, until)


def budget_metric(budget: str | None, budget_tokens: int | None, currency: str, period: str) -> tuple[str, int] | None:
    """(metric, amount) of the limit a new key is born with (``--budget 500 --currency CNY`` or
    ``--budget-tokens N``), checked before the key exists; None without one."""
    from tokenabacus.config import PERIODS
    from tokenabacus.governance.quotaview import check_metric

    if budget is None and budget_tokens is None:
        return None
    if budget is not None and budget_tokens is not None:
        raise ValueError("give --budget or --budget-tokens, not both")
    if period not in PERIODS:
        raise ValueError(f"--period must be one of {', '.join(PERIODS)}")
    if budget is not None:
        from tokenabacus.money import check_currency, parse_amount

        return f"cost:{check_currency(currency)}", parse_amount(budget, "--budget")
    return check_metric(budget_tokens, None)


def set_budget(store: Store, key_id: str, metric: str, amount: int, period: str, by: str | None, actor: Actor) -> dict:
    """The key's own limit (scope ``key``), set as `quota set --key` sets it; its row."""
    return store.quotas.set("key", key_id, None, metric, period, amount, by, actor)


def budget_label(row: dict) -> str:
    from tokenabacus.governance.quotaview import show_amount

    what = show_amount(row["metric"], row["limit_value"])
    if not row["metric"].startswith("cost:"):
        what += " " + row["metric"]
    return f"{what} per {row['period']} (limit {row['quota_id']})"
