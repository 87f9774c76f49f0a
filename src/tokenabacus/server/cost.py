"""The cost of a request, told to its caller: read from the record the enrich step priced, so what a
caller is told is what the ledger holds (never 0 for an unpriced model: nothing is said).

A non-streamed response carries it as headers (the body is complete before they are sent). A stream's
headers leave before the cost is known, so it rides in the final usage chunk, beside ``usage``, only
when the caller asks (``x-tokenabacus-include-cost: true`` or ``stream_options.include_cost``): OpenAI's
chunk schema stays as it is by default.
"""

from __future__ import annotations

from tokenabacus.api.errors import bad_request
from tokenabacus.ledger.record import UsageRecord
from tokenabacus.money import MICROS

COST_HEADER = "x-tokenabacus-cost"
PRICE_VERSION_HEADER = "x-tokenabacus-price-version"
INCLUDE_COST_HEADER = b"x-tokenabacus-include-cost"
FIELD = "tokenabacus"  # the usage chunk's extra field


def amount(micros: int) -> str:
    """Micros as the exact amount with 6 decimals: 4230 -> ``0.004230``."""
    sign = "-" if micros < 0 else ""
    units, frac = divmod(abs(micros), MICROS)
    return f"{sign}{units}.{frac:06d}"


def cost_headers(rec: UsageRecord) -> dict[str, str] | None:
    """The headers of a priced response (None when the record carries no cost)."""
    if rec.cost_micros is None or rec.currency is None or rec.price_version is None:
        return None
    return {COST_HEADER: f"{amount(rec.cost_micros)} {rec.currency}", PRICE_VERSION_HEADER: rec.price_version}


def cost_field(rec: UsageRecord) -> dict[str, str] | None:
    """The usage chunk's ``tokenabacus`` field (None when the record carries no cost)."""
    if rec.cost_micros is None or rec.currency is None or rec.price_version is None:
        return None
    return {"cost": amount(rec.cost_micros), "currency": rec.currency, "price_version": rec.price_version}


def asks_cost(header_value: str | None, body: dict) -> bool:
    """Whether a (validated) request asks for its cost in the stream; ``stream_options.include_cost``
    is taken out of the body here, so an upstream never sees a field of ours."""
    asked = header_value is not None and header_value.strip().lower() in ("true", "1", "yes")
    so = body.get("stream_options")
    if isinstance(so, dict) and "include_cost" in so:
        ic = so["include_cost"]
        if not isinstance(ic, bool):
            raise bad_request(
                "'stream_options.include_cost' must be a boolean.", "stream_options.include_cost", "invalid_type"
            )
        rest = {k: v for k, v in so.items() if k != "include_cost"}
        if rest:
            body["stream_options"] = rest
        else:
            del body["stream_options"]
        asked = asked or ic
    return asked
