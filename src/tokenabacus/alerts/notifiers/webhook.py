"""Generic JSON webhook: the message's structured fields, for machines (ticketing, on-call, chat-ops).

An alert carries "idempotency_key" (also the Idempotency-Key header), the same on every attempt of
one alert to this channel: a receiver that saw it already drops the repeat.

With a secret, the raw body is signed like GitHub's webhooks: header
`X-Tokenabacus-Signature: sha256=<hex HMAC-SHA256(key=secret, msg=body)>`; the receiver recomputes it
over the exact bytes it received.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import aiohttp

from tokenabacus.config.channels import WebhookConfig

from .http import HttpNotifier, Request, json_body
from .message import Message, render_text

SIGNATURE_HEADER = "X-Tokenabacus-Signature"


def webhook_signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def webhook_payload(message: Message, channel: str) -> dict[str, Any]:
    return {
        "source": "tokenabacus",
        "channel": channel,
        "title": message.title,
        "message": "\n".join(message.lines),
        "text": render_text(message),
        "rule": message.rule,
        "scope": message.scope,
        "figure": message.figure,
        "baseline": message.baseline,
        "threshold": message.threshold,
        "unit": message.unit,
        "severity": message.severity,
        "link": message.link,
        "fired_at": message.fired_at_iso(),
        "idempotency_key": message.idempotency_key,
        "labels": dict(message.labels),
        "attachments": [
            {"filename": a.filename, "mime_type": a.mime_type, "size": len(a.content)} for a in message.attachments
        ],
    }


class WebhookNotifier(HttpNotifier):
    def __init__(self, config: WebhookConfig, session: aiohttp.ClientSession | None = None):
        self._secret = config.secret.get_secret_value() if config.secret else None
        self._headers = dict(config.headers)
        super().__init__(
            config.name,
            config.url,
            # Header values are often credentials (Authorization: Bearer ...): keep them out of errors too.
            secrets=[*([self._secret] if self._secret else []), *self._headers.values()],
            session=session,
            timeout_s=config.timeout_s,
            retry=config.retry_policy(),
        )

    def build(self, message: Message) -> Request:
        body = json_body(webhook_payload(message, self._name))
        headers = dict(self._headers)
        if self._secret:
            headers[SIGNATURE_HEADER] = webhook_signature(self._secret, body)
        return Request(self._url, body, headers)
