"""Alerts and scheduled reports against the real ledgers (SQLite, PostgreSQL, MariaDB), a local
HTTP receiver answering as WeCom and DingTalk do, and a real SMTP server: a week of baseline and
a burst day fire exactly one spike alert, once, wherever the evaluation runs; every rule kind
fires on what it watches; the CLI tests every channel; a schedule sends its report once."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import subprocess
import time
import urllib.parse
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import httpx
import pytest
import yaml
from openpyxl import load_workbook

from conftest import BIN, GatewayProc
from procs import wait_for
from receivers import Mailbox, Receiver
from tokenabacus.alerts.engine import AlertEngine
from tokenabacus.alerts.schedules import ReportScheduler, last_due
from tokenabacus.config import Settings
from tokenabacus.ledger.leases import Lease
from tokenabacus.ledger.record import FIELDS, new_request_id
from tokenabacus.ledger.store import Store

ZONE = "Asia/Shanghai"
TZ = ZoneInfo(ZONE)
DAY = datetime(2026, 11, 25, tzinfo=TZ)  # the burst day
NOON = int((DAY + timedelta(hours=12)).timestamp() * 1000)
SECRET = "SECabc123"


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def record(ts: int, department: str, prompt: int, completion: int = 50, **kw) -> dict:
    return {
        **dict.fromkeys(FIELDS),
        "request_id": new_request_id(),
        "timestamp": ts,
        "model": "qwen-7b",
        "status": "ok",
        "stream": False,
        "department": department,
        "project": f"{department}-p",
        "user": f"{department}-u",
        "key_id": f"key_{department}",
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "duration_ms": 300,
        **kw,
    }


def week_and_burst(store: Store) -> None:
    """Seven days of two departments at ~100k tokens a day, then a day on which marketing sends
    four times its usual tokens by noon in bulk thousand-token prompts, and rnd carries on."""
    recs = []
    for d in range(1, 8):
        start = int((DAY - timedelta(days=d) + timedelta(hours=9)).timestamp() * 1000)
        for i in range(200):
            recs.append(record(start + i * 60_000, "marketing", 450))
            recs.append(record(start + i * 60_000 + 1, "rnd", 450))
    start = int((DAY + timedelta(hours=9)).timestamp() * 1000)
    for i in range(200):
        recs.append(record(start + i * 45_000, "marketing", 1950))  # same requests, 4x the tokens each
    for i in range(100):
        recs.append(record(start + i * 60_000 + 1, "rnd", 450))
    for i in range(0, len(recs), 1000):
        store.usage.insert(recs[i : i + 1000])


def settings_for(receiver: Receiver, rules: list[dict], **alerts) -> Settings:
    return Settings.model_validate(
        {
            "governance": {"timezone": ZONE},
            "alerts": {
                "language": "zh",
                "dashboard_url": "http://grafana.local/d/tokenabacus",
                "channels": [
                    {"name": "wecom", "type": "wecom", "url": receiver.url("/wecom?key=K")},
                    {"name": "dingtalk", "type": "dingtalk", "url": receiver.url("/ding?access_token=T"),
                     "secret": SECRET},
                ],
                "rules": rules,
                **alerts,
            },
        }
    )  # fmt: skip


def test_a_week_and_a_burst_day_fire_exactly_one_spike(db_url, receiver):
    store = Store(db_url)
    try:
        week_and_burst(store)
        s = settings_for(receiver, [{"name": "dept-spike", "type": "spike", "scope": "department"}])
        engine = AlertEngine(s, store)
        fired = asyncio.run(engine.evaluate(NOON, wait=True))
        assert [(a["scope"], a["kind"]) for a in fired] == [("department=marketing", "spike")]
        a = fired[0]
        assert a["figure"] == 200 * 2000 and a["baseline"] == 200 * 500 and a["threshold"] == 300
        assert a["deliveries"] == {"wecom": "delivered", "dingtalk": "delivered"}
        (wx,) = receiver.on("/wecom")
        content = wx["json"]["markdown"]["content"]
        assert wx["json"]["msgtype"] == "markdown" and "用量突增" in content and "department=marketing" in content
        assert "400,000" in content and "100,000" in content and "http://grafana.local/d/tokenabacus" in content
        (ding,) = receiver.on("/ding")
        ts = ding["query"]["timestamp"]
        digest = hmac.new(SECRET.encode(), f"{ts}\n{SECRET}".encode(), hashlib.sha256).digest()
        assert ding["query"]["sign"] == base64.b64encode(digest).decode()  # DingTalk's signed mode
        assert ding["json"]["msgtype"] == "markdown" and "marketing" in ding["json"]["markdown"]["text"]
        # Again, and from another process's engine: nothing more (deduplicated on rule, scope, day).
        assert asyncio.run(engine.evaluate(NOON + 60_000)) == []
        assert asyncio.run(AlertEngine(s, store).evaluate(NOON + 120_000)) == []
        rows = store.alerts.history()
        assert len(rows) == 1 and rows[0]["deliveries"] == {"wecom": "delivered", "dingtalk": "delivered"}
        assert len(receiver.on("/wecom")) == 1
        # Bulk thousand-token prompts: the size of requests, not only the volume.
        s2 = settings_for(receiver, [{"name": "bulk", "type": "spike", "metric": "tokens_per_request"}])
        (bulk,) = asyncio.run(AlertEngine(s2, store).evaluate(NOON))
        assert bulk["scope"] == "department=marketing" and bulk["figure"] == 1950 and bulk["baseline"] == 450
        # Early in the day the projection fires only with enough of the day behind it.
        s3 = settings_for(receiver, [{"name": "early", "type": "spike", "min_tokens": 1000, "min_requests": 1}])
        early = int((DAY + timedelta(hours=1)).timestamp() * 1000)
        assert asyncio.run(AlertEngine(s3, store).evaluate(early)) == []
    finally:
        store.close()


def test_bursts_quotas_drift_and_errors(db_url, receiver):
    store = Store(db_url)
    try:
        base = NOON - 3 * 60_000
        recs = [record(base + i * 50, "ops", 10, key_id="key_flood") for i in range(700)]  # 700 in a minute
        recs += [record(base + i * 1000, "ops", 10, key_id="key_calm") for i in range(50)]
        recs += [record(base + i * 1000, "ops", 10, model="vllm-a", status="error") for i in range(8)]
        recs += [record(base + i * 1000, "ops", 10, model="vllm-a") for i in range(12)]
        recs += [
            record(base + i, "ops", 1000, model="qwen-up", usage_source="tokenizer",
                   upstream_prompt_tokens=1100, upstream_completion_tokens=50)
            for i in range(20)
        ]  # fmt: skip
        store.usage.insert(recs)
        store.quotas.set("project", "ops-p", None, "tokens", "day", 100_000, "admin")
        rules = [
            {"name": "flood", "type": "burst", "by": "key_id", "requests_per_minute": 600},
            {"name": "quota", "type": "quota", "thresholds": [50, 100]},
            {"name": "drift", "type": "drift", "tolerance_pct": 2, "min_tokens": 1000},
            {"name": "errors", "type": "error_rate", "max_pct": 30, "min_requests": 10},
        ]
        fired = asyncio.run(AlertEngine(settings_for(receiver, rules), store).evaluate(NOON))
        got = {(a["rule"], a["scope"]) for a in fired}
        assert ("flood", "key_id=key_flood") in got and ("flood", "key_id=key_calm") not in got
        assert ("drift", "model=qwen-up") in got and ("errors", "model=vllm-a") in got
        (q,) = [a for a in fired if a["rule"] == "quota"]
        assert q["scope"].startswith("project=ops-p") and q["threshold"] == 50
        assert len(fired) == 4
    finally:
        store.close()


def test_leases_keep_one_holder(db_url):
    store = Store(db_url)
    try:
        a = Lease(store.db, "alerts", "host-a:1", ttl_s=0.5)
        b = Lease(store.db, "alerts", "host-b:2", ttl_s=0.5)
        assert a.acquire() and not b.acquire() and a.acquire()  # a renews, b waits
        time.sleep(0.6)  # the scenario: a does not renew for longer than its TTL
        assert b.acquire() and not a.acquire()  # a's lapsed: b took it
        b.release()
        assert a.acquire()
    finally:
        store.close()


def test_scheduled_report_goes_once_with_its_attachment(tmp_path, receiver):
    mail = Mailbox()
    store = Store(f"sqlite:///{tmp_path / 'ledger.db'}")
    try:
        week_and_burst(store)
        s = Settings.model_validate(
            {
                "governance": {"timezone": ZONE},
                "alerts": {
                    "language": "en",
                    "channels": [
                        {"name": "wecom", "type": "wecom", "url": receiver.url("/wecom?key=K")},
                        {"name": "mail", "type": "email", "host": "127.0.0.1", "port": mail.port,
                         "security": "none", "from": "abacus@example.com", "to": ["finance@example.com"]},
                    ],
                    "schedules": [{"name": "daily", "every": "day", "at": "09:00"}],
                },
            }
        )  # fmt: skip
        at = (DAY + timedelta(days=1, hours=9, minutes=5)).astimezone(UTC)  # 26th 09:05 reports the 25th
        assert last_due(s.alerts.schedules[0], ZONE, at).period == "2026-11-25"
        sched = ReportScheduler(s, store)
        assert asyncio.run(sched.tick(at)) == ["daily:2026-11-25"]
        assert asyncio.run(sched.tick(at + timedelta(minutes=1))) == []  # once per period
        assert asyncio.run(ReportScheduler(s, store).tick(at + timedelta(minutes=2))) == []
        (wx,) = receiver.on("/wecom")
        text = wx["json"]["markdown"]["content"]
        assert "Usage report 2026-11-25" in text and "1. marketing: 400,000" in text and "Peak hour" in text
        assert "Biggest movers" in text
        (msg,) = mail.messages
        assert msg["To"] == "finance@example.com" and "Usage report" in msg["Subject"]
        parts = [p for p in msg.walk() if p.get_filename()]
        assert parts and parts[0].get_filename().endswith(".xlsx")
        book = load_workbook(__import__("io").BytesIO(parts[0].get_payload(decode=True)))
        assert book.sheetnames == ["Departments", "Projects", "Peaks"]
    finally:
        store.close()
        mail.close()


def test_cli_alerts_test_list_history_and_report_now(tmp_path, receiver):
    mail = Mailbox()
    data = tmp_path / "data"
    cfg = {
        "governance": {"timezone": ZONE},
        "alerts": {
            "channels": [
                {"name": "wecom", "type": "wecom", "url": receiver.url("/wecom?key=SECRETKEY")},
                {"name": "feishu", "type": "feishu", "url": receiver.url("/feishu/hook/abc"), "secret": "fs"},
                {"name": "mail", "type": "email", "host": "127.0.0.1", "port": mail.port, "security": "none",
                 "from": "abacus@example.com", "to": ["ops@example.com"]},
                {"name": "dead", "type": "slack", "url": "http://127.0.0.1:9/slack", "retry_attempts": 1},
            ],
            "rules": [{"name": "spike", "type": "spike"}],
            "schedules": [{"name": "daily", "at": "09:00", "channels": ["wecom"]}],
        },
    }  # fmt: skip
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    Store(f"sqlite:///{data / 'ledger.db'}").close()

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(BIN), *args, "--config", str(path), "--data-dir", str(data)],
            capture_output=True,
            text=True,
            timeout=60,
        )

    r = cli("alerts", "test")
    assert r.returncode == 1  # the dead channel failed; the others went
    lines = dict(line.split(": ", 1) for line in r.stdout.strip().splitlines())
    assert lines["wecom"] == lines["feishu"] == lines["mail"] == "sent" and lines["dead"].startswith("failed")
    assert "SECRETKEY" not in r.stdout + r.stderr
    assert "测试消息" in receiver.on("/wecom")[0]["json"]["markdown"]["content"]
    assert receiver.on("/feishu")[0]["json"]["sign"] and mail.messages
    assert cli("alerts", "test", "--channel", "wecom").returncode == 0
    r = cli("alerts", "test", "--channel", "nope")
    assert r.returncode == 2 and r.stderr == "error: no channel named 'nope'\n"
    listed = json.loads(cli("alerts", "list", "--format", "json").stdout)
    assert listed[0]["rule"] == "spike" and "factor_pct=300.0" in listed[0]["settings"]
    assert json.loads(cli("alerts", "history", "--format", "json").stdout) == []
    r = cli("reports", "send", "daily", "--now")
    assert r.returncode == 0 and "wecom: sent" in r.stdout
    r = cli("reports", "send", "weekly", "--now")
    assert r.returncode == 2 and "no scheduled report named 'weekly'" in r.stderr
    mail.close()


def test_the_gateway_pages_a_burst_and_counts_it_in_metrics(tmp_path, receiver):
    cfg = {
        "alerts": {
            "evaluate_interval_s": 1,
            "channels": [{"name": "wecom", "type": "wecom", "url": receiver.url("/wecom?key=K")}],
            "rules": [{"name": "flood", "type": "burst", "by": "key_id", "requests_per_minute": 4}],
        }
    }
    gw = GatewayProc(tmp_path / "data", cfg).start()
    try:
        key = gw.create_key()
        client = gw.client(key)
        for _ in range(5):
            client.chat.completions.create(
                model="smollm2-135m-instruct", messages=[{"role": "user", "content": "hi"}], max_tokens=2
            )
        wait_for(lambda: receiver.on("/wecom"), 30, "the burst alert at the wecom receiver")
        (msg,) = receiver.on("/wecom")
        assert "key_id=" in msg["json"]["markdown"]["content"]
        text = httpx.get(gw.base_url.removesuffix("/v1") + "/metrics").text
        assert 'tokenabacus_alerts_fired_total{rule="flood",severity="warning"} 1.0' in text
        assert "tokenabacus_suspicious_caller_ratio{" in text
        # Nothing must arrive: no event to poll for, so two evaluation intervals pass (evaluated
        # again each second: still once).
        time.sleep(2)
        assert len(receiver.on("/wecom")) == 1
        assert urllib.parse.urlparse(msg["path"]).path == "/wecom"
    finally:
        gw.stop()
