"""The UsageRecord: one ledger row per request. Field names are a contract (DESIGN.md)."""

from __future__ import annotations

import dataclasses
import itertools
import os
import time
from dataclasses import dataclass, field
from typing import Any

from tokenabacus.calendar import now_ms

# Statuses a record can carry.
OK, ERROR, CANCELLED, REJECTED = "ok", "error", "cancelled", "rejected"
# Where the token figures came from.
SOURCE_ENGINE, SOURCE_TOKENIZER, SOURCE_UPSTREAM, SOURCE_ESTIMATED = "engine", "tokenizer", "upstream", "estimated"


# A random per-process prefix plus a counter: unique across replicas and restarts without a
# syscall per request (uuid4 reads the kernel's random source every time).
_PREFIX = "req_" + os.urandom(10).hex()
_COUNTER = itertools.count(1)


def _reseed() -> None:
    global _PREFIX, _COUNTER
    _PREFIX, _COUNTER = "req_" + os.urandom(10).hex(), itertools.count(1)


os.register_at_fork(after_in_child=_reseed)  # forked workers must not share a prefix


def new_request_id() -> str:
    return f"{_PREFIX}{next(_COUNTER):012x}"


@dataclass(slots=True)
class UsageRecord:
    request_id: str
    timestamp: int  # request start, UTC epoch milliseconds
    duration_ms: int | None = None
    ttft_ms: int | None = None
    model: str | None = None
    model_version: str | None = None
    engine: str | None = None
    endpoint: str | None = None
    stream: bool = False
    status: str = OK
    error_code: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None
    cached_tokens: int | None = None
    usage_source: str | None = None
    upstream_prompt_tokens: int | None = None
    upstream_completion_tokens: int | None = None
    key_id: str | None = None
    user: str | None = None
    project: str | None = None
    department: str | None = None
    client_ip: str | None = None
    user_agent: str | None = None
    price_version: str | None = None
    cost_micros: int | None = None
    currency: str | None = None
    prev_hash: str | None = None
    hash: str | None = None
    # The name the client asked for when it was an alias of ``model`` (appended: the contract's order holds).
    model_alias: str | None = None
    # Not part of the contract: monotonic start used to compute durations.
    _t0: float = field(default=0.0, repr=False, compare=False)

    def to_dict(self) -> dict:
        return {f: getattr(self, f) for f in FIELDS}

    def elapsed_ms(self, at: float | None = None) -> int:
        """Milliseconds from the request's start to ``at`` (a time.perf_counter() value) or now."""
        return int(((time.perf_counter() if at is None else at) - self._t0) * 1000)

    def finish(self) -> None:
        """Stamp duration and total tokens just before the record is spooled.

        A record bills a whole pair or nothing: prompt, completion and total are all known (and
        total is their sum) or all null, so sums over the ledger always agree."""
        self.duration_ms = self.elapsed_ms()
        if self.prompt_tokens is not None and self.completion_tokens is not None:
            self.total_tokens = self.prompt_tokens + self.completion_tokens
        else:
            clear_usage(self)


def clear_usage(rec: UsageRecord) -> None:
    """Bill nothing (a request that was refused or produced no output)."""
    rec.prompt_tokens = rec.completion_tokens = rec.total_tokens = rec.cached_tokens = None
    rec.usage_source = None


FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(UsageRecord) if not f.name.startswith("_"))


def start_record(**kw: Any) -> UsageRecord:
    rec = UsageRecord(request_id=new_request_id(), timestamp=now_ms(), **kw)
    rec._t0 = time.perf_counter()
    return rec
