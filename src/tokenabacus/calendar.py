"""Time as people name it: zones, local midnights, period bounds, and the one clock.

The ledger's clock is UTC epoch milliseconds; days, weeks and months are cut at midnight in a
zone. Pure (no I/O) and importing nothing from the rest of the package but ``dates``.
"""

from __future__ import annotations

import re
from datetime import date, datetime, tzinfo

from tokenabacus.dates import check_day

_MONTH = re.compile(r"^\d{4}-\d{2}$")


def parse_time(value: str | date | datetime, zone: tzinfo, what: str) -> int:
    """A month (2026-11), date (2026-11-01) or date-time as UTC epoch ms; naive ones are in
    ``zone`` (the operator's governance.timezone), so 2026-11-01 is midnight there."""
    if isinstance(value, datetime):
        dt = value
    elif isinstance(value, date):
        dt = datetime(value.year, value.month, value.day)
    else:
        text = value.strip()
        if _MONTH.match(text):
            text += "-01"
        try:
            dt = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(
                f"{what} {value!r}: expected a time like 2026-11, 2026-11-01 or 2026-11-01T08:00"
            ) from None
    check_day(dt.date(), what, str(value))
    return int((dt if dt.tzinfo else dt.replace(tzinfo=zone)).timestamp() * 1000)
