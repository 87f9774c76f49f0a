"""A provider's bill against the ledger: per day and model, the provider's tokens and amount beside
the ledger's, the differences and a verdict.

The bill is CSV with a header ``date,model,tokens,amount`` (``currency`` optional), or the same in
Chinese (``日期,模型,Token数,金额,币种``), UTF-8 with or without a BOM (or GB18030, what a Chinese
Excel saves), numbers with thousands separators. A malformed bill is refused with one line that
names the line number (BillError); nothing is compared from half a file.

The ledger side: records of every status but rejected, on that day in the given time zone, of
that model: their total_tokens and cost_micros. The comparison covers the bill's models over its
first to last day (or a period given), so a day left out of the bill shows as "missing in bill".
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from datetime import date, timedelta, tzinfo
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING

from tokenabacus.dates import check_day
from tokenabacus.ledger.usage_sums import DaySum, daily_sums
from tokenabacus.money import DEFAULT_CURRENCY, MICROS, check_currency, parse_amount

if TYPE_CHECKING:
    from tokenabacus.ledger.database import Database

MATCH, DIFFERS, NO_LEDGER, NO_BILL = "match", "differs", "missing in ledger", "missing in bill"
VERDICTS = (MATCH, DIFFERS, NO_LEDGER, NO_BILL)
MAX_LINES = 100_000
MAX_TOLERANCE = Decimal("0.5")  # 50%: beyond that nothing would ever differ
# Header names (lower case, spaces removed) -> the column.
HEADERS = {
    "date": "date",
    "day": "date",
    "日期": "date",
    "model": "model",
    "模型": "model",
    "tokens": "tokens",
    "token数": "tokens",
    "token数量": "tokens",
    "tokens数": "tokens",
    "amount": "amount",
    "金额": "amount",
    "currency": "currency",
    "币种": "currency",
    "货币": "currency",
}
REQUIRED = ("date", "model", "tokens", "amount")
_DATE = re.compile(r"^(\d{4})[-/.年](\d{1,2})[-/.月](\d{1,2})日?$")
_COMPACT_DATE = re.compile(r"^(\d{4})(\d{2})(\d{2})$")
_GROUPED = re.compile(r"^[+-]?\d{1,3}([,，_ '\u00a0\u202f]\d{3})+(\.\d*)?$")
_SYMBOLS = "¥￥$€£"


class BillError(ValueError):
    """A bill that cannot be read; the message is one line and names the line number."""


@dataclass(frozen=True, slots=True)
class BillLine:
    line: int  # in the file, the header being line 1
    day: date
    model: str
    tokens: int
    amount: int  # micros
    currency: str | None
    places: int  # decimals the amount was written with: its rounding is not a difference


# Reading the bill -----------------------------------------------------------------------------
def decode(data: bytes) -> str:
    """UTF-8 (a BOM dropped), else GB18030."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        try:
            return data.decode("gb18030")
        except UnicodeDecodeError:
            raise BillError("the bill is neither UTF-8 nor GB18030 text") from None


def _number(text: str, line: int, what: str) -> str:
    """The number as plain digits: a currency symbol and thousands separators removed."""
    s = text.strip().lstrip(_SYMBOLS).strip()
    if _GROUPED.match(s):
        s = re.sub(r"[,，_ '\u00a0\u202f]", "", s)
    if not s:
        raise BillError(f"line {line}: {what} is empty")
    return s


def _date(text: str, line: int) -> date:
    s = text.strip()
    m = _DATE.match(s) or _COMPACT_DATE.match(s)
    try:
        if m is None:
            raise ValueError
        day = date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
    except ValueError:
        raise BillError(f"line {line}: date {text.strip()!r} is not a date like 2026-11-01") from None
    try:
        check_day(day, "date", s)
    except ValueError as e:
        raise BillError(f"line {line}: {e}") from None
    return day


def _tokens(text: str, line: int) -> int:
    s = _number(text, line, "tokens")
    if not re.fullmatch(r"\+?\d+", s):
        raise BillError(f"line {line}: tokens {text.strip()!r} is not a whole number of tokens")
    return int(s)


def _amount(text: str, line: int) -> tuple[int, int]:
    s = _number(text, line, "amount")
    try:
        micros = parse_amount(s, "amount")
    except ValueError as e:
        raise BillError(f"line {line}: {e}") from None
    exponent = Decimal(s).as_tuple().exponent
    return micros, max(-exponent, 0) if isinstance(exponent, int) else 0


def _header(row: list[str]) -> dict[str, int]:
    cols: dict[str, int] = {}
    for i, name in enumerate(row):
        key = HEADERS.get(re.sub(r"\s+", "", name.strip().lstrip("\ufeff")).lower())
        if key is not None:
            if key in cols:
                raise BillError(f"line 1: the header names {key} twice")
            cols[key] = i
    missing = [c for c in REQUIRED if c not in cols]
    if missing:
        found = ",".join(c.strip() for c in row) or "nothing"
        raise BillError(
            f"line 1: the header needs date, model, tokens, amount (or 日期, 模型, Token数, 金额); "
            f"missing {', '.join(missing)} in {found!r}"
        )
    return cols


def _line(row: list[str], cols: dict[str, int], line: int) -> BillLine:
    """One data row, its fields read in the header's order of importance."""
    day = _date(row[cols["date"]], line)
    model = row[cols["model"]].strip()
    if not model or len(model) > 200:
        raise BillError(f"line {line}: the model name must be 1 to 200 characters long")
    tokens = _tokens(row[cols["tokens"]], line)
    amount, places = _amount(row[cols["amount"]], line)
    cur = None
    if "currency" in cols and row[cols["currency"]].strip():
        try:
            cur = check_currency(row[cols["currency"]])
        except ValueError as e:
            raise BillError(f"line {line}: {e}") from None
    return BillLine(line, day, model, tokens, amount, cur, places)


def parse_bill(text: str) -> list[BillLine]:
    """The bill's lines; BillError (one line, naming the line) for anything malformed."""
    reader = csv.reader(io.StringIO(text.lstrip("\ufeff")), strict=True)
    cols: dict[str, int] | None = None
    width = 0
    out: list[BillLine] = []
    seen: dict[tuple[date, str], int] = {}
    try:
        for row in reader:
            line = reader.line_num
            if not any(c.strip() for c in row):
                continue
            if cols is None:
                cols, width = _header(row), len(row)
                continue
            # More fields than the header is most often an unquoted 1,234: refused, not guessed.
            if len(row) < width or any(c.strip() for c in row[width:]):
                raise BillError(f"line {line}: expected {width} fields as in the header, found {len(row)}")
            if len(out) >= MAX_LINES:
                raise BillError(f"line {line}: a bill of more than {MAX_LINES:,} lines is not read")
            bl = _line(row, cols, line)
            key = (bl.day, bl.model)
            if key in seen:
                raise BillError(f"line {line}: {bl.day} {bl.model} is already on line {seen[key]}")
            seen[key] = line
            out.append(bl)
    except csv.Error as e:
        raise BillError(f"line {reader.line_num}: {e}") from None
    if cols is None:
        raise BillError("the bill is empty: expected a header line date,model,tokens,amount")
    if not out:
        raise BillError("the bill has no lines after its header")
    return out


def parse_tolerance(text: str) -> Decimal:
    """A percentage, the % sign optional: ``0.5%`` (or ``0.5``) is 0.005."""
    s = text.strip().removesuffix("%").strip()
    try:
        d = Decimal(s) / 100
    except InvalidOperation:
        d = Decimal(-1)
    if not d.is_finite() or not 0 <= d <= MAX_TOLERANCE:
        raise ValueError(f"tolerance {text!r}: give a percentage from 0% to {MAX_TOLERANCE * 100:.0f}%, like 0.5%")
    return d


# The comparison -------------------------------------------------------------------------------
def _within(diff: int, reference: int, tolerance: Decimal, slack: int = 0) -> bool:
    return abs(diff) <= max(tolerance * abs(reference), Decimal(slack))


def _rounding_slack(places: int) -> int:
    """Half a unit of the bill's last decimal, in micros: 12.35 may be any of 12.345-12.355."""
    return MICROS // (2 * 10**places) if places < 6 else 0


def reconcile(
    db: Database,
    bill: list[BillLine],
    zone: tzinfo,
    tolerance: Decimal = Decimal("0.005"),
    currency: str | None = None,
    first: date | None = None,
    last: date | None = None,
) -> tuple[list[dict], dict]:
    """(lines, summary). Each line: the bill's figures, the ledger's, differences (ledger minus
    bill) and a verdict. Tokens match within ``tolerance`` of the bill's; amounts within it too,
    or within the rounding of the bill's own decimals. A bill line without a currency is in
    ``currency``, else the ledger's currency for that day and model, else CNY."""
    first = first or min(b.day for b in bill)
    last = last or max(b.day for b in bill)
    if first > last:
        raise ValueError(f"the period {first} to {last} is empty")
    models = {b.model for b in bill}
    sums = daily_sums(db, "model", first, last + timedelta(days=1), zone, values=models)
    ledger: dict[tuple[date, str], dict[str | None, DaySum]] = {}
    for (model, cur, day), s in sums.items():
        if model is not None:
            ledger.setdefault((day, model), {})[cur] = s
    lines = []
    billed: set[tuple[date, str]] = set()
    for b in sorted(bill, key=lambda b: (b.day, b.model, b.line)):
        if not first <= b.day <= last:
            continue
        billed.add((b.day, b.model))
        lines.append(_compare(b, ledger.get((b.day, b.model), {}), tolerance, currency))
    for (day, model), by_cur in sorted(ledger.items()):
        if (day, model) in billed or not sum(s.tokens for s in by_cur.values()):
            continue
        lines.append(_unbilled(day, model, by_cur))
    lines.sort(key=lambda r: (r["date"], r["model"], r["line"] or 0))
    return lines, _summary(lines)


def _compare(b: BillLine, by_cur: dict[str | None, DaySum], tolerance: Decimal, currency: str | None) -> dict:
    priced = sorted((c for c in by_cur if c is not None), key=lambda c: -by_cur[c].cost)
    cur = b.currency or currency or (priced[0] if priced else None) or DEFAULT_CURRENCY
    requests = sum(s.requests for s in by_cur.values())
    tokens = sum(s.tokens for s in by_cur.values())
    unpriced = sum(s.unpriced for s in by_cur.values())
    cost = by_cur[cur].cost if cur in by_cur else None
    notes = []
    if not requests:
        verdict, tokens_, cost = NO_LEDGER, None, None
    else:
        tokens_ = tokens
        ok = _within(tokens - b.tokens, b.tokens, tolerance)
        if cost is None:
            ok = False
            notes.append(f"the ledger has no cost in {cur} for it")
        else:
            ok = ok and _within(cost - b.amount, b.amount, tolerance, _rounding_slack(b.places))
        verdict = MATCH if ok else DIFFERS
        if unpriced:
            notes.append(f"{unpriced:,} unpriced record{'s' if unpriced != 1 else ''} in the ledger")
        others = [c for c in priced if c != cur]
        if others:
            notes.append("the ledger also charged it in " + ", ".join(others))
    return {
        "line": b.line,
        "date": b.day.isoformat(),
        "model": b.model,
        "currency": cur,
        "bill_tokens": b.tokens,
        "ledger_tokens": tokens_,
        "tokens_diff": None if tokens_ is None else tokens_ - b.tokens,
        "bill_amount_micros": b.amount,
        "ledger_cost_micros": cost,
        "amount_diff_micros": None if cost is None else cost - b.amount,
        "verdict": verdict,
        "note": "; ".join(notes) or None,
    }


def _unbilled(day: date, model: str, by_cur: dict[str | None, DaySum]) -> dict:
    priced = sorted((c for c in by_cur if c is not None), key=lambda c: -by_cur[c].cost)
    cur = priced[0] if priced else None
    unpriced = sum(s.unpriced for s in by_cur.values())
    note = f"{unpriced:,} unpriced record{'s' if unpriced != 1 else ''}" if unpriced else None
    return {
        "line": None,
        "date": day.isoformat(),
        "model": model,
        "currency": cur,
        "bill_tokens": None,
        "ledger_tokens": sum(s.tokens for s in by_cur.values()),
        "tokens_diff": None,
        "bill_amount_micros": None,
        "ledger_cost_micros": by_cur[cur].cost if cur is not None else None,
        "amount_diff_micros": None,
        "verdict": NO_BILL,
        "note": note,
    }


def _summary(lines: list[dict]) -> dict:
    """Counts per verdict; tokens and money totals (per currency) on each side and their differences."""

    def total(key: str, rows: list[dict]) -> int:
        return sum(r[key] or 0 for r in rows)

    currencies = sorted({r["currency"] for r in lines if r["currency"] is not None})
    amounts = []
    for cur in currencies:
        rows = [r for r in lines if r["currency"] == cur]
        bill, ledger = total("bill_amount_micros", rows), total("ledger_cost_micros", rows)
        amounts.append({"currency": cur, "bill_micros": bill, "ledger_micros": ledger, "diff_micros": ledger - bill})
    bill_tokens, ledger_tokens = total("bill_tokens", lines), total("ledger_tokens", lines)
    return {
        "lines": len(lines),
        **{v.replace(" ", "_"): sum(r["verdict"] == v for r in lines) for v in VERDICTS},
        "bill_tokens": bill_tokens,
        "ledger_tokens": ledger_tokens,
        "tokens_diff": ledger_tokens - bill_tokens,
        "amounts": amounts,
    }
