"""Slack incoming webhook.

Documented scheme (Slack, "Sending messages using incoming webhooks"): POST {"text": ...} (mrkdwn) to the
hooks.slack.com URL. Success is HTTP 200 with the body "ok"; errors are HTTP statuses with a short reason as the
body (api.slack.com/changelog/2016-05-17-changes-to-errors-for-incoming-webhooks: 400 invalid_payload,
403 action_prohibited, 404 channel_not_found, 410 channel_is_archived, 500 rollup_error).
"""

from __future__ import annotations

import aiohttp

from tokenabacus.config.channels import SlackConfig

from .http import HttpNotifier, Request, json_body
from .message import Message, render_mrkdwn

# Slack truncates text beyond 40,000 characters; stay below so the cut is ours and visible.
TEXT_LIMIT_CHARS = 39_000


class SlackNotifier(HttpNotifier):
    def __init__(self, config: SlackConfig, session: aiohttp.ClientSession | None = None):
        super().__init__(
            config.name, config.url, session=session, timeout_s=config.timeout_s, retry=config.retry_policy()
        )

    def build(self, message: Message) -> Request:
        text = render_mrkdwn(message)
        if len(text) > TEXT_LIMIT_CHARS:
            text = text[: TEXT_LIMIT_CHARS - 1] + "…"
        return Request(self._url, json_body({"text": text}))
