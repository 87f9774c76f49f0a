"""DingTalk (钉钉) custom robot, with the signed mode (加签).

Documented scheme (open.dingtalk.com/document/group/custom-robot-access, 安全设置 "加签"):
timestamp = current time in milliseconds (within an hour of DingTalk's clock); string_to_sign =
f"{timestamp}\\n{secret}"; sign = urlEncode(base64(HmacSHA256(key=secret, msg=string_to_sign))), UTF-8;
both appended to the webhook URL as &timestamp=...&sign=... . Message type "markdown"
(same page, 消息类型 markdown): {"msgtype": "markdown",
"markdown": {"title": <shown in the chat list>, "text": <the markdown>}}. The reply is
{"errcode": 0, "errmsg": "ok"}; 310000 is a bad signature/keyword/IP, 130101 "send too fast"
(20 messages a minute per robot).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from urllib.parse import quote_plus

import aiohttp

from tokenabacus.config.channels import DingTalkConfig

from .http import HttpNotifier, Request, json_body
from .message import Message, render_markdown


def dingtalk_sign(secret: str, timestamp_ms: int) -> str:
    """The documented signature, already URL-encoded for the query string."""
    string_to_sign = f"{timestamp_ms}\n{secret}".encode()
    digest = hmac.new(secret.encode(), string_to_sign, hashlib.sha256).digest()
    return quote_plus(base64.b64encode(digest))


class DingTalkNotifier(HttpNotifier):
    code_keys = ("errcode",)
    message_keys = ("errmsg",)
    # -1: system busy; 130101: "send too fast, exceed 20 times per minute".
    retry_codes = frozenset({-1, 130101})

    def __init__(self, config: DingTalkConfig, session: aiohttp.ClientSession | None = None):
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
        url = self._url
        if self._secret:
            timestamp = int(time.time() * 1000)
            sep = "&" if "?" in url else "?"
            url = f"{url}{sep}timestamp={timestamp}&sign={dingtalk_sign(self._secret, timestamp)}"
        payload = {
            "msgtype": "markdown",
            "markdown": {"title": message.title, "text": render_markdown(message, line_break="\n\n")},
        }
        return Request(url, json_body(payload))
