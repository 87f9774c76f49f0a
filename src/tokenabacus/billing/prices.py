"""The price book: exact prices, the version in force at an instant, and what a record costs.

Pure (no I/O): the gateway charges every record from an in-memory ``PriceBook`` on the hot path.
Money is integer micro-units (¥1 = 1,000,000 micros) and a price is micros per 1M tokens, so
¥0.8 per 1k tokens is 800,000,000. Prices are read as decimals, never floats, and refused when
they are not whole at that resolution, negative or implausible.
"""

from __future__ import annotations

import hashlib
import re
from bisect import bisect_right
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, tzinfo
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING

from tokenabacus.dates import check_day
from tokenabacus.ledger.record import UsageRecord

if TYPE_CHECKING:
    from tokenabacus.config import PriceDecl

MICROS = 1_000_000  # micro-units in one unit of a currency
MTOK = 1_000_000  # prices are per this many tokens
# Token counts a price is given for -> the power of ten that makes it a price per 1M tokens.
PER = {"1k": 3, "1m": 0}
# 10,000,000 units per 1M tokens (¥10,000 per 1k): anything above is a typo (a 1k/1M mix-up, extra
# zeros). It also keeps every cost inside a 64-bit column for any token count a record can hold.
MAX_PRICE_MICROS = 10_000_000 * MICROS
MAX_AMOUNT_MICROS = 10**15  # one adjustment or monthly hardware cost: a billion units
DEFAULT_CURRENCY = "CNY"
SYMBOLS = {"CNY": "¥", "USD": "$", "EUR": "€", "GBP": "£"}
CONFIG, LEDGER = "config", "ledger"  # where a version comes from
_CURRENCY = re.compile(r"^[A-Z]{3}$")
_MONTH = re.compile(r"^\d{4}-\d{2}$")

Number = str | int | float | Decimal


# Parsing: one-line ValueErrors, shared by the config file, the CLI and /admin ------------------
def to_decimal(value: Number, what: str) -> Decimal:
    """An exact decimal. A float (YAML or JSON ``0.8``) is read through its shortest repr, which
    is the literal that was written, so 0.8 is 0.8 and not 0.8000000000000000444."""
    if isinstance(value, bool):
        raise ValueError(f"{what} {value!r} is not a number (write it like 0.8)")
    text = repr(value) if isinstance(value, float) else str(value).strip()
    try:
        d = Decimal(text)
    except InvalidOperation:
        raise ValueError(f"{what} {text!r} is not a number (write it like 0.8)") from None
    if not d.is_finite():
        raise ValueError(f"{what} {text!r} is not a number (write it like 0.8)")
    return d


def _scaled(d: Decimal, power: int) -> int | None:
    """``d * 10**power`` as an int, or None when that is not a whole number. Integer arithmetic
    on the decimal's digits: no context precision, no rounding."""
    sign, digits, exp = d.as_tuple()
    n = int("".join(map(str, digits)) or "0")
    if n == 0:
        return 0
    if d.adjusted() + power < 0:  # below one unit of the result
        return None
    assert isinstance(exp, int)
    e = exp + power
    if e >= 0:
        v = n * 10**e
    else:
        v, rest = divmod(n, 10**-e)
        if rest:
            return None
    return -v if sign else v


def per_power(per: str | int) -> int:
    """1k -> 3 (a price per 1k tokens is 1000 times that per 1M), 1M -> 0."""
    key = str(per).strip().lower()
    key = {"k": "1k", "1000": "1k", "m": "1m", "1000000": "1m"}.get(key, key)
    if key not in PER:
        raise ValueError(f"per {per!r}: give prices per 1k or per 1M tokens")
    return PER[key]


def per_label(per: str | int) -> str:
    return "1k" if per_power(per) else "1M"


def parse_price(value: Number, per: str | int, what: str = "price") -> int:
    """A price per ``per`` tokens (1k or 1M) as integer micros per 1M tokens."""
    power = per_power(per)
    d = to_decimal(value, what)
    shown = f"{what} {value} per {per_label(per)}"
    if d < 0:
        raise ValueError(f"{shown} is negative")
    if d.adjusted() > 30:
        raise ValueError(f"{shown} is not a plausible price")
    micros = _scaled(d, 6 + power)
    if micros is None:
        raise ValueError(
            f"{shown} is finer than the price book keeps: one micro-unit per 1M tokens "
            "(0.000001 per 1M, 0.000000001 per 1k)"
        )
    if micros > MAX_PRICE_MICROS:
        raise ValueError(
            f"{shown} is not a plausible price (at most {MAX_PRICE_MICROS // MICROS:,} per 1M tokens): check --per"
        )
    return micros


def parse_amount(value: Number, what: str = "amount", signed: bool = False) -> int:
    """An amount of money as integer micros: exact to one micro-unit, within MAX_AMOUNT_MICROS;
    ``signed`` allows a negative one (a credit), never zero."""
    d = to_decimal(value, what)
    if d.adjusted() > 30:
        raise ValueError(f"{what} {value} is not a plausible amount")
    micros = _scaled(d, 6)
    if micros is None:
        raise ValueError(f"{what} {value} is finer than one micro-unit (0.000001)")
    if micros < 0 and not signed:
        raise ValueError(f"{what} {value} is negative")
    if signed and micros == 0:
        raise ValueError(f"{what} {value}: an adjustment of nothing changes nothing")
    if abs(micros) > MAX_AMOUNT_MICROS:
        raise ValueError(f"{what} {value} is not a plausible amount (at most {MAX_AMOUNT_MICROS // MICROS:,})")
    return micros


def check_currency(code: str | None) -> str:
    c = (code or DEFAULT_CURRENCY).strip().upper()
    if not _CURRENCY.match(c):
        raise ValueError(f"currency {code!r}: use a three-letter ISO 4217 code such as CNY or USD")
    return c


def parse_time(value: str | date | datetime, zone: tzinfo, what: str) -> int:
    """A month (2026-11), date (2026-11-01) or date-time as UTC epoch ms; naive ones are in
    ``zone`` (the operator's governance.timezone), so 2026-11-01 is midnight there."""
    if isinstance(value, datetime):
        dt = value
    elif isinstance(value, date):
        dt = datetime(value.year, value.month, value.day)
    else:
        text = value.strip()
        if _MONTH.match(text):
            text += "-01"
        try:
            dt = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(
                f"{what} {value!r}: expected a time like 2026-11, 2026-11-01 or 2026-11-01T08:00"
            ) from None
    check_day(dt.date(), what, str(value))
    return int((dt if dt.tzinfo else dt.replace(tzinfo=zone)).timestamp() * 1000)


# Versions and the book ------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class PriceVersion:
    version_id: str
    model: str
    effective_from: int  # UTC ms
    currency: str
    input: int  # micros per 1M tokens
    cached: int | None  # None: cached input tokens cost the input price
    output: int
    source: str = LEDGER
    created_at: int | None = None
    created_by: str | None = None
    note: str | None = None

    @classmethod
    def of_row(cls, r: dict) -> PriceVersion:
        """A ``price_versions`` row."""
        return cls(
            r["version_id"],
            r["model"],
            int(r["effective_from"]),
            r["currency"],
            int(r["input_per_mtok_micros"]),
            None if r["cached_per_mtok_micros"] is None else int(r["cached_per_mtok_micros"]),
            int(r["output_per_mtok_micros"]),
            LEDGER,
            r.get("created_at"),
            r.get("created_by"),
            r.get("note"),
        )

    def row(self) -> dict:
        """The version as the CLI and /admin show it (the table's column names)."""
        return {
            "version_id": self.version_id,
            "model": self.model,
            "effective_from": self.effective_from,
            "currency": self.currency,
            "input_per_mtok_micros": self.input,
            "cached_per_mtok_micros": self.cached,
            "output_per_mtok_micros": self.output,
            "source": self.source,
            "created_at": self.created_at,
            "created_by": self.created_by,
            "note": self.note,
        }


def config_version_id(model: str, effective_from: int, currency: str, inp: int, cached: int | None, out: int) -> str:
    """A stable id for a config file's version, derived from its content: the same entry gets the
    same id in every process and after every restart, so records name it reliably."""
    text = f"{model}\x00{effective_from}\x00{currency}\x00{inp}\x00{cached}\x00{out}"
    return "cfg_" + hashlib.sha256(text.encode()).hexdigest()[:16]


def config_versions(decls: Iterable[PriceDecl], zone: tzinfo) -> list[PriceVersion]:
    """The config file's ``prices:``; an entry without ``from`` has always been in force."""
    out = []
    for d in decls:
        inp, cached, output = d.micros()
        start = parse_time(d.from_, zone, "from") if d.from_ is not None else 0
        cur = check_currency(d.currency)
        vid = config_version_id(d.model, start, cur, inp, cached, output)
        out.append(PriceVersion(vid, d.model, start, cur, inp, cached, output, CONFIG, note=d.note))
    return out


def cost_micros(pv: PriceVersion, prompt: int, completion: int, cached: int | None) -> int:
    """What a record costs, in micros, rounded half up once at the end: uncached prompt tokens at
    the input price, cached ones at the cached price (or the input price), completion tokens at
    the output price; every price is per 1M tokens, so the exact sum is divided by 1M."""
    hit = min(max(cached or 0, 0), prompt)
    cached_price = pv.input if pv.cached is None else pv.cached
    exact = (prompt - hit) * pv.input + hit * cached_price + completion * pv.output
    return (exact + MTOK // 2) // MTOK


class PriceBook:
    """An immutable snapshot of the price book: per model, its versions by effective_from.

    Built from the config file's versions and the ledger's. They merge per (model,
    effective_from): a stored version replaces a config version with the same start (so an
    operator corrects a config price at run time without editing the file), and among stored
    versions with the same start the one created last wins (created_at, then version_id).
    Replaced versions are kept in ``replaced`` for the history; they never charge anything."""

    __slots__ = ("_starts", "_versions", "replaced")

    def __init__(self, config: Iterable[PriceVersion] = (), stored: Iterable[PriceVersion] = ()) -> None:
        chosen: dict[tuple[str, int], PriceVersion] = {}
        self.replaced: list[PriceVersion] = []
        latest_last = sorted(stored, key=lambda v: (v.created_at or 0, v.version_id))
        for v in [*config, *latest_last]:
            key = (v.model, v.effective_from)
            if key in chosen:
                self.replaced.append(chosen[key])
            chosen[key] = v
        by_model: dict[str, list[PriceVersion]] = {}
        for v in sorted(chosen.values(), key=lambda v: v.effective_from):
            by_model.setdefault(v.model, []).append(v)
        self._versions = by_model
        self._starts = {m: [v.effective_from for v in vs] for m, vs in by_model.items()}

    def at(self, model: str, ts: int) -> PriceVersion | None:
        """The version in force for ``model`` at ``ts`` (UTC ms): the last one started by then."""
        starts = self._starts.get(model)
        if not starts:
            return None
        i = bisect_right(starts, ts)
        return self._versions[model][i - 1] if i else None

    def in_force(self, ts: int) -> list[PriceVersion]:
        """Each priced model's version at ``ts``, by model name."""
        return [v for m in sorted(self._versions) if (v := self.at(m, ts)) is not None]

    def history(self, model: str) -> list[PriceVersion]:
        """Every version of ``model`` that charges (oldest first); replaced ones are in ``replaced``."""
        return list(self._versions.get(model, ()))

    def all_versions(self) -> list[PriceVersion]:
        """Every version the book knows, replaced ones included: what a record's price_version names."""
        return [v for vs in self._versions.values() for v in vs] + self.replaced

    def history_rows(self, model: str, now: int) -> list[dict]:
        """Every version of ``model`` as rows with a ``state``: charging (in force now), past,
        future, or replaced (a stored version with the same start took its place)."""
        current = self.at(model, now)
        rows = []
        for v in self.history(model):
            state = "future" if v.effective_from > now else "past"
            rows.append({**v.row(), "state": "charging" if v is current else state})
        rows += [{**v.row(), "state": "replaced"} for v in self.replaced if v.model == model]
        return sorted(rows, key=lambda r: (r["effective_from"], r["created_at"] or 0))

    def charge(self, rec: UsageRecord) -> None:
        """The enrich step: price the record by the version in force at its start. No price, or no
        tokens (refused, failed before any output), leaves cost, version and currency null:
        unknown is not free."""
        pv = self.at(rec.model, rec.timestamp) if rec.model is not None else None
        if pv is None or rec.prompt_tokens is None or rec.completion_tokens is None:
            rec.cost_micros = rec.price_version = rec.currency = None
            return
        rec.cost_micros = cost_micros(pv, rec.prompt_tokens, rec.completion_tokens, rec.cached_tokens)
        rec.price_version = pv.version_id
        rec.currency = pv.currency


# Display ----------------------------------------------------------------------------------------
def _with_currency(amount: str, currency: str | None) -> str:
    sign, digits = ("-", amount[1:]) if amount.startswith("-") else ("", amount)
    symbol = SYMBOLS.get(currency or "")
    if symbol:
        return f"{sign}{symbol}{digits}"
    return f"{amount} {currency}" if currency else amount


def format_money(micros: int | None, currency: str | None) -> str | None:
    """Micros as an exact amount with its currency: ``¥12.345678``, ``-$1.250000``, ``12.345678 JPY``."""
    if micros is None:
        return None
    sign = "-" if micros < 0 else ""
    units, frac = divmod(abs(micros), MICROS)
    return _with_currency(f"{sign}{units}.{frac:06d}", currency)


def format_rate(micros_per_mtok: int | None, per: str | int, currency: str | None) -> str | None:
    """A price per 1k or per 1M tokens, exact and without trailing zeros: ``¥0.8``."""
    if micros_per_mtok is None:
        return None
    d = Decimal(micros_per_mtok).scaleb(-6 - per_power(per))
    text = format(d.normalize(), "f") if d else "0"
    return _with_currency(text, currency)
