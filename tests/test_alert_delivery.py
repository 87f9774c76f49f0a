"""Alerts that arrive: real gateway processes whose models' engines are down (an upstream_down rule
fires one alert per model), real HTTP receivers (tests/receivers.py), the real ledgers.

A sleeping webhook beside a healthy channel delays nothing on the healthy one and its full queue
drops with a metric; every attempt of one alert to one channel carries the same idempotency key;
a gateway stopped (SIGTERM) or killed (SIGKILL) with a delivery pending sends it after a restart,
once, to the channel that had not got it; quota thresholds crossed one after another in a period
are three alerts; an empty signing secret is refused at config load."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import httpx
import pytest
import yaml

from conftest import BIN, GatewayProc
from procs import free_port, wait_for
from receivers import Receiver
from tokenabacus.alerts.engine import AlertEngine
from tokenabacus.config import Settings
from tokenabacus.ledger.alerts import DELIVERED, FAILED, PENDING
from tokenabacus.ledger.record import FIELDS, new_request_id
from tokenabacus.ledger.schema import alert_deliveries
from tokenabacus.ledger.store import Store

ZONE = "Asia/Shanghai"
NOON = int((datetime(2026, 11, 25, tzinfo=ZoneInfo(ZONE)) + timedelta(hours=12)).timestamp() * 1000)


def poll(what: str, check: Callable[[], object], timeout: float = 30.0) -> object:
    return wait_for(check, timeout, what)


def down_models(n: int) -> list[dict]:
    """``n`` upstream models at ports nothing listens on: each engine is down, each one alert."""
    return [{"name": f"m{i}", "engine": "upstream", "base_url": f"http://127.0.0.1:{free_port()}/v1"} for i in range(n)]


def gateway_config(models: int, channels: list[dict], **alerts) -> dict:
    return {
        "models": down_models(models),
        "alerts": {
            "language": "en",
            "evaluate_interval_s": 1,
            "channels": channels,
            "rules": [{"name": "down", "type": "upstream_down", "for_seconds": 0}],
            **alerts,
        },
    }


def admin_alerts(gw: GatewayProc) -> list[dict]:
    r = httpx.get(
        gw.base_url.removesuffix("/v1") + "/admin/alerts",
        headers={"Authorization": f"Bearer {gw.admin_key}"},
        timeout=10,
    )
    r.raise_for_status()
    return r.json()


def settled(rows: list[dict], n: int) -> list[dict] | None:
    """The alerts once there are ``n`` and none has a delivery still pending."""
    if len(rows) != n or any(v.startswith(PENDING) for a in rows for v in a["deliveries"].values()):
        return None
    return rows


def test_a_sleeping_webhook_delays_no_other_channel_and_retries_carry_one_key(tmp_path):
    receiver = Receiver(delays={"/slow": 3.0})
    channels = [
        {"name": "ok", "type": "wecom", "url": receiver.url("/wecom?key=K")},
        {"name": "slow", "type": "webhook", "url": receiver.url("/slow"),
         "timeout_s": 0.5, "retry_attempts": 3, "retry_base_delay_s": 0.1, "delivery_queue": 2},
    ]  # fmt: skip
    gw = GatewayProc(tmp_path / "data", gateway_config(4, channels)).start()
    try:
        # The healthy channel gets all four at once, while the sleeping one holds its first.
        oks = poll(
            "four alerts on the healthy channel", lambda: len(receiver.on("/wecom")) == 4 and receiver.on("/wecom")
        )
        spread = oks[-1]["at"] - oks[0]["at"]
        assert spread < 1.5, f"the healthy channel waited on the slow one: {spread:.2f}s"
        assert sorted(m["json"]["markdown"]["content"].split("model=m")[1][0] for m in oks) == ["0", "1", "2", "3"]

        # Its queue holds two: those two are tried three times each (no reply within 0.5 s),
        # every attempt of one alert with the same key, in the header and the body.
        rows = poll("every delivery settled", lambda: settled(admin_alerts(gw), 4))
        slow = receiver.on("/slow")
        assert len(slow) == 6
        keys = Counter(m["json"]["idempotency_key"] for m in slow)
        assert len(keys) == 2 and set(keys.values()) == {3}
        assert all(m["headers"]["Idempotency-Key"] == m["json"]["idempotency_key"] for m in slow)
        assert len({m["json"]["scope"] for m in slow}) == 2  # two alerts, not one alert twice

        outcomes = Counter(a["deliveries"]["slow"] for a in rows)
        assert outcomes == {
            "failed: no reply within 0.5s (after 3 attempts)": 2,
            "failed: dropped: 2 deliveries already waiting (delivery_queue)": 2,
        }
        assert all(a["deliveries"]["ok"] == "delivered" for a in rows)
        assert len(receiver.on("/wecom")) == 4  # each once
        metrics = httpx.get(gw.base_url.removesuffix("/v1") + "/metrics").text
        assert 'tokenabacus_alert_deliveries_dropped_total{channel="slow"} 2.0' in metrics
        assert 'tokenabacus_alerts_fired_total{rule="down",severity="critical"} 4.0' in metrics
        log = gw.log.read_text()
        assert log.count("not queued for channel slow") == 2 and "key=K" not in log
    finally:
        gw.stop()
        receiver.close()


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
def test_a_pending_delivery_is_sent_after_a_restart_once(tmp_path, how):
    """The second channel is down while the alert fires: it stays pending (retries with
    backoff) through the stop; after the restart it arrives there once, and not again on the
    first channel."""
    good = Receiver()
    late_port = free_port()  # nothing listens here until after the stop
    channels = [
        {"name": "good", "type": "wecom", "url": good.url("/wecom?key=K")},
        {"name": "late", "type": "webhook", "url": f"http://127.0.0.1:{late_port}/late",
         "retry_attempts": 10, "retry_base_delay_s": 0.2, "timeout_s": 2},
    ]  # fmt: skip
    gw = GatewayProc(tmp_path / "data", gateway_config(1, channels)).start()
    late: Receiver | None = None
    try:
        poll("the alert on the good channel", lambda: good.on("/wecom"))
        (a,) = poll(
            "a failed try on the late channel",
            lambda: [a for a in admin_alerts(gw) if a["deliveries"].get("late", "").startswith("pending (last try")],
        )
        assert a["deliveries"]["good"] == "delivered"
        if how == "sigterm":
            gw.stop()
        else:
            gw.kill()

        store = gw.store()
        try:
            with store.engine.connect() as c:
                rows = {r.channel: r for r in c.execute(alert_deliveries.select())}
        finally:
            store.close()
        assert rows["good"].state == DELIVERED and rows["late"].state == PENDING and rows["late"].attempts >= 1

        late = Receiver(port=late_port)
        gw.start()
        (got,) = poll("the pending delivery after the restart", lambda: late.on("/late"))
        assert got["json"]["idempotency_key"] == got["headers"]["Idempotency-Key"] == rows["late"].idempotency_key
        assert got["json"]["scope"] == "model=m0" and got["json"]["rule"] == "down"
        history = poll(
            "the history says delivered",
            lambda: (
                (h := json.loads(gw.cli("alerts", "history", "--format", "json").stdout))
                and h[0]["deliveries"] == "good: delivered, late: delivered"
                and h
            ),
        )
        assert len(history) == 1  # the engine, still down, is the same alert (inside its cool-down)
        time.sleep(1.5)  # more evaluations and sender wake-ups: nothing more is sent
        assert len(late.on("/late")) == 1 and len(good.on("/wecom")) == 1
    finally:
        gw.stop()
        good.close()
        if late:
            late.close()


def usage(ts: int, tokens: int) -> dict:
    return {**dict.fromkeys(FIELDS), "request_id": new_request_id(), "timestamp": ts, "model": "qwen-7b",
            "status": "ok", "stream": False, "department": "ops", "project": "ops-p", "user": "ops-u",
            "key_id": "key_ops", "prompt_tokens": tokens, "completion_tokens": 0, "total_tokens": tokens}  # fmt: skip


def test_quota_thresholds_crossed_in_one_period_are_three_alerts(db_url):
    """50%, then 80%, then 100% of a daily limit, minutes apart (inside the rule's 60-minute
    cool-down): three alerts, each sent; then nothing more that day."""
    receiver = Receiver()
    store = Store(db_url)
    try:
        store.quotas.set("project", "ops-p", None, "tokens", "day", 10_000, "admin")
        s = Settings.model_validate(
            {
                "governance": {"timezone": ZONE},
                "alerts": {
                    "language": "en",
                    "channels": [{"name": "wecom", "type": "wecom", "url": receiver.url("/wecom?key=K")}],
                    "rules": [{"name": "quota", "type": "quota", "thresholds": [50, 80, 100]}],
                },
            }
        )
        engine = AlertEngine(s, store)
        fired = []
        for minute, tokens in ((1, 5_500), (2, 3_000), (3, 1_500)):
            store.usage.insert([usage(NOON - 3_600_000 + minute, tokens)])
            fired += asyncio.run(engine.evaluate(NOON + minute * 60_000, wait=True))
        assert [a["threshold"] for a in fired] == [50, 80, 100]
        assert [a["figure"] for a in fired] == [55, 85, 100]
        assert all(a["deliveries"] == {"wecom": "delivered"} for a in fired)
        texts = [m["json"]["markdown"]["content"] for m in receiver.on("/wecom")]
        assert len(texts) == 3 and all(f"the {t}% threshold" in x for t, x in zip((50, 80, 100), texts, strict=True))
        assert asyncio.run(engine.evaluate(NOON + 10 * 60_000, wait=True)) == []
        assert len(store.alerts.history()) == 3
    finally:
        store.close()
        receiver.close()


def test_deliveries_in_the_ledger(db_url):
    """The rows behind the outbox on each database: an alert is claimed once with its
    deliveries; one sender at a time takes an attempt; a stopped attempt is not counted; the
    history shows each channel's outcome."""
    store = Store(db_url)
    try:
        alerts = store.alerts
        row = {"rule": "r", "kind": "spike", "scope": "department=x", "period": "2026-11-25", "fired_at": NOON,
               "severity": "warning", "figure": 1.0, "baseline": None, "threshold": 2.0, "message": "a\nb",
               "title": "[tokenabacus] Usage spike: department=x", "unit": "tokens"}  # fmt: skip
        alert_id, keys = alerts.claim(row, ["a", "b", "c"], {"d": "dropped: full"})
        assert alerts.claim(row, ["a"]) is None  # the same (rule, scope, period): once
        # The cool-down looks up the last firing at the same threshold (0.3 is inexact in MariaDB's FLOAT).
        assert alerts.claim({**row, "period": "p2", "fired_at": NOON + 5, "threshold": 0.3}, []) is not None
        assert alerts.last_fired("r", "department=x", 2.0) == NOON
        assert alerts.last_fired("r", "department=x", 0.3) == NOON + 5
        assert alerts.last_fired("r", "department=x", 80.0) is None
        assert len(set(keys.values())) == 3 and all(len(k) == 32 for k in keys.values())
        assert alerts.backlog() == {"a": 1, "b": 1, "c": 1}
        (d,) = alerts.due("a", NOON + 1_000_000_000_000, 10)
        assert d.idempotency_key == keys["a"] and d.alert["message"] == "a\nb" and d.alert["id"] == alert_id
        far = NOON + 2_000_000_000_000
        assert alerts.begin_attempt(d.id, 0, far) and not alerts.begin_attempt(d.id, 0, far)  # one taker
        assert alerts.due("a", NOON + 1_000_000_000_000, 10) == []  # off limits while under way
        alerts.undo_attempt(d.id, 0)  # stopped mid-send: not counted, due again
        (again,) = alerts.due("a", NOON + 1_000_000_000_000, 10)
        assert again.attempts == 0 and again.idempotency_key == keys["a"]
        assert alerts.begin_attempt(d.id, 0, far)
        alerts.delivered(d.id)
        (b,) = alerts.due("b", NOON + 1_000_000_000_000, 10)
        assert alerts.begin_attempt(b.id, 0, far)
        alerts.retry(b.id, far, "HTTP 502: bad gateway")
        (c,) = alerts.due("c", NOON + 1_000_000_000_000, 10)
        alerts.failed(c.id, "HTTP 404: no such hook")
        assert alerts.next_due("b") == far and alerts.next_due("c") is None
        no_channel, h = alerts.history()  # newest first
        assert no_channel["deliveries"] == {}
        assert h["deliveries"] == {
            "a": "delivered",
            "b": "pending (last try: HTTP 502: bad gateway)",
            "c": "failed: HTTP 404: no such hook",
            "d": "failed: dropped: full",
        }
        assert alerts.abandon(["a", "c"]) == 1  # b's channel left the config: nothing can send it
        assert alerts.history()[1]["deliveries"]["b"] == f"{FAILED}: the channel is no longer configured"
        assert alerts.backlog() == {}
    finally:
        store.close()


@pytest.mark.parametrize("kind", ["dingtalk", "feishu", "webhook"])
def test_an_empty_signing_secret_is_refused_at_start(tmp_path, kind):
    cfg = {"alerts": {"channels": [{"name": "finance", "type": kind, "url": "https://robot.example/send?access_token=T0K3N",
                                    "secret": ""}]}}  # fmt: skip
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    for args in (["serve", "--port", str(free_port())], ["alerts", "list"]):
        r = subprocess.run(
            [str(BIN), *args, "--config", str(path), "--data-dir", str(tmp_path / "d")],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode == 2, r.stderr
        assert r.stderr.startswith("error: ") and len(r.stderr.strip().splitlines()) == 1
        assert "channel 'finance': secret is empty" in r.stderr and "T0K3N" not in r.stderr
    assert not (tmp_path / "d" / "ledger.db").exists()  # refused before anything was opened
