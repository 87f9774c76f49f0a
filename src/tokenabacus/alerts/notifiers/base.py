"""What every notifier shares: the error type, the protocol, the one retry loop, and secret redaction."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Iterable
from typing import Protocol
from urllib.parse import parse_qsl, quote, urlsplit, urlunsplit

from tokenabacus.config.channels import RetryPolicy

from .message import Message

log = logging.getLogger(__name__)

REDACTED = "***"

# Query parameters that carry credentials in webhook URLs (WeCom `key`, DingTalk `access_token`, signatures).
_SECRET_PARAMS = frozenset(
    {"key", "access_token", "token", "secret", "sign", "signature", "sig", "password", "passwd", "api_key", "apikey"}
)
# Path segments after these carry the credential (Slack /services/T/B/X, Feishu /bot/v2/hook/<id>).
_TOKEN_MARKERS = frozenset({"hook", "hooks", "services", "webhook", "webhooks"})
_TOKENISH = re.compile(r"[A-Za-z0-9_\-]{24,}")
_URL_IN_TEXT = re.compile(r"https?://[^\s'\"<>]+")


class NotifyError(Exception):
    """A message was not delivered to a channel. The text never holds a secret (keys, tokens, passwords)."""

    def __init__(self, channel: str, reason: str, *, retryable: bool = False, retry_after: float | None = None):
        super().__init__(f"{channel}: {reason}")
        self.channel = channel
        self.reason = reason
        self.retryable = retryable
        self.retry_after = retry_after


class Notifier(Protocol):
    """Sends one message to one channel; raises NotifyError when it could not."""

    @property
    def name(self) -> str: ...

    async def send(self, message: Message) -> None:
        """Deliver, retrying within the channel's retry policy."""
        ...

    async def attempt(self, message: Message) -> None:
        """One try, no retry: the alert outbox schedules retries itself (durably)."""
        ...


async def deliver(
    channel: str,
    attempt: Callable[[], Awaitable[None]],
    policy: RetryPolicy,
    *,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
) -> None:
    """Run attempt until it succeeds, retrying only NotifyErrors marked retryable, within policy.

    The single retry loop of the package: notifiers classify a failure (network, 5xx, 429, rate-limit
    errcode = retryable; 4xx, bad-config errcode = not), this decides whether and when to try again.
    """
    for n in range(1, policy.attempts + 1):
        try:
            await attempt()
        except NotifyError as exc:
            if not exc.retryable or n == policy.attempts:
                if n > 1:
                    raise NotifyError(
                        exc.channel, f"{exc.reason} (after {n} attempts)", retryable=exc.retryable
                    ) from exc
                raise
            wait = policy.delay(n, exc.retry_after)
            log.warning(
                "notifier %s: attempt %d/%d failed: %s; retrying in %.2fs",
                channel,
                n,
                policy.attempts,
                exc.reason,
                wait,
            )
            await sleep(wait)
        else:
            if n > 1:
                log.info("notifier %s: delivered on attempt %d", channel, n)
            return


def _secret_segment(segment: str, after_marker: bool) -> bool:
    if not segment:
        return False
    if after_marker and (len(segment) >= 8 or any(c.isdigit() for c in segment)):
        return True
    return bool(_TOKENISH.fullmatch(segment)) and any(c.isdigit() for c in segment)


def _split_path(path: str) -> list[tuple[str, bool]]:
    """Path segments, each with whether it looks like a credential."""
    out: list[tuple[str, bool]] = []
    after = False
    for segment in path.split("/"):
        secret = _secret_segment(segment, after)
        out.append((segment, secret))
        if segment.lower() in _TOKEN_MARKERS:
            after = True
    return out


def redact_url(url: str) -> str:
    """The URL with its credentials replaced by *** (query keys/tokens, hook path tokens, user:password)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "<invalid url>"
    netloc = host if ":" not in host else f"[{host}]"
    if port is not None:
        netloc += f":{port}"
    if parts.username is not None or parts.password is not None:
        netloc = f"{REDACTED}@{netloc}"
    path = "/".join(REDACTED if secret else segment for segment, secret in _split_path(parts.path))
    query = "&".join(
        f"{quote(k, safe='')}={REDACTED if k.lower() in _SECRET_PARAMS else quote(v, safe='')}"
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
    )
    return urlunsplit((parts.scheme, netloc, path, query, ""))


def url_secrets(url: str) -> list[str]:
    """The credential-looking pieces of a URL, for scrubbing them out of any text."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return [url]
    found = [v for k, v in parse_qsl(parts.query, keep_blank_values=True) if k.lower() in _SECRET_PARAMS]
    found += [segment for segment, secret in _split_path(parts.path) if secret]
    if parts.password:
        found.append(parts.password)
    return [url, *found]


def scrub(text: str, secrets: Iterable[str]) -> str:
    """Text safe to log or raise: URLs redacted, then every known secret value replaced by ***."""
    text = _URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), text)
    # Longest first, so a secret that contains another is replaced whole.
    for secret in sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text
