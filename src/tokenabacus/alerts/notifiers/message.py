"""The one message every notifier sends, and its renderings: markdown, Slack mrkdwn, plain text.

The caller writes the title and body lines in the reader's language; the structured fields (rule, scope,
figures, link) stay language-neutral data for the generic webhook. Rendered for people (``fields``), their
labels are in the message's ``language`` and the time is local to its ``zone``: a Chinese message is
Chinese to its last line, with Beijing times for a Beijing reader.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from typing import Literal

Severity = Literal["info", "warning", "critical"]

# The fields' labels and severities as a reader of each language sees them.
LABELS = {
    "zh": {
        "rule": "规则",
        "report": "报告",
        "scope": "范围",
        "figure": "数值",
        "baseline": "基线",
        "threshold": "阈值",
        "severity": "级别",
        "fired_at": "时间",
    },
}
SEVERITIES = {"zh": {"info": "提示", "warning": "警告", "critical": "严重"}}
REPORT = "report:"  # a scheduled report's rule: report:<schedule name>


@dataclass(frozen=True, slots=True)
class Attachment:
    """A file sent with the message; only email carries attachments (scheduled CSV/XLSX reports)."""

    filename: str
    content: bytes
    mime_type: str = "application/octet-stream"

    def __post_init__(self) -> None:
        if not self.filename or "/" in self.filename or "\\" in self.filename:
            raise ValueError("attachment filename must be a bare file name")
        if self.mime_type.count("/") != 1:
            raise ValueError("attachment mime_type must look like 'type/subtype'")


@dataclass(frozen=True, slots=True)
class Message:
    """An alert (or a report notice): a title, body lines, and optional structured fields."""

    title: str
    lines: tuple[str, ...] = ()
    rule: str | None = None
    scope: str | None = None
    figure: float | None = None
    baseline: float | None = None
    threshold: float | None = None
    unit: str | None = None
    severity: Severity = "warning"
    link: str | None = None
    fired_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    labels: Mapping[str, str] = field(default_factory=dict)
    attachments: tuple[Attachment, ...] = ()
    # The same on every attempt of one alert to one channel, so a receiver can drop repeats (a retry
    # after a timeout whose first attempt did arrive): the Idempotency-Key header, the webhook's
    # "idempotency_key" field, the email's Message-ID.
    idempotency_key: str | None = None
    # How the fields read: their labels' language ("zh" or "en") and the zone of the time shown
    # (None: UTC in ISO 8601, as the data carries it).
    language: str = "en"
    zone: tzinfo | None = None

    def __post_init__(self) -> None:
        if self.fired_at.tzinfo is None:
            # A naive time would be read in the gateway's zone by some readers and UTC by others.
            raise ValueError("fired_at must be timezone-aware")
        if isinstance(self.lines, str):
            raise TypeError("lines must be a sequence of strings, not one string")

    def fired_at_iso(self) -> str:
        """fired_at in UTC, ISO 8601 with a Z suffix, to the second."""
        return self.fired_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    def fired_at_local(self) -> str:
        """fired_at as a reader of the message reads it: in its zone, to the second, with the
        zone's name (UTC in ISO 8601 when it has none)."""
        if self.zone is None:
            return self.fired_at_iso()
        local = self.fired_at.astimezone(self.zone)
        return f"{local:%Y-%m-%d %H:%M:%S} {getattr(self.zone, 'key', None) or local.tzname() or ''}".rstrip()

    def fields(self) -> list[tuple[str, str]]:
        """The structured fields that are set, as (label, formatted value), in a fixed order, in
        the message's language."""
        words = LABELS.get(self.language, {})
        unit = f" {self.unit}" if self.unit else ""
        out: list[tuple[str, str]] = []
        if self.rule and self.rule.startswith(REPORT):
            out.append(("report", self.rule.removeprefix(REPORT)))
        elif self.rule:
            out.append(("rule", self.rule))
        if self.scope:
            out.append(("scope", self.scope))
        for label, value in (("figure", self.figure), ("baseline", self.baseline), ("threshold", self.threshold)):
            if value is not None:
                out.append((label, format_number(value) + unit))
        out = [(words.get(k, k), v) for k, v in out]
        out.extend((k, v) for k, v in self.labels.items())
        if self.rule or self.scope or self.figure is not None:
            # Only alerts get a severity and time line; a plain notice stays short.
            severity = SEVERITIES.get(self.language, {}).get(self.severity, self.severity)
            out.append((words.get("severity", "severity"), severity))
            out.append((words.get("fired_at", "fired_at"), self.fired_at_local()))
        return out


def format_number(value: float) -> str:
    """Thousands separators, at most two decimals, no trailing zeros: 1,234,567 / 0.35 / 12.5."""
    if isinstance(value, int) or float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.2f}".rstrip("0").rstrip(".")


def render_markdown(message: Message, *, with_title: bool = True, line_break: str = "\n") -> str:
    """Markdown for WeCom, DingTalk and Feishu: the subset all three render (headings, bold, lists, links).

    line_break joins the body lines: DingTalk's markdown runs single newlines together, so it passes "\n\n".
    """
    parts: list[str] = []
    if with_title:
        parts.append(f"### {message.title}")
    if message.lines:
        parts.append(line_break.join(message.lines))
    fields = message.fields()
    if fields:
        parts.append("\n".join(f"- **{label}**: {value}" for label, value in fields))
    if message.link:
        parts.append(f"[{message.link}]({message.link})")
    return "\n\n".join(parts)


def _slack_escape(text: str) -> str:
    # Slack reads &, < and > as control characters (links, mentions); everything else is literal.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def render_mrkdwn(message: Message) -> str:
    """Slack mrkdwn: *bold* title, escaped body, bullet fields, <url|label> link."""
    parts = [f"*{_slack_escape(message.title)}*"]
    if message.lines:
        parts.append("\n".join(_slack_escape(line) for line in message.lines))
    fields = message.fields()
    if fields:
        parts.append("\n".join(f"• *{label}*: {_slack_escape(value)}" for label, value in fields))
    if message.link:
        parts.append(f"<{message.link}|{_slack_escape(message.link)}>")
    return "\n".join(parts)


def render_text(message: Message) -> str:
    """Plain text for email bodies and the generic webhook's "text" field."""
    parts: list[str] = [message.title]
    if message.lines:
        parts.append("\n".join(message.lines))
    fields = message.fields()
    if fields:
        parts.append("\n".join(f"{label}: {value}" for label, value in fields))
    if message.link:
        parts.append(message.link)
    return "\n\n".join(parts) + "\n"


def truncate_utf8(text: str, limit: int, marker: str = "…") -> str:
    """Cut text so its UTF-8 encoding fits in limit bytes, never inside a character, marking the cut."""
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text
    room = limit - len(marker.encode("utf-8"))
    if room < 0:
        raise ValueError("limit is smaller than the truncation marker")
    # errors="ignore" drops only the trailing partial sequence the byte cut may have left.
    return data[:room].decode("utf-8", errors="ignore") + marker
