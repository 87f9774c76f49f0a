"""The chargeback as the workbook finance gets, in the reader's language (zh or en): a summary
sheet, a sheet per department, the price versions, the adjustments and the hardware, every one
present (an empty one says so). Money and prices are numeric cells holding the exact amounts,
shown with their currency's number format; token counts are whole numbers with separators."""

from __future__ import annotations

from datetime import datetime

from tokenabacus.billing.chargeback import FIGURES, Chargeback
from tokenabacus.billing.exports import Sheet, xlsx_bytes
from tokenabacus.billing.workbook_labels import headers, word
from tokenabacus.calendar import zone_named

MONEY = frozenset({"cost", "adjustments", "hardware", "amount_due"})
PRICES = ("input_per_1m", "cached_per_1m", "output_per_1m")
COUNT = "#,##0"
_FORMATS = {**{f: COUNT for f in (*FIGURES, "unpriced_requests", "usage")}, "share": "0.00%"}
_DETAIL = ["row", "project", "user", "model", *FIGURES, "cost", "currency", "unpriced_requests"]
_SUMMARY = ["row", "department", *FIGURES, "cost", "adjustments", "hardware", "amount_due", "currency"]
_SUMMARY += ["unpriced_requests"]
_VERSIONS = ["model", "price_version", "effective_from", *PRICES, "requests", "total_tokens", "cost", "currency"]
_ADJUSTMENTS = ["adjustment_id", "at_local", "department", "project", "user", "model", "request_id"]
_ADJUSTMENTS += ["amount", "currency", "reason", "created_by"]
_HARDWARE = ["pool", "basis", "department", "project", "usage", "share", "cost", "currency"]


def sheets(cb: Chargeback, lang: str = "en") -> list[Sheet]:
    """Summary first, a sheet per department, then price versions, adjustments and hardware."""
    head = [
        word("title", lang, month=cb.month, tz=cb.tz),
        word("span", lang, since=_iso(cb.window.since_ms, cb.tz), until=_iso(cb.window.until_ms, cb.tz)),
        *(note(n, lang) for n in cb.notes),
    ]
    # In the summary the total rows are grand totals; in a department's sheet, its totals.
    grand = {"group": "", "total": word("grand total", lang)}
    dept_rows = {"group": "", "subtotal": word("subtotal", lang), "total": word("dept_total", lang)}
    none = word("none", lang)

    def sheet(
        title: str,
        cols: list[str],
        rows: list[dict],
        heading: list[str],
        money: frozenset[str] = MONEY,
        labels: dict[str, str] | None = None,
    ) -> Sheet:
        return Sheet(title, cols, rows, heading, money, headers(cols, lang), _FORMATS, labels or {}, none)

    out = [sheet(word("summary", lang), _SUMMARY, [_as_money(r) for r in cb.summary], head, labels=grand)]
    for dept, rows in cb.departments.items():
        heading = [word("dept_title", lang, dept=dept, month=cb.month, tz=cb.tz)]
        out.append(sheet(dept, _DETAIL, [_as_money(r) for r in rows], heading, labels=dept_rows))
    versions = [{**_as_money(v), **{p: v.get(f"{p}_micros") for p in PRICES}} for v in cb.versions]
    out.append(sheet(word("versions", lang), _VERSIONS, versions, [], MONEY | frozenset(PRICES)))
    adjustments = [{**a, "amount": a["amount_micros"]} for a in cb.adjustments]
    out.append(sheet(word("adjustments", lang), _ADJUSTMENTS, adjustments, [], frozenset({"amount"})))
    hardware = [{**h, "cost": h["cost_micros"]} for h in cb.hardware]
    out.append(sheet(word("hardware", lang), _HARDWARE, hardware, [word("hardware_title", lang)]))
    return out


def note(text: str, lang: str) -> str:
    """A chargeback's note in ``lang``: the English sentences _notes writes, said in Chinese."""
    if lang != "zh":
        return text
    if text.endswith("see unpriced_requests"):
        n = text.split(" ", 1)[0]
        return f"{n} 个请求没有生效的价格（没有费用，而不是零）：见“未定价请求数”"
    if text.startswith("costs are in several currencies"):
        return "费用涉及多种币种：每个合计按币种分列"
    if text.startswith("scoped to "):
        return "范围：" + text.removeprefix("scoped to ")
    return text


def _as_money(r: dict) -> dict:
    """A row for the workbook: money columns hold micros (written as exact amounts)."""
    return {**r, **{k: r.get(f"{k}_micros") for k in MONEY}}


def _iso(ms: int, tz: str) -> str:
    return datetime.fromtimestamp(ms / 1000, zone_named(tz)).isoformat(timespec="minutes")


def workbook(cb: Chargeback, lang: str = "en") -> bytes:
    return xlsx_bytes(sheets(cb, lang), word("title", lang, month=cb.month, tz=cb.tz))
