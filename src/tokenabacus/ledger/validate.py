"""The writer does not trust the spool: each record is checked against the columns it goes to
before any insert, so one bad value is set aside instead of failing every batch behind it.

Ranges are the narrowest among the supported databases (``Integer`` is 32-bit on PostgreSQL
and MySQL/MariaDB, 64-bit on SQLite): a record any ledger takes, every ledger takes, and
MariaDB's ``INSERT IGNORE`` never gets a chance to clip an out-of-range figure silently.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Integer, String, Text

from tokenabacus.ledger.record import FIELDS
from tokenabacus.ledger.schema import usage_records

_INT32 = (-(2**31), 2**31 - 1)
_INT64 = (-(2**63), 2**63 - 1)


def _rule(column) -> tuple[str, tuple[int, int] | None, bool]:
    """(kind, integer range, nullable) for one column."""
    t = column.type
    if isinstance(t, BigInteger):
        return "int", _INT64, column.nullable
    if isinstance(t, Integer):
        return "int", _INT32, column.nullable
    if isinstance(t, Boolean):
        return "bool", None, column.nullable
    if isinstance(t, (String, Text)):
        return "str", None, column.nullable
    raise TypeError(f"no check for column type {t!r}")


_RULES = {f: _rule(usage_records.c[f]) for f in FIELDS}
_KIND_NAMES = {"int": "an integer", "bool": "true or false", "str": "a string"}


def problem(record: object) -> str | None:
    """Why this spooled record cannot be written, or None if it can."""
    if not isinstance(record, dict):
        return f"not a JSON object but {type(record).__name__}"
    for name, (kind, bounds, nullable) in _RULES.items():
        v = record.get(name)
        if v is None:
            if not nullable:
                return f"{name}: missing"
            continue
        if kind == "int":
            ok = type(v) is int  # bool is an int subclass: true is not a token count
        elif kind == "bool":
            ok = type(v) is bool
        else:
            ok = type(v) is str
        if not ok:
            return f"{name}: expected {_KIND_NAMES[kind]}, got {_short(v)}"
        if bounds and not bounds[0] <= v <= bounds[1]:
            bits = 32 if bounds is _INT32 else 64
            return f"{name}: {v} is out of range for a {bits}-bit integer column"
    return None


def _short(v: object) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."
