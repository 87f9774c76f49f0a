"""The price book: exact prices, the version in force at an instant, and what a record costs.

Pure (no I/O): the gateway charges every record from an in-memory ``PriceBook`` on the hot path.
A price is integer micros per 1M tokens (money.py reads and shows them). A book is built in one
place, ``book_of`` (the config's versions merged with the ledger's rows); a running gateway holds
it in a ``PriceCache``, swapped whole when the prices change.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_right
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import tzinfo
from typing import TYPE_CHECKING

from tokenabacus.calendar import parse_time
from tokenabacus.ledger.record import UsageRecord
from tokenabacus.money import check_currency

if TYPE_CHECKING:
    from tokenabacus.config import PriceDecl

MTOK = 1_000_000  # prices are per this many tokens
CONFIG, LEDGER = "config", "ledger"  # where a version comes from


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


def book_of(config: Iterable[PriceVersion], rows: Iterable[dict] = ()) -> PriceBook:
    """The price book: the config file's versions merged with the ledger's ``price_versions``
    rows. Every book (the gateway's, the CLI's, the planner's) is built here."""
    return PriceBook(config, [PriceVersion.of_row(r) for r in rows])


class PriceCache:
    """The book a running gateway charges from and admission reserves money at: the config's
    versions with the ledger's, replaced whole by ``load`` when the prices generation moves (so a
    reader always sees one consistent book)."""

    __slots__ = ("book", "config")

    def __init__(self, config: list[PriceVersion]) -> None:
        self.config = config
        self.book = book_of(config)

    def load(self, rows: Iterable[dict]) -> None:
        self.book = book_of(self.config, rows)

    def at(self, model: str, ts: int) -> PriceVersion | None:
        return self.book.at(model, ts)
