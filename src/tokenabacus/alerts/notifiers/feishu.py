"""Feishu/Lark (飞书) custom bot, with signature verification (签名校验).

Documented scheme (open.feishu.cn/document/client-docs/bot-v3/add-custom-bot, "自定义机器人使用指南"):
timestamp = current time in SECONDS (within an hour of Feishu's clock); string_to_sign =
f"{timestamp}\\n{secret}"; sign = base64(HmacSHA256(key=string_to_sign, msg=empty)) - the key is the
string to sign and the message is empty, as Feishu's own samples do; "timestamp" (a string) and "sign" go
in the JSON body. We send an interactive card: a header title and one markdown element. The reply is
{"code": 0, "msg": "success"} (older deployments: "StatusCode": 0); 19021 is a bad signature,
9499 a malformed body, 11232 / 99991400 rate limits (HTTP 400 or 429).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from typing import Any

import aiohttp

from tokenabacus.config.channels import FeishuConfig

from .http import HttpNotifier, Request, json_body
from .message import Message, render_markdown, truncate_utf8

# Feishu rejects request bodies over 20 KB; leave room for the card around the markdown.
CONTENT_LIMIT_BYTES = 18_000
_HEADER_COLOUR = {"info": "blue", "warning": "orange", "critical": "red"}


def feishu_sign(secret: str, timestamp_s: int) -> str:
    """The documented signature: HMAC-SHA256 keyed by f"{timestamp}\\n{secret}" over an empty message."""
    key = f"{timestamp_s}\n{secret}".encode()
    return base64.b64encode(hmac.new(key, b"", hashlib.sha256).digest()).decode()


class FeishuNotifier(HttpNotifier):
    code_keys = ("code", "StatusCode")
    message_keys = ("msg", "StatusMessage")
    retry_codes = frozenset({11232, 99991400})

    def __init__(self, config: FeishuConfig, session: aiohttp.ClientSession | None = None):
        self._secret = config.secret.get_secret_value() if config.secret else None
        super().__init__(
            config.name,
            config.url,
            secrets=[self._secret] if self._secret else [],
            session=session,
            timeout_s=config.timeout_s,
            retry=config.retry_policy(),
        )

    def build(self, message: Message) -> Request:
        content = truncate_utf8(render_markdown(message, with_title=False), CONTENT_LIMIT_BYTES)
        payload: dict[str, Any] = {}
        if self._secret:
            timestamp = int(time.time())
            payload = {"timestamp": str(timestamp), "sign": feishu_sign(self._secret, timestamp)}
        payload["msg_type"] = "interactive"
        payload["card"] = {
            "header": {
                "title": {"tag": "plain_text", "content": message.title},
                "template": _HEADER_COLOUR[message.severity],
            },
            "elements": [{"tag": "markdown", "content": content}],
        }
        return Request(self._url, json_body(payload))
