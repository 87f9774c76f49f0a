"""Why admission said no, in domain terms. One mapping (``server/refusals.py``) turns each into
OpenAI's error JSON and status, so policies never build HTTP responses themselves."""

from __future__ import annotations


class Refused(Exception):
    """A policy refused the request. ``code`` becomes the record's ``error_code``."""

    code = "refused"

    def __init__(self, message: str, code: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        self.headers = headers or {}


class Forbidden(Refused):
    """The caller may not use this model, or not from this address."""

    code = "forbidden"

    def __init__(self, message: str, code: str | None = None, hide: bool = False) -> None:
        super().__init__(message, code)
        self.hide = hide  # answer as if the model did not exist (404)


class RateLimited(Refused):
    """Too many requests or tokens in the current minute."""

    code = "rate_limit_exceeded"


class QuotaExceeded(Refused):
    """A period's token or request quota would be exceeded."""

    code = "quota_exceeded"


class QueueTimeout(Refused):
    """The model stayed saturated for longer than the queue-wait limit."""

    code = "queue_timeout"


class CountersUnavailable(Refused):
    """The shared counters (Redis) are down and the policy is to refuse (``redis.on_error: closed``)."""

    code = "quota_backend_unavailable"
