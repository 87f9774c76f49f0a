"""Ledger URLs as they may be shown to people."""

from __future__ import annotations


def safe_url(url: str) -> str:
    """The ledger URL as it may be shown: the password masked."""
    # Imported here: commands that only print a URL (or fail before opening the ledger) start faster.
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "(unparsable ledger.url)"
