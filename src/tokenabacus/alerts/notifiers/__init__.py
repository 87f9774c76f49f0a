"""Notifiers: deliver one Message to one configured channel (WeCom, DingTalk, Feishu, Slack, webhook, email).

Build them from configuration with `build_notifier`; every notifier has `async send(message)` and raises
`NotifyError` when the message was not delivered, after the retries its channel allows, and `async
attempt(message)`, one try, for the alert outbox that keeps its retries in the ledger.
"""

from __future__ import annotations

from tokenabacus.config.channels import (
    ChannelConfig,
    DingTalkConfig,
    EmailConfig,
    FeishuConfig,
    SlackConfig,
    WebhookConfig,
    WeComConfig,
    parse_channel,
)

from .base import Notifier, NotifyError, RetryPolicy, deliver, redact_url
from .dingtalk import DingTalkNotifier, dingtalk_sign
from .feishu import FeishuNotifier, feishu_sign
from .message import Attachment, Message, Severity, render_markdown, render_mrkdwn, render_text, truncate_utf8
from .registry import NOTIFIER_TYPES, build_notifier
from .slack import SlackNotifier
from .smtp import EmailNotifier
from .webhook import SIGNATURE_HEADER, WebhookNotifier, webhook_signature
from .wecom import WeComNotifier

__all__ = [
    "NOTIFIER_TYPES",
    "SIGNATURE_HEADER",
    "Attachment",
    "ChannelConfig",
    "DingTalkConfig",
    "DingTalkNotifier",
    "EmailConfig",
    "EmailNotifier",
    "FeishuConfig",
    "FeishuNotifier",
    "Message",
    "Notifier",
    "NotifyError",
    "RetryPolicy",
    "Severity",
    "SlackConfig",
    "SlackNotifier",
    "WeComConfig",
    "WeComNotifier",
    "WebhookConfig",
    "WebhookNotifier",
    "build_notifier",
    "deliver",
    "dingtalk_sign",
    "feishu_sign",
    "parse_channel",
    "redact_url",
    "render_markdown",
    "render_mrkdwn",
    "render_text",
    "truncate_utf8",
    "webhook_signature",
]
