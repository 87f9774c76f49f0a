"""Ledger records made for tests that write the spool or the database directly."""

from __future__ import annotations

from collections.abc import Callable

from tokenabacus.ledger.record import start_record


def sample_records(n: int, project: Callable[[int], str] = lambda i: f"p{i % 3}") -> list[dict]:
    """``n`` finished ok records with distinct ids and figures (prompt 10 + i, completion i)."""
    out = []
    for i in range(n):
        rec = start_record(
            model="m",
            endpoint="/v1/chat/completions",
            user="u",
            project=project(i),
            department="d",
            prompt_tokens=10 + i,
            completion_tokens=i,
        )
        rec.finish()
        out.append(rec.to_dict())
    return out
