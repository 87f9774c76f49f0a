"""Build a notifier from a channel's configuration, choosing the class by the channel's `type`."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

import aiohttp

from tokenabacus.config.channels import ChannelConfig, parse_channel

from .base import Notifier
from .dingtalk import DingTalkNotifier
from .feishu import FeishuNotifier
from .slack import SlackNotifier
from .smtp import EmailNotifier
from .webhook import WebhookNotifier
from .wecom import WeComNotifier

NOTIFIER_TYPES: Mapping[str, Callable[[Any, aiohttp.ClientSession | None], Notifier]] = MappingProxyType(
    {
        "wecom": WeComNotifier,
        "dingtalk": DingTalkNotifier,
        "feishu": FeishuNotifier,
        "slack": SlackNotifier,
        "webhook": WebhookNotifier,
        "email": EmailNotifier,
    }
)


def build_notifier(
    config: ChannelConfig | Mapping[str, Any], *, session: aiohttp.ClientSession | None = None
) -> Notifier:
    """A notifier for one channel. A dict is validated first (pydantic.ValidationError on bad settings).

    `session`: an aiohttp session to share between notifiers (the gateway's); without one each send opens
    and closes its own.
    """
    channel = parse_channel(config) if isinstance(config, Mapping) else config
    return NOTIFIER_TYPES[channel.type](channel, session)
