"""Alert channels as the config declares them (``alerts.channels``): one pydantic model per channel
type, a union discriminated on `type`, and the retry policy a channel asks for.

The gateway's config can embed `alerts: channels: [ChannelConfig, ...]`. Secrets are SecretStr and URLs are
left out of repr, and validation errors never echo the input, so a bad config never prints a webhook key
(a model embedding these must set hide_input_in_errors=True itself: pydantic takes the outermost setting).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import parseaddr
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, AliasChoices, BaseModel, ConfigDict, Field, SecretStr, TypeAdapter, model_validator


def _http_url(value: str) -> str:
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        raise ValueError("must be a valid http(s) URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL with a host")
    return value


def _address(value: str) -> str:
    _, addr = parseaddr(value)
    if "@" not in addr or addr.startswith("@") or addr.endswith("@") or any(c in value for c in "\r\n"):
        raise ValueError("must be an email address")
    return value


HttpUrl = Annotated[str, AfterValidator(_http_url)]
EmailAddress = Annotated[str, AfterValidator(_address)]
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff: attempt n waits base_delay_s * 2**(n-1) before it (0.5 s, 1 s, 2 s, ...)."""

    attempts: int = 3
    base_delay_s: float = 0.5
    max_delay_s: float = 30.0

    def delay(self, failed_attempt: int, retry_after: float | None = None) -> float:
        wait = self.base_delay_s * 2 ** (failed_attempt - 1)
        if retry_after is not None:
            # The platform said when it will accept again (HTTP 429 Retry-After); waiting less is wasted.
            wait = max(wait, retry_after)
        return min(wait, self.max_delay_s)


class _Channel(BaseModel):
    # hide_input_in_errors: a rejected value may be a webhook URL with its key in it.
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    name: str = Field(min_length=1, max_length=64)
    timeout_s: float = Field(default=10.0, gt=0, le=300)
    retry_attempts: int = Field(default=3, ge=1, le=10)
    retry_base_delay_s: float = Field(default=0.5, ge=0, le=60)
    # Alert deliveries waiting for this channel before new alerts are dropped for it (None: the
    # alerts.delivery_queue default).
    delivery_queue: int | None = Field(default=None, ge=1, le=100_000)

    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(attempts=self.retry_attempts, base_delay_s=self.retry_base_delay_s)


class _Signed(_Channel):
    """A channel whose `secret` turns signing on. An empty one is refused rather than read as "no
    secret": a blank left by a template or an unset variable would otherwise turn signing off silently."""

    secret: SecretStr | None = None

    @model_validator(mode="after")
    def _secret_not_empty(self) -> _Signed:
        if self.secret is not None and not self.secret.get_secret_value().strip():
            raise ValueError(
                f"channel {self.name!r}: secret is empty, which would turn signing off; "
                "give the secret, or remove the line to send unsigned"
            )
        return self


class WeComConfig(_Channel):
    """WeCom (企业微信) group robot: https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=..."""

    type: Literal["wecom"] = "wecom"
    url: HttpUrl = Field(repr=False)


class DingTalkConfig(_Signed):
    """DingTalk (钉钉) custom robot; `secret` (SEC...) turns on the signed mode (加签)."""

    type: Literal["dingtalk"] = "dingtalk"
    url: HttpUrl = Field(repr=False)


class FeishuConfig(_Signed):
    """Feishu/Lark (飞书) custom bot; `secret` turns on signature verification (签名校验)."""

    type: Literal["feishu"] = "feishu"
    url: HttpUrl = Field(repr=False)


class SlackConfig(_Channel):
    """Slack incoming webhook: https://hooks.slack.com/services/..."""

    type: Literal["slack"] = "slack"
    url: HttpUrl = Field(repr=False)


class WebhookConfig(_Signed):
    """Any HTTP endpoint: the alert's fields as JSON, optional headers, optional HMAC-SHA256 signature."""

    type: Literal["webhook"] = "webhook"
    url: HttpUrl = Field(repr=False)
    headers: dict[str, str] = Field(default_factory=dict, repr=False)

    @model_validator(mode="after")
    def _check_headers(self) -> WebhookConfig:
        for key, value in self.headers.items():
            if not _HEADER_NAME.fullmatch(key):
                raise ValueError(f"header name {key!r} is not a valid HTTP token")
            if "\r" in value or "\n" in value:
                raise ValueError(f"header {key!r} has a line break in its value")
        return self


class EmailConfig(_Channel):
    """SMTP: security is "starttls" (port 587), "ssl" (465) or "none" (25, a trusted local relay only)."""

    type: Literal["email"] = "email"
    host: str = Field(min_length=1)
    port: int | None = Field(default=None, ge=1, le=65535)
    security: Literal["starttls", "ssl", "none"] = "starttls"
    username: str | None = None
    password: SecretStr | None = None
    from_addr: EmailAddress = Field(validation_alias=AliasChoices("from", "from_addr"))
    to: list[EmailAddress] = Field(min_length=1)
    subject_prefix: str = ""

    @model_validator(mode="after")
    def _check_login(self) -> EmailConfig:
        if (self.username is None) != (self.password is None):
            raise ValueError("username and password must be given together")
        if any(c in self.subject_prefix for c in "\r\n"):
            raise ValueError("subject_prefix must be one line")
        return self

    def effective_port(self) -> int:
        if self.port is not None:
            return self.port
        return {"ssl": 465, "starttls": 587, "none": 25}[self.security]


ChannelConfig = Annotated[
    WeComConfig | DingTalkConfig | FeishuConfig | SlackConfig | WebhookConfig | EmailConfig,
    Field(discriminator="type"),
]
# The outermost validator's config decides whether errors echo input: a model that embeds ChannelConfig
# (the gateway's `alerts.channels`) must set hide_input_in_errors=True too, or a bad URL prints its key.
_CHANNEL: TypeAdapter[ChannelConfig] = TypeAdapter(
    ChannelConfig, config=ConfigDict(hide_input_in_errors=True, title="alert channel")
)


def parse_channel(data: Mapping[str, Any]) -> ChannelConfig:
    """Validate one channel's settings (a dict from YAML); raises pydantic.ValidationError naming the field."""
    return _CHANNEL.validate_python(dict(data))
