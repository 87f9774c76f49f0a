"""The named reports, each declared once: its name, what it answers, its own parameters, the
window it covers by default, its query and the formats it comes in. `tokenabacus report NAME`
(cli/report.py) and ``GET /admin/reports/NAME`` (server/admin/reports.py) are both generated
from these entries, so adding a report is one entry in ``REPORTS``.

Every report also takes, on both surfaces, the window (a period, or since/until; a month for the
chargeback), filters (a viewer's scope on /admin), a time zone and a format; those belong to the
surfaces, which turn them into a ``Window`` and filters before ``run``. The queries are imported
when a report runs: the CLI builds its commands from these entries at every start.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tokenabacus.billing.prices import PriceVersion
    from tokenabacus.billing.table import Table
    from tokenabacus.billing.windows import Window
    from tokenabacus.ledger.store import Store

Filters = Mapping[str, Sequence[str]]
FORMATS = ("table", "csv", "json", "xlsx")  # table: the terminal's; /admin answers the others


@dataclass(frozen=True)
class Param:
    """One of a report's own parameters: ``--min-requests`` on the CLI, ``min_requests`` on /admin."""

    name: str
    type: Any  # str, int, float, bool, or one of them | None (then the default is None)
    default: Any
    help: str
    choices: tuple[str, ...] = ()  # /admin's schema lists them; the CLI leaves the check to the report
    ge: int | None = None  # the least value, on both surfaces
    le: int | None = None  # the greatest value, on both surfaces
    # /admin's own bounds (the CLI lets the report refuse, in one line, and sets no ceiling)
    query_gt: float | None = None
    query_le: float | None = None


@dataclass(frozen=True)
class Source:
    """What a report reads: the ledger, and the price versions in force (the chargeback's)."""

    store: Store
    versions: Callable[[], list[PriceVersion]]


@dataclass(frozen=True)
class Answer:
    """A report's answer as both surfaces write it."""

    title: str
    columns: list[str]  # as written: the terminal, CSV, a sheet
    rows: list[dict]
    notes: list[str]
    body: Any  # the JSON /admin answers
    file_name: str  # of the CSV or workbook /admin answers
    document: bool = False  # the CLI's JSON is ``body`` too (a table's is its rows)
    workbook: Callable[[], bytes] | None = None  # a workbook of its own (else one sheet of the rows)


def of_table(name: str, t: Table) -> Answer:
    return Answer(t.title, t.shown_columns(), t.rows, t.notes, t.as_json(), name)


Runner = Callable[[Source, "Window", Filters, Mapping[str, Any]], Answer]


@dataclass(frozen=True)
class NamedReport:
    name: str
    summary: str  # one line: /admin's OpenAPI summary
    help: str  # the CLI command's help
    run: Runner  # (source, window, filters, its own parameters by name)
    params: tuple[Param, ...] = ()
    # The window when none is asked for (today, week or month); None: the report covers one
    # month, asked as ``month`` (YYYY-MM, default: last month).
    period: str | None = None
    description: str | None = None  # /admin's longer description
    formats: tuple[str, ...] = FORMATS
    check: Callable[[Mapping[str, Any]], None] | None = None  # argument checks before anything is read


# The queries, each from its entry's parameters --------------------------------------------------
def _top(src: Source, win: Window, f: Filters, a: Mapping[str, Any]) -> Answer:
    from tokenabacus.billing.rankings import top

    return of_table("top", top(src.store, a["by"], win, f, a["rank"], a["limit"], a["currency"]))


def _check_top(a: Mapping[str, Any]) -> None:
    from tokenabacus.billing.rankings import check_dimension

    check_dimension(a["by"])


def _peaks(src: Source, win: Window, f: Filters, a: Mapping[str, Any]) -> Answer:
    from tokenabacus.billing.rankings import peaks

    return of_table("peaks", peaks(src.store, win, f, a["metric"]))


def _models(src: Source, win: Window, f: Filters, a: Mapping[str, Any]) -> Answer:
    from tokenabacus.billing.rankings import models

    return of_table("models", models(src.store, win, f))


def _suspicious(src: Source, win: Window, f: Filters, a: Mapping[str, Any]) -> Answer:
    from tokenabacus.billing.suspicious import suspicious

    t = suspicious(src.store, win, a["by"], f, a["factor"], a["min_requests"], a["min_tokens"], a["baseline_days"])
    return of_table("suspicious", t)


def _drift(src: Source, win: Window, f: Filters, a: Mapping[str, Any]) -> Answer:
    from tokenabacus.billing.rankings import drift

    return of_table("drift", drift(src.store, win, f, a["differences_only"]))


def _chargeback(src: Source, win: Window, f: Filters, a: Mapping[str, Any]) -> Answer:
    from tokenabacus.billing import chargeback as cb
    from tokenabacus.billing.chargeback_book import workbook
    from tokenabacus.billing.workbook_labels import pick_lang

    lang = pick_lang(a["lang"])
    result = cb.chargeback(src.store, win.label, win.tz, src.versions(), f)
    return Answer(
        f"Chargeback {win.label} ({win.tz})",
        cb.COLUMNS,
        result.flat(),
        result.notes,
        result.as_json(),
        f"chargeback-{win.label}",
        document=True,
        workbook=lambda: workbook(result, lang),
    )


def _check_chargeback(a: Mapping[str, Any]) -> None:
    from tokenabacus.billing.workbook_labels import pick_lang

    pick_lang(a["lang"])


REPORTS: tuple[NamedReport, ...] = (
    NamedReport(
        "top",
        "This period's ranking by tokens and by cost, with shares and change",
        "This period's ranking (default: this week) by tokens and by cost, with each one's share\n"
        "and its change against the period before.",
        _top,
        (
            Param("by", str, "department", "Rank department, project, user, key_id or model."),
            Param("rank", str, "tokens", "Order by tokens or cost (both ranks are shown).", ("tokens", "cost")),
            Param("limit", int | None, None, "Only the first N.", ge=1),
            Param(
                "currency", str | None, None, "Costs in this currency (default: the one most requests were charged in)."
            ),
        ),
        period="week",
        description="Groups of `by` (department, project, user, key_id, model) over `period` (default this\n"
        "week; `previous=true`: last week), a `month` (YYYY-MM) or `since`/`until`.",
        check=_check_top,
    ),
    NamedReport(
        "peaks",
        "Each day's peak hour and its share of the day",
        "Each day's peak hour (local time) and its share of the day (default: this week).",
        _peaks,
        (Param("metric", str, "tokens", "The busiest hour by tokens or requests.", ("tokens", "requests")),),
        period="week",
    ),
    NamedReport(
        "models",
        "Cost per model, per 1k tokens and per request",
        "Cost per model, per 1k tokens and per request, with latency (default: this month).",
        _models,
        period="month",
    ),
    NamedReport(
        "suspicious",
        "Callers whose busiest minute was far above their own usual rate",
        "Callers whose busiest minute was far above their own usual rate (default: today), in\n"
        "requests or in tokens per minute.",
        _suspicious,
        (
            Param("by", str, "key_id", "Judge each key_id, user, project, department or client_ip."),
            Param(
                "factor", float, 5.0, "Flag a peak minute this many times the usual rate.", query_gt=1, query_le=1000
            ),
            Param("min_requests", int, 30, "...and at least this many requests in that minute.", ge=1),
            Param("min_tokens", int, 50_000, "...or at least this many tokens in that minute.", ge=1),
            Param("baseline_days", int, 7, "Days of history the usual rate is from.", ge=1, le=90),
        ),
        period="today",
    ),
    NamedReport(
        "drift",
        "Our token count against the upstream's, per model and day",
        "Our token count against the upstream's, per model and day (default: this month).",
        _drift,
        (Param("differences_only", bool, False, "Only the days where some record disagreed."),),
        period="month",
    ),
    NamedReport(
        "chargeback",
        "A month's chargeback per department (a viewer's: its own)",
        "The month's chargeback per department: cost by project, user and model with sub-totals,\n"
        "the month's adjustments, the price versions that charged it and the hardware apportioned. As\n"
        "xlsx: a summary sheet, a sheet per department, price versions, adjustments, hardware.",
        _chargeback,
        (
            Param(
                "lang",
                str | None,
                None,
                "The workbook's language, zh or en (default: the locale's, LANG=zh_CN... reads zh).",
                ("zh", "en"),
            ),
        ),
        description="Cost by department, project, user and model with sub-totals, the month's adjustments,\n"
        "the price versions used and the hardware apportioned; `format=xlsx` is the workbook\n"
        "finance gets from `tokenabacus report chargeback` (a sheet per department), in `lang`.",
        check=_check_chargeback,
    ),
)
