"""Money: exact decimals read from people, currencies, and integer micro-units.

Pure (no I/O) and shared by the config file, the CLI, /admin and billing. Money is integer
micro-units (¥1 = 1,000,000 micros) and a price is micros per 1M tokens, so ¥0.8 per 1k tokens is
800,000,000. Amounts are read as decimals, never floats, and refused when they are not whole at
that resolution, negative or implausible; every refusal is a one-line ValueError.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

MICROS = 1_000_000  # micro-units in one unit of a currency
# Token counts a price is given for -> the power of ten that makes it a price per 1M tokens.
PER = {"1k": 3, "1m": 0}
# 10,000,000 units per 1M tokens (¥10,000 per 1k): anything above is a typo (a 1k/1M mix-up, extra
# zeros). It also keeps every cost inside a 64-bit column for any token count a record can hold.
MAX_PRICE_MICROS = 10_000_000 * MICROS
MAX_AMOUNT_MICROS = 10**15  # one adjustment or monthly hardware cost: a billion units
DEFAULT_CURRENCY = "CNY"
SYMBOLS = {"CNY": "¥", "USD": "$", "EUR": "€", "GBP": "£"}
_CURRENCY = re.compile(r"^[A-Z]{3}$")

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


MINOR_UNITS = {"JPY": 0, "KRW": 0, "VND": 0, "CLP": 0, "ISK": 0}  # others: 2 (ISO 4217)


def show_money(micros: int | None, currency: str | None) -> str | None:
    """An amount for a person to read: thousands separators and the currency's minor units,
    rounded half up (``¥123,729.26``). Exact figures stay in micros, JSON and workbook cells."""
    if micros is None:
        return None
    places = MINOR_UNITS.get(currency or "", 2)
    step = 10 ** (6 - places)
    units = (abs(micros) + step // 2) // step  # in minor units, half up
    whole, frac = divmod(units, 10**places)
    text = f"{whole:,}" + (f".{frac:0{places}d}" if places else "")
    return _with_currency(("-" if micros < 0 and units else "") + text, currency)


def show_rate(micros: int | None, currency: str | None) -> str | None:
    """A cost per request or per token for a person: separators, and every significant decimal
    down to the micro (``¥0.00423``), never fewer than the currency's minor units."""
    if micros is None:
        return None
    places = MINOR_UNITS.get(currency or "", 2)
    whole, frac = divmod(abs(micros), MICROS)
    digits = f"{frac:06d}".rstrip("0").ljust(places, "0")
    text = f"{whole:,}" + (f".{digits}" if digits else "")
    return _with_currency(("-" if micros < 0 else "") + text, currency)


def plain_amount(micros: int | None) -> str | None:
    """The exact amount as a plain number (``123729.26435``): no symbol, no separators, for CSV."""
    if micros is None:
        return None
    d = Decimal(micros).scaleb(-6)
    return format(d.quantize(Decimal("0.01")) if d == d.quantize(Decimal("0.01")) else d.normalize(), "f")


def format_rate(micros_per_mtok: int | None, per: str | int, currency: str | None) -> str | None:
    """A price per 1k or per 1M tokens, exact and without trailing zeros: ``¥0.8``."""
    if micros_per_mtok is None:
        return None
    d = Decimal(micros_per_mtok).scaleb(-6 - per_power(per))
    text = format(d.normalize(), "f") if d else "0"
    return _with_currency(text, currency)
