"""The dates a person may name (report windows, months, prices, forecasts): 1970-01-01, where the
ledger's UTC-millisecond clock starts, to 9998-12-31. Python's dates end in year 9999, and a
window's next day, week or month must still be one, so 0001-01-01 or 9999-12-31 is a clear
refusal instead of an OverflowError deep inside a report."""

from __future__ import annotations

from datetime import date

FIRST = date(1970, 1, 1)
LAST = date(9998, 12, 31)


def check_day(day: date, what: str, text: str) -> None:
    """ValueError naming ``what`` when ``day`` (the date as written, in its own zone) is out of range."""
    if not FIRST <= day <= LAST:
        raise ValueError(f"{what} {text!r} is out of range: give a date from {FIRST} to {LAST}")


def check_month(year: int, month: int, what: str, text: str) -> None:
    if not (FIRST.year, FIRST.month) <= (year, month) <= (LAST.year, LAST.month):
        raise ValueError(f"{what} {text!r} is out of range: give a month from {FIRST:%Y-%m} to {LAST:%Y-%m}")
