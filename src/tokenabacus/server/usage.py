"""The usage a /v1 response shows: the record's own figures, in a response body or a stream's
final usage chunk (with the request's cost beside it when the caller asked, server/cost.py)."""

from __future__ import annotations

import time
from typing import Any

from tokenabacus.ledger.record import UsageRecord
from tokenabacus.server.cost import FIELD, cost_field


def usage_dict(rec: UsageRecord) -> dict:
    """The usage a 200 response shows: the record's own figures (known on every success)."""
    p, c = rec.prompt_tokens or 0, rec.completion_tokens or 0
    u: dict = {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}
    if rec.cached_tokens is not None:
        u["prompt_tokens_details"] = {"cached_tokens": rec.cached_tokens}
    return u


def usage_chunk(rec: UsageRecord, last: dict | None, chunk_object: str, include_cost: bool) -> dict[str, Any]:
    """A stream's final chunk: no choices, the usage, and (asked for, priced) the cost. ``rec``
    has been priced by the enrich step; ``last`` is the last chunk sent, whose id it repeats."""
    base = last or {"id": "chatcmpl-" + rec.request_id[4:], "created": int(time.time())}
    chunk: dict[str, Any] = {
        "id": base.get("id"),
        "object": base.get("object") or chunk_object,
        "created": base.get("created"),
        "model": rec.model,
        "choices": [],
        "usage": usage_dict(rec),
    }
    if "system_fingerprint" in base:
        chunk["system_fingerprint"] = base["system_fingerprint"]
    cost = cost_field(rec) if include_cost else None
    if cost is not None:
        chunk[FIELD] = cost
    return chunk
