"""Admission's refusals as OpenAI's error JSON: the one place a domain refusal (governance/errors.py)
becomes an HTTP status and error body. It sits in the entry layer because it needs both the
protocol's shapes (api/) and the features' errors (governance/), which must not import each other."""

from __future__ import annotations

from tokenabacus.api.errors import APIError, model_not_found
from tokenabacus.governance.errors import Forbidden, QueueTimeout, QuotaExceeded, RateLimited, Refused


def from_refusal(e: Refused, model: str) -> APIError:
    """The one mapping from an admission policy's refusal to OpenAI's error JSON."""
    if isinstance(e, Forbidden):
        if e.hide:
            return model_not_found(model)
        return APIError(403, e.message, "permission_error", None, e.code)
    if isinstance(e, QuotaExceeded):
        return APIError(429, e.message, "insufficient_quota", None, e.code, e.headers)
    if isinstance(e, RateLimited):
        return APIError(429, e.message, "rate_limit_exceeded", None, e.code, e.headers)
    if isinstance(e, QueueTimeout):
        return APIError(503, e.message, "server_error", None, e.code, {"retry-after": "1"})
    return APIError(503, e.message, "server_error", None, e.code)
