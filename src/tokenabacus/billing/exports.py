"""Report files: CSV and Excel workbooks from rows, the same bytes for the CLI and /admin.

Money goes into a workbook as exact decimals (openpyxl writes a Decimal's digits as they are), so
a sheet's sums equal the ledger's to the micro-unit; CSV writes amounts as exact plain numbers
beside the integer micros, and JSON keeps both. Every
cell passes through billing/cells.py: text from callers is never a formula in either format.
"""

from __future__ import annotations

import csv
import io
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from tokenabacus.billing.cells import csv_field, formula_like, xlsx_text
from tokenabacus.money import SYMBOLS, plain_amount, show_money, show_rate

if TYPE_CHECKING:
    from openpyxl.worksheet.worksheet import Worksheet

MICROS = 1_000_000
# Cells of rows marked so in their "row" column are bold (sub-totals and totals).
BOLD_ROWS = frozenset({"subtotal", "total", "grand total"})
_SHEET_BAD = re.compile(r"[\[\]:*?/\\\x00-\x1f\x7f]")


@dataclass
class Sheet:
    """One worksheet: heading lines above a table of ``columns`` (headed ``headers``, else the
    column names); ``money`` columns hold micros and are written as exact amounts with their row's
    currency's number format; ``formats``: other columns' number formats (token counts).
    ``row_labels``: what the ``row`` column shows for its values; ``empty``: the line a sheet
    with no rows says so with."""

    title: str
    columns: list[str]
    rows: list[dict]
    heading: list[str] = field(default_factory=list)
    money: frozenset[str] = frozenset()
    headers: list[str] | None = None
    formats: Mapping[str, str] = field(default_factory=dict)
    row_labels: Mapping[str, str] = field(default_factory=dict)
    empty: str | None = None


def money_format(currency: str | None) -> str:
    """A cell's number format for amounts in ``currency``: its symbol and minor units shown, the
    cell's exact value kept (a micro-unit more shows when it is there)."""
    sym = SYMBOLS.get(currency or "")
    if sym:
        return f'"{sym}"#,##0.00####'
    if currency:
        return f'#,##0.00#### "{currency}"'
    return "#,##0.00####"


def text_width(text: str) -> int:
    """Columns ``text`` takes in a spreadsheet: East Asian wide characters count double."""
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def _shown_width(v: Any, money: bool) -> int:
    """About as wide as the cell shows ``v``: numbers with their separators and symbol."""
    if v is None:
        return 0
    if isinstance(v, bool):
        return 5
    if isinstance(v, Decimal | float) or money:
        return len(f"{Decimal(v):,.2f}") + 2 if isinstance(v, Decimal | float | int) else text_width(str(v))
    if isinstance(v, int):
        return len(f"{v:,}")
    return text_width(str(v))


def csv_text(rows: Sequence[dict], columns: Sequence[str]) -> str:
    """CSV of ``rows``: money columns (``X`` beside an exact ``X_micros``) as plain numbers."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    w.writerows({c: csv_field(r.get(c)) for c in columns} for r in money_cells(rows, columns, for_person=False))
    return buf.getvalue()


def money_cells(rows: Sequence[dict], cols: Sequence[str], for_person: bool) -> list[dict]:
    """A column ``X`` beside an exact ``X_micros`` is money: a person reads ``¥123,729.26`` (the
    currency's minor units), CSV gets the exact plain number (``123729.26435``). JSON keeps both
    as they are."""
    money = [c for c in cols if any(f"{c}_micros" in r for r in rows)]
    if not money:
        return list(rows)
    out = []
    for r in rows:
        r = dict(r)
        for c in money:
            if f"{c}_micros" in r:
                micros = r[f"{c}_micros"]
                shown = show_rate if "per_" in c else show_money  # a unit cost keeps its decimals
                r[c] = shown(micros, r.get("currency")) if for_person else plain_amount(micros)
        out.append(r)
    return out


def sheet_title(name: str, taken: set[str]) -> str:
    """A valid, unique worksheet name: Excel allows 31 characters and none of []:*?/\\."""
    base = _SHEET_BAD.sub("_", name or "(none)").strip("'") or "(none)"
    title, n = base[:31], 2
    while title.lower() in taken:
        suffix = f" ({n})"
        title, n = base[: 31 - len(suffix)] + suffix, n + 1
    taken.add(title.lower())
    return title


def _amount(micros: Any) -> Any:
    return Decimal(int(micros)).scaleb(-6) if isinstance(micros, int) and not isinstance(micros, bool) else micros


def _cell(sh: Sheet, column: str, v: Any) -> Any:
    """What a sheet's cell holds: money as an exact amount, a row kind as its label."""
    if column in sh.money:
        return _amount(v)
    if column == "row" and isinstance(v, str):
        return sh.row_labels.get(v, v)
    return v


def _append(ws: Worksheet, values: Sequence[Any]) -> None:
    """A row of cells; text stays text (openpyxl would make one starting with "=" a formula)."""
    ws.append([xlsx_text(v) if isinstance(v, str) else v for v in values])
    row = ws.max_row
    for j, v in enumerate(values, start=1):
        if isinstance(v, str):
            cell = ws.cell(row=row, column=j)
            cell.data_type = "s"
            if formula_like(v):  # Excel's leading apostrophe: still text when someone edits the cell
                cell.quotePrefix = True


def xlsx_bytes(sheets: Sequence[Sheet], title: str | None = None) -> bytes:
    """A workbook with one sheet per ``Sheet``: a bold header row, frozen below it, numbers as
    numbers with number formats, sub-total and total rows in bold, columns as wide as what
    they show."""
    from openpyxl import Workbook
    from openpyxl.styles import Font
    from openpyxl.utils import get_column_letter

    wb = Workbook()
    bold = Font(bold=True)
    taken: set[str] = set()
    for i, sh in enumerate(sheets):
        ws = wb.active if i == 0 else wb.create_sheet()
        assert ws is not None
        ws.title = sheet_title(sh.title, taken)
        for line in sh.heading:
            _append(ws, [line])
        if sh.heading:
            ws.cell(row=1, column=1).font = bold
            ws.append([])
        headers = sh.headers or sh.columns
        _append(ws, headers)
        header = ws.max_row
        for cell in ws[header]:
            cell.font = bold
        widths = [text_width(h) for h in headers]
        for r in sh.rows:
            values = [_cell(sh, c, r.get(c)) for c in sh.columns]
            _append(ws, values)
            cells = ws[ws.max_row]
            if r.get("row") in BOLD_ROWS:
                for cell in cells:
                    cell.font = bold
            for j, c in enumerate(sh.columns):
                if c in sh.money:
                    cells[j].number_format = money_format(r.get("currency"))
                elif c in sh.formats:
                    cells[j].number_format = sh.formats[c]
                widths[j] = max(widths[j], _shown_width(values[j], c in sh.money))
        if not sh.rows and sh.empty:
            _append(ws, [sh.empty])
        ws.freeze_panes = ws.cell(row=header + 1, column=1)
        for j, w in enumerate(widths, start=1):
            ws.column_dimensions[get_column_letter(j)].width = max(8, min(60, w + 2))
    if title:
        wb.properties.title = xlsx_text(title)
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()
