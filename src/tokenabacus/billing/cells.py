"""Ledger text as a cell: what a spreadsheet or a terminal must never take for code.

Model names, user agents and organization names come from callers. A spreadsheet runs a cell that
starts with = + - @ (or a tab or a carriage return) as a formula: OWASP's "CSV injection", where
``=HYPERLINK(...)`` in a model name becomes a link in finance's workbook. A terminal obeys escape
sequences, and XML (so xlsx) cannot hold most control characters at all.
"""

from __future__ import annotations

import re
from typing import Any

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
# Text that is only an amount (-120.5, -¥12.345678, -12.5 JPY) is not a formula: it stays as it is.
_AMOUNT = re.compile(r"[+-]?[$¥€£]?\d[\d,]*(?:\.\d+)?(?:[eE][+-]?\d+)?(?: [A-Z]{3})?")
# Characters XML 1.0 has no place for (openpyxl refuses them) and those a terminal acts on.
_NOT_XML = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
MAX_XLSX_TEXT = 32_767  # the most characters Excel keeps in a cell


def formula_like(text: str) -> bool:
    """Whether a spreadsheet would read ``text`` as a formula (OWASP's leading characters)."""
    return text.startswith(FORMULA_START) and _AMOUNT.fullmatch(text) is None


def csv_field(value: Any) -> Any:
    """A CSV field shown as written: text a spreadsheet would run gets OWASP's leading single
    quote; numbers (and text that is only an amount) stay exactly as they are."""
    if isinstance(value, str) and formula_like(value):
        return "'" + value
    return value


def xlsx_text(text: str) -> str:
    """Text a workbook can hold: control characters XML refuses are shown as ``\\xNN``."""
    if _NOT_XML.search(text):
        text = _NOT_XML.sub(_escape, text)
    return text[:MAX_XLSX_TEXT]


def visible(text: str) -> str:
    """Text for a terminal: every control character (escape sequences, carriage returns,
    newlines) shown as ``\\xNN`` instead of acted on."""
    return _CONTROL.sub(_escape, text) if _CONTROL.search(text) else text


def _escape(m: re.Match[str]) -> str:
    return f"\\x{ord(m.group()):02x}"
