"""WeCom (企业微信) group robot.

Documented scheme (developer.work.weixin.qq.com, "群机器人配置说明", message type markdown): POST
{"msgtype": "markdown", "markdown": {"content": ...}} to the webhook URL (…/cgi-bin/webhook/send?key=KEY);
content is UTF-8 and at most 4096 bytes. The reply is HTTP 200 with {"errcode": 0, "errmsg": "ok"};
a non-zero errcode is a failure (93000 invalid webhook URL, 45009 rate limit: 20 messages a minute).
"""

from __future__ import annotations

import aiohttp

from tokenabacus.config.channels import WeComConfig

from .http import HttpNotifier, Request, json_body
from .message import Message, render_markdown, truncate_utf8

MARKDOWN_LIMIT_BYTES = 4096


class WeComNotifier(HttpNotifier):
    code_keys = ("errcode",)
    message_keys = ("errmsg",)
    # -1: system busy; 45009: API frequency limit. Everything else (bad key, bad body) will not heal by waiting.
    retry_codes = frozenset({-1, 45009})

    def __init__(self, config: WeComConfig, session: aiohttp.ClientSession | None = None):
        super().__init__(
            config.name, config.url, session=session, timeout_s=config.timeout_s, retry=config.retry_policy()
        )

    def build(self, message: Message) -> Request:
        content = truncate_utf8(render_markdown(message), MARKDOWN_LIMIT_BYTES)
        return Request(self._url, json_body({"msgtype": "markdown", "markdown": {"content": content}}))
