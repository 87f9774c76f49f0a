"""The rollup rows and their figures, and the accumulator that sums records into them in memory.

A rollup row sums the records of one UTC hour that share every dimension (model, department,
project, user, key_id, status, currency, price_version; a missing value is ''). Latency is kept as
a fixed histogram (``LATENCY_BOUNDS``, 1-2-5 steps in ms) plus the longest duration, so a report
can give a p95 for any set of rows; see ``p95``. The daily rollups hold the same rows per UTC day.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from typing import Any

from tokenabacus.calendar import DAY_MS, HOUR_MS
from tokenabacus.ledger.schema import usage_rollups as ru

DIMENSIONS = ("model", "department", "project", "user", "key_id", "status", "currency", "price_version")
# Upper bounds (ms) of the latency buckets, as the schema names its columns (lat_le_N).
LATENCY_BOUNDS: tuple[int, ...] = tuple(
    int(c.name.removeprefix("lat_le_")) for c in ru.columns if c.name.startswith("lat_le_")
)
LATENCY_COLUMNS = (*(f"lat_le_{b}" for b in LATENCY_BOUNDS), "lat_over")
# Our count against the upstream's, over the records that kept both (usage_source "tokenizer" with
# upstream figures): the records compared, each side's prompt and completion sums, and how many
# records disagreed. A record billed from the upstream's figures kept no count of ours to compare,
# unless its claim was capped at what the request could use (metering.bounds): billed below the
# claim, it is compared as well.
DRIFT = (
    "compared_requests",
    "compared_prompt_tokens",
    "compared_completion_tokens",
    "upstream_prompt_tokens",
    "upstream_completion_tokens",
    "mismatched_requests",
)
COMPARED_SOURCE = "tokenizer"
CAPPED_SOURCE = "upstream"  # compared only when billed below the claim
# The additive figures of a rollup row; FIGURES adds the longest duration (merged by max).
SUMS = (
    "requests",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "cached_tokens",
    "cost_micros",
    "priced_requests",
    "duration_ms",
    *DRIFT,
    *LATENCY_COLUMNS,
)
FIGURES = (*SUMS, "duration_max_ms")
# What the accumulator reads from each record, in this order.
INPUT = (
    "timestamp",
    *DIMENSIONS,
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "cached_tokens",
    "cost_micros",
    "duration_ms",
    "usage_source",
    "upstream_prompt_tokens",
    "upstream_completion_tokens",
)
ROW_COLUMNS = ("hour", "dims", *DIMENSIONS, *FIGURES)  # a rollup row's columns, as the accumulator gives them
_FIRST_BUCKET = SUMS.index(LATENCY_COLUMNS[0])
_FIRST_DRIFT = SUMS.index(DRIFT[0])


def digest(dims: Sequence[str]) -> str:
    """The rollup row's key for these dimension values (length-prefixed, so no two tuples meet)."""
    text = "".join(f"{len(v)}:{v}" for v in dims)
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def p95(buckets: Sequence[int], longest: int) -> int | None:
    """The nearest-rank 95th percentile of a latency histogram, as the upper bound of the bucket
    that holds it, capped by the longest duration: never below the exact value, at most one
    bucket step (2x, or 2.5x from 2 to 5) above it. None without timed records."""
    n = sum(buckets)
    if not n:
        return None
    rank = -(-n * 95 // 100)  # ceil(0.95 n) in integers
    seen = 0
    for i, count in enumerate(buckets):
        seen += count
        if seen >= rank:
            return min(LATENCY_BOUNDS[i], longest) if i < len(LATENCY_BOUNDS) else longest
    return longest  # not reached: the counts add up to n


class Accumulator:
    """Sums records (tuples in ``INPUT`` order) into rollup rows, in memory."""

    def __init__(self) -> None:
        self.groups: dict[tuple, list[int]] = {}
        self.records = 0

    def add(self, rows: Iterable[Sequence[Any]]) -> None:
        # The writer's hot loop: locals, no function calls per figure.
        groups, bounds, width, first = self.groups, LATENCY_BOUNDS, len(FIGURES), _FIRST_BUCKET
        d0 = _FIRST_DRIFT
        n = 0
        for (
            ts, model, dept, project, user, key_id, status, currency, version,
            pt, ct, tt, cached, cost, dur, source, up_p, up_c,
        ) in rows:  # fmt: skip
            n += 1
            key = (
                ts - ts % HOUR_MS,
                model or "",
                dept or "",
                project or "",
                user or "",
                key_id or "",
                status or "",
                currency or "",
                version or "",
            )
            acc = groups.get(key)
            if acc is None:
                acc = groups[key] = [0] * width
            acc[0] += 1
            if pt is not None:
                acc[1] += pt
            if ct is not None:
                acc[2] += ct
            if tt is not None:
                acc[3] += tt
            if cached is not None:
                acc[4] += cached
            if cost is not None:
                acc[5] += cost
                acc[6] += 1
            if dur is not None:
                acc[7] += dur
                acc[first + bisect_left(bounds, dur)] += 1
                if dur > acc[-1]:
                    acc[-1] = dur
            if up_p is not None and up_c is not None:
                differs = pt != up_p or ct != up_c
                if source == COMPARED_SOURCE or (differs and source == CAPPED_SOURCE):
                    acc[d0] += 1
                    acc[d0 + 1] += pt or 0
                    acc[d0 + 2] += ct or 0
                    acc[d0 + 3] += up_p
                    acc[d0 + 4] += up_c
                    if differs:
                        acc[d0 + 5] += 1
        self.records += n

    def rows(self) -> list[tuple]:
        """Rows in ``ROW_COLUMNS`` order, sorted by (hour, dims): concurrent writers then lock
        the rows they share in the same order and cannot deadlock."""
        out = [(key[0], digest(key[1:]), *key[1:], *acc) for key, acc in self.groups.items()]
        out.sort(key=lambda r: (r[0], r[1]))
        return out


def daily(rows: Sequence[tuple]) -> list[tuple]:
    """Hourly rollup rows (``ROW_COLUMNS`` order) summed per UTC day and names, in the same
    order (day, dims): the daily table's rows for the same records."""
    width = len(FIGURES)
    out: dict[tuple[int, str], list] = {}
    for r in rows:
        day = r[0] - r[0] % DAY_MS
        acc = out.get((day, r[1]))
        if acc is None:
            out[(day, r[1])] = [day, *r[1:]]
            continue
        for i in range(len(acc) - width, len(acc) - 1):
            acc[i] += r[i]
        acc[-1] = max(acc[-1], r[-1])
    return [tuple(v) for _, v in sorted(out.items())]
