"""Alert notifiers against real local servers: an aiohttp receiver that answers like each platform, and an
aiosmtpd SMTP server. Signatures are recomputed here from each platform's documented formula."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import email
import email.policy
import hashlib
import hmac
import json
import logging
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote_plus

import aiohttp
import pytest
from aiohttp import web
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from pydantic import ValidationError

from tokenabacus.alerts.notifiers import (
    NOTIFIER_TYPES,
    SIGNATURE_HEADER,
    Attachment,
    DingTalkNotifier,
    EmailConfig,
    EmailNotifier,
    FeishuNotifier,
    Message,
    NotifyError,
    RetryPolicy,
    SlackNotifier,
    WebhookNotifier,
    WeComConfig,
    WeComNotifier,
    build_notifier,
    deliver,
    dingtalk_sign,
    feishu_sign,
    parse_channel,
    redact_url,
    render_markdown,
    render_mrkdwn,
    truncate_utf8,
)
from tokenabacus.alerts.notifiers.base import scrub

FAST = {"retry_base_delay_s": 0.01}
WECOM_OK = '{"errcode":0,"errmsg":"ok"}'
FEISHU_OK = '{"code":0,"msg":"success","data":{}}'
LOGGER = "tokenabacus.alerts"

MSG = Message(
    title="Token 用量激增",
    lines=("项目 campaign-2024 过去一小时的用量是基线的 5 倍", "请检查是否有脚本在循环调用。"),
    rule="spike",
    scope="project=campaign-2024",
    figure=125000,
    baseline=25000,
    threshold=100000,
    unit="tokens",
    severity="critical",
    link="https://gw.example/dashboard?project=campaign-2024",
    fired_at=datetime(2026, 11, 3, 8, 30, 5, tzinfo=UTC),
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- a local receiver that answers like the platforms ----------------------------------------------------


@dataclass
class Seen:
    path: str
    query: dict[str, str]
    raw_query: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body.decode("utf-8"))  # strict: the body must be valid UTF-8


Reply = tuple[int, str] | tuple[int, str, dict[str, str]]


@dataclass
class Receiver:
    """Records every request; answers with the scripted replies in order, then with `default`."""

    replies: list[Reply] = field(default_factory=list)
    default: Reply = (200, WECOM_OK)
    delay_s: float = 0.0
    seen: list[Seen] = field(default_factory=list)

    async def __aenter__(self) -> Receiver:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.port = self._runner.addresses[0][1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._runner.cleanup()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def _handle(self, request: web.Request) -> web.Response:
        self.seen.append(
            Seen(
                path=request.path,
                query=dict(request.query),
                raw_query=request.raw_path.partition("?")[2],
                headers=dict(request.headers),
                body=await request.read(),
            )
        )
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        reply = self.replies.pop(0) if self.replies else self.default
        status, text = reply[0], reply[1]
        headers = reply[2] if len(reply) == 3 else {}
        if status == 204:
            return web.Response(status=204, headers=headers)
        kind = "application/json" if text.startswith("{") else "text/plain"
        return web.Response(status=status, text=text, content_type=kind, headers=headers)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


# --- message rendering and truncation --------------------------------------------------------------------


def test_truncate_utf8_cuts_on_a_character_boundary() -> None:
    assert truncate_utf8("a中b", 5) == "a中b"  # fits exactly
    assert truncate_utf8("a中b", 4, marker="") == "a中"
    assert truncate_utf8("a中b", 3, marker="") == "a"  # never half of 中 (3 bytes)
    assert truncate_utf8("a中b", 2, marker="") == "a"
    assert truncate_utf8("x😀y", 4, marker="") == "x"  # a 4-byte character
    cut = truncate_utf8("中" * 100, 50)
    assert cut == "中" * 15 + "…" and len(cut.encode()) == 48
    with pytest.raises(ValueError):
        truncate_utf8("abcdef", 2)


def test_message_validation_and_plain_fields() -> None:
    with pytest.raises(ValueError, match="timezone"):
        Message(title="x", fired_at=datetime(2026, 1, 1))
    with pytest.raises(TypeError):
        Message(title="x", lines="one string")
    with pytest.raises(ValueError):
        Attachment("../etc/passwd", b"")
    notice = Message(title="11 月报表", lines=("见附件",))
    assert notice.fields() == []  # a notice without alert fields gets no severity/time lines
    assert render_markdown(notice) == "### 11 月报表\n\n见附件"
    assert dict(MSG.fields())["baseline"] == "25,000 tokens"
    assert dict(Message(title="t", rule="r", figure=0.35).fields())["figure"] == "0.35"


# --- WeCom -----------------------------------------------------------------------------------------------


def test_wecom_sends_markdown_with_chinese_as_utf8() -> None:
    async def main() -> None:
        async with Receiver() as rx:
            notifier = build_notifier(
                {"type": "wecom", "name": "ops-wecom", "url": rx.url("/cgi-bin/webhook/send?key=wk-0123456789"), **FAST}
            )
            assert isinstance(notifier, WeComNotifier)
            await notifier.send(MSG)
            [req] = rx.seen
            assert req.path == "/cgi-bin/webhook/send" and req.query == {"key": "wk-0123456789"}
            assert req.headers["Content-Type"].startswith("application/json")
            assert "\\u" not in req.body.decode()  # Chinese travels as UTF-8, not \u escapes
            body = req.json()
            assert body == {"msgtype": "markdown", "markdown": {"content": render_markdown(MSG)}}
            content = body["markdown"]["content"]
            assert content.startswith("### Token 用量激增\n\n项目 campaign-2024 过去一小时的用量是基线的 5 倍\n")
            assert "- **figure**: 125,000 tokens" in content
            assert "- **severity**: critical" in content
            assert "- **fired_at**: 2026-11-03T08:30:05Z" in content

    run(main())


def test_wecom_truncates_to_4096_bytes_on_a_character_boundary() -> None:
    async def main() -> None:
        async with Receiver() as rx:
            notifier = build_notifier({"type": "wecom", "name": "w", "url": rx.url("/send?key=k1234567")})
            await notifier.send(Message(title="告警", lines=("中" * 2000,)))
            content = rx.seen[0].json()["markdown"]["content"]
            # "### 告警\n\n" is 12 bytes; 4093 bytes of room leaves 1360 whole 中 and one partial byte, dropped.
            assert content == "### 告警\n\n" + "中" * 1360 + "…"
            assert len(content.encode()) == 4095 <= 4096

    run(main())


def test_wecom_errcode_is_a_failure_without_the_key(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    key = "693a91f6-7aaa-4bc4-97a0-0ec2sifa5aaa"

    async def main() -> None:
        # A platform that echoes the key back in its error must not get it into our error either.
        reply = json.dumps({"errcode": 93000, "errmsg": f"invalid webhook url, key {key}, hint: [x]"})
        async with Receiver(default=(200, reply)) as rx:
            notifier = build_notifier({"type": "wecom", "name": "w", "url": rx.url(f"/cgi-bin/webhook/send?key={key}")})
            with pytest.raises(NotifyError) as info:
                await notifier.send(MSG)
            assert len(rx.seen) == 1  # a bad key does not heal by retrying
            assert not info.value.retryable
            text = str(info.value)
            assert "93000" in text and "invalid webhook url" in text and text.startswith("w: ")
            assert key not in text and key not in repr(notifier)

    run(main())
    assert key not in caplog.text


# --- DingTalk --------------------------------------------------------------------------------------------


def _dingtalk_expected(secret: str, timestamp_ms: int) -> str:
    """The documented formula, written out independently: base64(HmacSHA256(secret, f"{ts}\\n{secret}"))."""
    mac = hmac.new(secret.encode("utf-8"), f"{timestamp_ms}\n{secret}".encode(), digestmod=hashlib.sha256)
    return base64.b64encode(mac.digest()).decode()


def test_dingtalk_signed_request() -> None:
    secret = "SEC5a3ecf88f2b3eb50db30ecfc00f53033ac909c99bf7f88fd612bda89d7f3a9dc"

    async def main() -> None:
        async with Receiver() as rx:
            notifier = build_notifier(
                {
                    "type": "dingtalk",
                    "name": "ops-ding",
                    "url": rx.url("/robot/send?access_token=at0123456789abcdef"),
                    "secret": secret,
                }
            )
            assert isinstance(notifier, DingTalkNotifier)
            before = int(time.time() * 1000)
            await notifier.send(MSG)
            after = int(time.time() * 1000)
            [req] = rx.seen
            assert req.query["access_token"] == "at0123456789abcdef"
            timestamp = int(req.query["timestamp"])
            assert before <= timestamp <= after  # milliseconds, now
            expected = _dingtalk_expected(secret, timestamp)
            assert req.query["sign"] == expected
            assert f"&sign={quote_plus(expected)}" in "&" + req.raw_query  # URL-encoded on the wire
            text = render_markdown(MSG, line_break="\n\n")
            assert req.json() == {"msgtype": "markdown", "markdown": {"title": MSG.title, "text": text}}
            assert text.startswith("### Token 用量激增\n\n项目 campaign-2024 过去一小时的用量是基线的 5 倍\n\n请检查")

    run(main())


def test_dingtalk_sign_url_encodes_base64() -> None:
    secret = "this is secret"
    # Find a timestamp whose signature has a '+' or '/', so the URL encoding is really exercised.
    ts = next(t for t in range(1_700_000_000_000, 1_700_000_001_000) if "+" in _dingtalk_expected(secret, t))
    signed = dingtalk_sign(secret, ts)
    assert signed == quote_plus(_dingtalk_expected(secret, ts)) and "%2B" in signed


def test_dingtalk_without_secret_sends_no_signature() -> None:
    async def main() -> None:
        async with Receiver() as rx:
            notifier = build_notifier({"type": "dingtalk", "name": "d", "url": rx.url("/robot/send?access_token=at1")})
            await notifier.send(MSG)
            assert rx.seen[0].query == {"access_token": "at1"}

    run(main())


def test_dingtalk_bad_signature_errcode_hides_token_and_secret() -> None:
    secret, token = "SECsecretvalue0001", "tokenvalue0002"

    async def main() -> None:
        reply = '{"errcode":310000,"errmsg":"sign not match, more: [https://ding-doc.dingtalk.com/doc]"}'
        async with Receiver(default=(200, reply)) as rx:
            url = rx.url(f"/robot/send?access_token={token}")
            notifier = build_notifier({"type": "dingtalk", "name": "d", "url": url, "secret": secret, **FAST})
            with pytest.raises(NotifyError) as info:
                await notifier.send(MSG)
            assert len(rx.seen) == 1
            assert "310000" in str(info.value) and "sign not match" in str(info.value)
            assert secret not in str(info.value) and token not in str(info.value)

    run(main())


def test_dingtalk_send_too_fast_is_retried_with_a_fresh_signature(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    secret = "SECretry"

    async def main() -> None:
        too_fast = '{"errcode":130101,"errmsg":"send too fast, exceed 20 times per minute"}'
        async with Receiver(replies=[(200, too_fast)]) as rx:
            url = rx.url("/robot/send?access_token=at2")
            notifier = build_notifier({"type": "dingtalk", "name": "d", "url": url, "secret": secret, **FAST})
            await notifier.send(MSG)
            assert len(rx.seen) == 2
            for req in rx.seen:
                assert req.query["sign"] == _dingtalk_expected(secret, int(req.query["timestamp"]))

    run(main())
    assert "130101" in caplog.text and "retrying" in caplog.text and "delivered on attempt 2" in caplog.text


# --- Feishu ----------------------------------------------------------------------------------------------


def test_feishu_signed_interactive_card() -> None:
    secret = "feishu-secret-abc"

    async def main() -> None:
        async with Receiver(default=(200, FEISHU_OK)) as rx:
            url = rx.url("/open-apis/bot/v2/hook/5e3d587e-d78e-4a07-bd07-265f269f86fd")
            notifier = build_notifier({"type": "feishu", "name": "ops-feishu", "url": url, "secret": secret})
            assert isinstance(notifier, FeishuNotifier)
            before = int(time.time())
            await notifier.send(MSG)
            after = int(time.time())
            body = rx.seen[0].json()
            assert isinstance(body["timestamp"], str)  # a string of SECONDS
            timestamp = int(body["timestamp"])
            assert before <= timestamp <= after
            # Documented: the key is f"{timestamp}\n{secret}" and the message is empty.
            key = f"{timestamp}\n{secret}".encode()
            assert body["sign"] == base64.b64encode(hmac.new(key, b"", hashlib.sha256).digest()).decode()
            assert body["sign"] == feishu_sign(secret, timestamp)
            assert body["msg_type"] == "interactive"
            assert body["card"] == {
                "header": {"title": {"tag": "plain_text", "content": "Token 用量激增"}, "template": "red"},
                "elements": [{"tag": "markdown", "content": render_markdown(MSG, with_title=False)}],
            }

    run(main())


def test_feishu_without_secret_and_old_statuscode_reply() -> None:
    async def main() -> None:
        old_ok = '{"Extra":null,"StatusCode":0,"StatusMessage":"success"}'
        async with Receiver(default=(200, old_ok)) as rx:
            notifier = build_notifier({"type": "feishu", "name": "f", "url": rx.url("/open-apis/bot/v2/hook/abc123")})
            await notifier.send(Message(title="notice", severity="info"))
            body = rx.seen[0].json()
            assert "sign" not in body and "timestamp" not in body
            assert body["card"]["header"]["template"] == "blue"

    run(main())


def test_feishu_code_failure_and_rate_limit_retry() -> None:
    async def main() -> None:
        bad_sign = '{"code":19021,"msg":"sign match fail or timestamp is not within one hour from current time"}'
        async with Receiver(default=(200, bad_sign)) as rx:
            url = rx.url("/open-apis/bot/v2/hook/hookid-0123456789")
            notifier = build_notifier({"type": "feishu", "name": "f", "url": url, "secret": "s3cr3t-value", **FAST})
            with pytest.raises(NotifyError, match="19021") as info:
                await notifier.send(MSG)
            assert len(rx.seen) == 1 and "hookid-0123456789" not in str(info.value)
        limited = '{"code":99991400,"msg":"request trigger frequency limit"}'
        async with Receiver(replies=[(400, limited)], default=(200, FEISHU_OK)) as rx:
            url = rx.url("/open-apis/bot/v2/hook/hookid")
            await build_notifier({"type": "feishu", "name": "f", "url": url, **FAST}).send(MSG)
            assert len(rx.seen) == 2  # a rate-limit code is retried even on HTTP 400

    run(main())


# --- Slack -----------------------------------------------------------------------------------------------


def test_slack_mrkdwn_text_escaped() -> None:
    async def main() -> None:
        async with Receiver(default=(200, "ok")) as rx:
            url = rx.url("/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX")
            notifier = build_notifier({"type": "slack", "name": "ops-slack", "url": url})
            assert isinstance(notifier, SlackNotifier)
            message = Message(title="Spike <b> & co", lines=("用量 > 基线",), rule="spike", link="https://gw.example/d")
            await notifier.send(message)
            body = rx.seen[0].json()
            assert body == {"text": render_mrkdwn(message)}
            assert body["text"].startswith("*Spike &lt;b&gt; &amp; co*\n用量 &gt; 基线\n• *rule*: spike")
            assert body["text"].endswith("<https://gw.example/d|https://gw.example/d>")

    run(main())


def test_slack_400_is_not_retried() -> None:
    async def main() -> None:
        async with Receiver(default=(400, "invalid_payload")) as rx:
            notifier = build_notifier({"type": "slack", "name": "s", "url": rx.url("/services/T1/B1/tok1"), **FAST})
            with pytest.raises(NotifyError, match="HTTP 400: invalid_payload") as info:
                await notifier.send(MSG)
            assert len(rx.seen) == 1 and not info.value.retryable

    run(main())


def test_429_with_retry_after_is_retried() -> None:
    async def main() -> None:
        async with Receiver(replies=[(429, "rate_limited", {"Retry-After": "0"})], default=(200, "ok")) as rx:
            notifier = build_notifier({"type": "slack", "name": "s", "url": rx.url("/services/T1/B1/tok1"), **FAST})
            await notifier.send(MSG)
            assert len(rx.seen) == 2

    run(main())


# --- generic webhook -------------------------------------------------------------------------------------


def test_webhook_fields_headers_and_hmac() -> None:
    secret = "whsec-0123456789"

    async def main() -> None:
        async with Receiver(default=(204, "")) as rx:
            notifier = build_notifier(
                {
                    "type": "webhook",
                    "name": "oncall",
                    "url": rx.url("/hooks/alerts"),
                    "headers": {"Authorization": "Bearer tok-abcdef"},
                    "secret": secret,
                }
            )
            assert isinstance(notifier, WebhookNotifier)
            await notifier.send(MSG)
            [req] = rx.seen
            assert req.headers["Authorization"] == "Bearer tok-abcdef"
            expected = "sha256=" + hmac.new(secret.encode(), req.body, hashlib.sha256).hexdigest()
            assert req.headers[SIGNATURE_HEADER] == expected
            body = req.json()
            assert {k: body[k] for k in ("rule", "scope", "figure", "baseline", "threshold", "unit", "severity")} == {
                "rule": "spike",
                "scope": "project=campaign-2024",
                "figure": 125000,
                "baseline": 25000,
                "threshold": 100000,
                "unit": "tokens",
                "severity": "critical",
            }
            assert body["title"] == "Token 用量激增" and body["channel"] == "oncall"
            assert body["message"] == "\n".join(MSG.lines)
            assert body["link"] == MSG.link and body["fired_at"] == "2026-11-03T08:30:05Z"

    run(main())


def test_webhook_500_twice_then_delivered(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)

    async def main() -> None:
        async with Receiver(replies=[(500, "boom"), (502, "bad gateway")], default=(200, "{}")) as rx:
            notifier = build_notifier({"type": "webhook", "name": "h", "url": rx.url("/hook"), **FAST})
            await notifier.send(MSG)
            assert len(rx.seen) == 3
            assert rx.seen[0].body == rx.seen[2].body  # the same alert each time

    run(main())
    assert caplog.text.count("retrying") == 2 and "HTTP 500: boom" in caplog.text


def test_unreachable_port_fails_after_retries(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    url = f"http://127.0.0.1:{free_port()}/hooks/tokenvalue-0123456789abcdef0123"

    async def main() -> None:
        notifier = build_notifier(
            {"type": "webhook", "name": "h", "url": url, "headers": {"X-Api-Key": "hdr-secret"}, **FAST}
        )
        with pytest.raises(NotifyError) as info:
            await notifier.send(MSG)
        assert info.value.retryable and "after 3 attempts" in str(info.value)
        assert "network error" in str(info.value)
        assert "tokenvalue-0123456789abcdef0123" not in str(info.value)

    run(main())
    assert caplog.text.count("retrying") == 2


def test_timeout_is_retried_then_fails() -> None:
    async def main() -> None:
        async with Receiver(delay_s=0.3) as rx:
            config = {"type": "wecom", "name": "w", "url": rx.url("/send?key=k0000000"), "timeout_s": 0.05}
            notifier = build_notifier({**config, "retry_attempts": 2, **FAST})
            with pytest.raises(NotifyError, match="no reply within 0.05s") as info:
                await notifier.send(MSG)
            assert info.value.retryable and len(rx.seen) == 2

    run(main())


def test_shared_session_is_used_and_left_open() -> None:
    async def main() -> None:
        async with Receiver(default=(200, "ok")) as rx, aiohttp.ClientSession() as session:
            notifier = build_notifier({"type": "slack", "name": "s", "url": rx.url("/services/a/b/c")}, session=session)
            await notifier.send(MSG)
            await notifier.send(MSG)
            assert len(rx.seen) == 2 and not session.closed

    run(main())


@pytest.mark.parametrize("kind", ["wecom", "dingtalk", "feishu", "slack", "webhook"])
def test_one_attempt_carries_the_idempotency_key_and_never_retries(kind: str) -> None:
    """`attempt` is one try (the alert outbox schedules retries); an alert's key goes in the
    Idempotency-Key header, and in the body of the generic webhook, whose fields are ours."""
    reply = {"feishu": FEISHU_OK, "slack": "ok", "webhook": "{}"}.get(kind, WECOM_OK)

    async def main() -> None:
        async with Receiver(replies=[(502, "bad gateway")], default=(200, reply)) as rx:
            extra = {"secret": "SECk"} if kind in ("dingtalk", "feishu", "webhook") else {}
            notifier = build_notifier({"type": kind, "name": "c", "url": rx.url("/hook/send?key=k1"), **extra})
            keyed = dataclasses.replace(MSG, idempotency_key="4f1c0de5")
            with pytest.raises(NotifyError, match="HTTP 502") as info:
                await notifier.attempt(keyed)
            assert info.value.retryable and len(rx.seen) == 1
            await notifier.attempt(keyed)
            await notifier.send(MSG)  # no key: no header
            first, second, plain = rx.seen
            assert first.headers["Idempotency-Key"] == second.headers["Idempotency-Key"] == "4f1c0de5"
            assert "Idempotency-Key" not in plain.headers
            if kind == "webhook":
                assert first.json()["idempotency_key"] == "4f1c0de5" and plain.json()["idempotency_key"] is None

    run(main())


# --- retry policy ----------------------------------------------------------------------------------------


def test_retry_policy_backoff_and_deliver() -> None:
    policy = RetryPolicy()
    assert [policy.delay(n) for n in (1, 2, 3)] == [0.5, 1.0, 2.0]
    assert policy.delay(1, retry_after=5) == 5 and policy.delay(1, retry_after=999) == 30.0

    async def main() -> None:
        waits: list[float] = []
        calls = 0

        async def sleep(seconds: float) -> None:
            waits.append(seconds)

        async def attempt() -> None:
            nonlocal calls
            calls += 1
            raise NotifyError("c", "down", retryable=True)

        with pytest.raises(NotifyError, match="after 3 attempts"):
            await deliver("c", attempt, policy, sleep=sleep)
        assert calls == 3 and waits == [0.5, 1.0]

        async def fatal() -> None:
            raise NotifyError("c", "bad config")

        with pytest.raises(NotifyError, match="^c: bad config$"):
            await deliver("c", fatal, policy, sleep=sleep)

    run(main())


# --- email over a real SMTP server -----------------------------------------------------------------------

SMTP_USER, SMTP_PASSWORD = "alerts", "pw-secret-42"


@dataclass
class Inbox:
    envelopes: list[Any] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.envelopes.append(envelope)
        return "250 OK"


def _authenticator(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
        SMTP_USER.encode(),
        SMTP_PASSWORD.encode(),
    )
    # handled=False: aiosmtpd then sends the 535 itself (True would mean "reply already sent").
    return AuthResult(success=ok, handled=False)


@pytest.fixture
def smtp_server() -> Iterator[tuple[Inbox, int]]:
    inbox, port = Inbox(), free_port()
    controller = Controller(
        inbox, hostname="127.0.0.1", port=port, authenticator=_authenticator, auth_require_tls=False
    )
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


def _email_config(port: int, **over: Any) -> dict[str, Any]:
    return {
        "type": "email",
        "name": "finance-mail",
        "host": "127.0.0.1",
        "port": port,
        "security": "none",
        "username": SMTP_USER,
        "password": SMTP_PASSWORD,
        "from": "Token Abacus <alerts@example.com>",
        "to": ["财务 <finance@example.com>", "ops@example.com"],
        "subject_prefix": "[tokenabacus] ",
        **FAST,
        **over,
    }


def test_email_with_attachments(smtp_server: tuple[Inbox, int]) -> None:
    inbox, port = smtp_server
    csv = "department,total_tokens\n市场部,1234567\n".encode()
    xlsx = b"PK\x03\x04" + bytes(range(256)) * 4
    message = Message(
        title="11 月用量报表",
        lines=("附件是 11 月各部门的用量。",),
        attachments=(
            Attachment("用量-2026-11.csv", csv, "text/csv"),
            Attachment("usage.xlsx", xlsx, "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"),
        ),
    )
    notifier = build_notifier(_email_config(port))
    assert isinstance(notifier, EmailNotifier) and SMTP_PASSWORD not in repr(notifier)
    run(notifier.send(message))

    [envelope] = inbox.envelopes
    assert envelope.mail_from == "alerts@example.com"
    assert envelope.rcpt_tos == ["finance@example.com", "ops@example.com"]
    parsed = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
    assert parsed["Subject"] == "[tokenabacus] 11 月用量报表"
    assert parsed["From"] == "Token Abacus <alerts@example.com>"
    assert parsed["To"] == "财务 <finance@example.com>, ops@example.com"
    body = parsed.get_body(("plain",))
    assert body is not None
    assert body.get_content().replace("\r\n", "\n") == "11 月用量报表\n\n附件是 11 月各部门的用量。\n"
    parts = {part.get_filename(): part for part in parsed.iter_attachments()}
    assert set(parts) == {"用量-2026-11.csv", "usage.xlsx"}
    assert parts["用量-2026-11.csv"].get_content_type() == "text/csv"
    assert parts["用量-2026-11.csv"].get_payload(decode=True) == csv
    assert parts["usage.xlsx"].get_payload(decode=True) == xlsx


def test_email_attempt_keeps_its_message_id(smtp_server: tuple[Inbox, int]) -> None:
    """Every attempt of one alert by email has the same Message-ID, built from its key."""
    inbox, port = smtp_server
    notifier = build_notifier(_email_config(port))
    keyed = dataclasses.replace(MSG, idempotency_key="4f1c0de5")
    run(notifier.attempt(keyed))
    run(notifier.attempt(keyed))
    run(notifier.attempt(MSG))
    ids = [email.message_from_bytes(e.original_content)["Message-ID"] for e in inbox.envelopes]
    assert ids[0] == ids[1] == "<4f1c0de5@example.com>" and ids[2] != ids[0]


def test_email_bad_password_is_not_retried_and_not_shown(
    smtp_server: tuple[Inbox, int], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    inbox, port = smtp_server
    wrong = "wrong-password-77"
    notifier = build_notifier(_email_config(port, password=wrong, timeout_s=3))
    with pytest.raises(NotifyError, match="SMTP 535") as info:
        run(notifier.send(MSG))
    assert not info.value.retryable and wrong not in str(info.value)
    assert "retrying" not in caplog.text and wrong not in caplog.text and not inbox.envelopes


def test_email_unreachable_server_is_retried() -> None:
    notifier = build_notifier(_email_config(free_port(), retry_attempts=2, timeout_s=2))
    with pytest.raises(NotifyError, match="network error") as info:
        run(notifier.send(MSG))
    assert info.value.retryable and "after 2 attempts" in str(info.value)


# --- configuration ---------------------------------------------------------------------------------------


def test_every_type_builds_its_notifier() -> None:
    base = {"name": "c", "url": "https://example.com/hook/abc"}
    configs: dict[str, dict[str, Any]] = {
        "wecom": base,
        "dingtalk": {**base, "secret": "SECx"},
        "feishu": base,
        "slack": base,
        "webhook": {**base, "headers": {"Authorization": "Bearer x"}},
        "email": {"name": "m", "host": "smtp.example.com", "from": "a@example.com", "to": ["b@example.com"]},
    }
    for kind, settings in configs.items():
        notifier = build_notifier({"type": kind, **settings})
        assert type(notifier) is NOTIFIER_TYPES[kind] and notifier.name == settings["name"]
    email_config = parse_channel({"type": "email", **configs["email"]})
    assert isinstance(email_config, EmailConfig) and email_config.effective_port() == 587
    # An already-validated model is accepted as is.
    assert isinstance(build_notifier(WeComConfig(name="w", url="https://qyapi.weixin.qq.com/x?key=k")), WeComNotifier)


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({"type": "wecom", "name": "w", "url": "ftp://qyapi.weixin.qq.com/send?key=SECRETKEY1"}, "http"),
        ({"type": "wecom", "name": "w", "url": "https:///send?key=SECRETKEY1"}, "with a host"),
        ({"type": "pager", "name": "p", "url": "https://x/?key=SECRETKEY1"}, "does not match any of the expected tags"),
        ({"name": "w", "url": "https://x/?key=SECRETKEY1"}, "discriminator 'type'"),
        ({"type": "slack", "name": "", "url": "https://x/y"}, "at least 1 character"),
        ({"type": "slack", "name": "s", "url": "https://x/?key=SECRETKEY1", "colour": "red"}, "Extra inputs"),
        ({"type": "email", "name": "m", "host": "h", "from": "a@b.c", "to": []}, "at least 1 item"),
        ({"type": "email", "name": "m", "from": "a@b.c", "to": ["x@y.z"]}, "host"),
        ({"type": "email", "name": "m", "host": "h", "from": "a@b.c", "to": ["nobody"]}, "email address"),
        (
            {"type": "email", "name": "m", "host": "h", "from": "a@b.c", "to": ["x@y.z"], "password": "SECRETKEY1"},
            "username and password must be given together",
        ),
        (
            {"type": "webhook", "name": "h", "url": "https://x/y", "headers": {"Authorization": "SECRETKEY1\r\nX: 1"}},
            "line break",
        ),
        # An empty secret would turn signing off without a word: refused, naming the channel.
        (
            {"type": "dingtalk", "name": "ding", "url": "https://x/?access_token=SECRETKEY1", "secret": ""},
            "channel 'ding': secret is empty",
        ),
        (
            {"type": "feishu", "name": "lark", "url": "https://x/hook/SECRETKEY1", "secret": "  "},
            "channel 'lark': secret is empty",
        ),
        (
            {"type": "webhook", "name": "h", "url": "https://x/?token=SECRETKEY1", "secret": ""},
            "channel 'h': secret is empty",
        ),
    ],
)
def test_bad_config_is_a_clear_error_without_secrets(settings: dict[str, Any], expected: str) -> None:
    with pytest.raises(ValidationError) as info:
        parse_channel(settings)
    assert expected in str(info.value)
    assert "SECRETKEY1" not in str(info.value)


def test_config_repr_hides_secrets() -> None:
    config = parse_channel(
        {
            "type": "dingtalk",
            "name": "d",
            "url": "https://oapi.dingtalk.com/robot/send?access_token=tok999",
            "secret": "SECabc",
        }
    )
    assert "tok999" not in repr(config) and "SECabc" not in repr(config)
    assert "tok999" not in repr(build_notifier(config))


# --- redaction -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "redacted"),
    [
        (
            "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=693a91f6-7xxx-4bc4-97a0-0ec2sifa5aaa",
            "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=***",
        ),
        (
            "https://oapi.dingtalk.com/robot/send?access_token=abc123&timestamp=1700000000000&sign=x%2By",
            "https://oapi.dingtalk.com/robot/send?access_token=***&timestamp=1700000000000&sign=***",
        ),
        (
            "https://open.feishu.cn/open-apis/bot/v2/hook/5e3d587e-d78e-4a07-bd07-265f269f86fd",
            "https://open.feishu.cn/open-apis/bot/v2/hook/***",
        ),
        (
            "https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX",
            "https://hooks.slack.com/services/***/***/***",
        ),
        ("https://user:pass@example.com:8443/alerts?team=ops#frag", "https://***@example.com:8443/alerts?team=ops"),
        (
            "https://example.com/api/v1/abcdefghijklmnopqrstuvwxyz0123456789/notify",
            "https://example.com/api/v1/***/notify",
        ),
        ("http://127.0.0.1:9000/hook", "http://127.0.0.1:9000/hook"),
    ],
)
def test_redact_url(url: str, redacted: str) -> None:
    assert redact_url(url) == redacted


def test_scrub_redacts_urls_and_known_secrets() -> None:
    text = "POST https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=KEY-1234 failed; secret SECabcd leaked"
    assert (
        scrub(text, ["SECabcd"])
        == "POST https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=*** failed; secret *** leaked"
    )
