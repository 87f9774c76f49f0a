"""The HTTP half every webhook notifier shares: POST, classify the reply, hand retries to `deliver`."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import aiohttp
import orjson
from yarl import URL

from .base import NotifyError, RetryPolicy, deliver, redact_url, scrub, url_secrets
from .message import Message

_REPLY_PREVIEW = 300  # characters of a failed reply kept in the error
IDEMPOTENCY_HEADER = "Idempotency-Key"


class Request:
    """One prepared POST; built afresh for every attempt because signatures carry the current time."""

    __slots__ = ("url", "body", "headers")

    def __init__(self, url: str, body: bytes, headers: dict[str, str] | None = None):
        self.url = url
        self.body = body
        self.headers = {"Content-Type": "application/json; charset=utf-8", **(headers or {})}


def json_body(payload: dict[str, Any]) -> bytes:
    # UTF-8 as is: \u-escaping Chinese would triple its size against the platforms' byte limits.
    return orjson.dumps(payload)


def _retry_after(headers: Any) -> float | None:
    value = headers.get("Retry-After") if headers is not None else None
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None  # an HTTP date: fall back to our own backoff


class HttpNotifier:
    """Base for the webhook notifiers. Subclasses build the request and say how the platform reports errors.

    `code_keys`/`message_keys` name the JSON fields of the platform's reply (WeCom/DingTalk `errcode`,
    Feishu `code`); with none, any 2xx is success. `retry_codes` are platform codes meaning "try later".
    """

    code_keys: tuple[str, ...] = ()
    message_keys: tuple[str, ...] = ()
    retry_codes: frozenset[int] = frozenset()

    def __init__(
        self,
        name: str,
        url: str,
        *,
        secrets: Iterable[str] = (),
        session: aiohttp.ClientSession | None = None,
        timeout_s: float = 10.0,
        retry: RetryPolicy | None = None,
    ):
        self._name = name
        # Normalised once (non-ASCII percent-encoded), so requests can go out as already-encoded URLs.
        self._url = str(URL(url))
        self._secrets = [*url_secrets(url), *url_secrets(self._url), *secrets]
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._retry = retry or RetryPolicy()

    @property
    def name(self) -> str:
        return self._name

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self._name!r}, url={redact_url(self._url)!r})"

    def build(self, message: Message) -> Request:
        raise NotImplementedError

    async def send(self, message: Message) -> None:
        if self._session is not None:
            await self._deliver(self._session, message)
            return
        # No shared session given: one for this message only, so nothing is left open between alerts.
        async with aiohttp.ClientSession() as session:
            await self._deliver(session, message)

    async def attempt(self, message: Message) -> None:
        if self._session is not None:
            await self._attempt(self._session, message)
            return
        async with aiohttp.ClientSession() as session:
            await self._attempt(session, message)

    async def _deliver(self, session: aiohttp.ClientSession, message: Message) -> None:
        await deliver(self._name, lambda: self._attempt(session, message), self._retry)

    def _fail(self, reason: str, *, retryable: bool = False, retry_after: float | None = None) -> NotifyError:
        return NotifyError(self._name, scrub(reason, self._secrets), retryable=retryable, retry_after=retry_after)

    async def _attempt(self, session: aiohttp.ClientSession, message: Message) -> None:
        request = self.build(message)
        if message.idempotency_key:
            request.headers[IDEMPOTENCY_HEADER] = message.idempotency_key
        try:
            # encoded=True: the URL is already percent-encoded (DingTalk's sign); re-quoting would break it.
            async with session.post(
                URL(request.url, encoded=True),
                data=request.body,
                headers=request.headers,
                timeout=self._timeout,
                allow_redirects=False,
            ) as response:
                text = await response.text(errors="replace")
                status = response.status
                headers = response.headers
        except TimeoutError:
            raise self._fail(f"no reply within {self._timeout.total:g}s", retryable=True) from None
        except aiohttp.ClientError as exc:
            raise self._fail(f"network error: {type(exc).__name__}: {exc}", retryable=True) from None
        self.check(status, text, headers)

    def check(self, status: int, text: str, headers: Any = None) -> None:
        """Raise NotifyError unless the reply means delivered."""
        code, platform_message = self._platform_code(text)
        ok_status = 200 <= status < 300
        if ok_status and not self.code_keys:
            return
        if ok_status and code == 0:
            return
        retry_after = _retry_after(headers) if status == 429 else None
        # 429 and 5xx are the platform's "later"; so are its rate-limit codes, whatever the HTTP status.
        retryable = status == 429 or status >= 500 or (code is not None and code in self.retry_codes)
        if code not in (None, 0):
            reason = f"HTTP {status}, code {code}: {platform_message}"
        elif ok_status:
            reason = f"HTTP {status} with an unexpected reply: {text[:_REPLY_PREVIEW]!r}"
        elif 300 <= status < 400:
            location = headers.get("Location", "") if headers is not None else ""
            reason = f"HTTP {status} redirect to {redact_url(location)} (webhooks are not followed)"
        else:
            reason = f"HTTP {status}: {(platform_message or text)[:_REPLY_PREVIEW]}"
        raise self._fail(reason, retryable=retryable, retry_after=retry_after)

    def _platform_code(self, text: str) -> tuple[int | None, str]:
        if not self.code_keys:
            return None, ""
        try:
            reply = orjson.loads(text)
        except orjson.JSONDecodeError:
            return None, ""
        if not isinstance(reply, dict):
            return None, ""
        code = next((reply[k] for k in self.code_keys if isinstance(reply.get(k), int)), None)
        message = next((str(reply[k]) for k in self.message_keys if reply.get(k) is not None), "")
        return code, message[:_REPLY_PREVIEW]
