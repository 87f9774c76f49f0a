"""`tokenabacus reports send NAME --now` through the real CLI to a local WeCom receiver, at a fixed
moment (`--as-of`): asked at 05:45 Beijing time on 12-08, before the day's 09:00 send time, a daily
report covers yesterday (12-07), not the day before; a weekly one the week that ended. The Chinese
message is Chinese to its last line: its fields' labels too, its time in Beijing time, no UTC
stamp; `alerts test` reads the same."""

from __future__ import annotations

import re
import subprocess
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import yaml

from conftest import BIN
from receivers import Receiver
from tokenabacus.ledger.record import FIELDS, new_request_id
from tokenabacus.ledger.store import Store

ZONE = "Asia/Shanghai"
TZ = ZoneInfo(ZONE)
# Requests per Beijing day: the day before yesterday, yesterday, and today before dawn.
DAYS = {datetime(2026, 12, 6, 14, tzinfo=TZ): 3, datetime(2026, 12, 7, 10, tzinfo=TZ): 5,
        datetime(2026, 12, 8, 0, 30, tzinfo=TZ): 1}  # fmt: skip


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def record(when: datetime, department: str) -> dict:
    return {
        **dict.fromkeys(FIELDS),
        "request_id": new_request_id(),
        "timestamp": int(when.timestamp() * 1000),
        "model": "qwen-7b",
        "status": "ok",
        "stream": False,
        "department": department,
        "project": f"{department}-p",
        "user": f"{department}-u",
        "key_id": f"key_{department}",
        "prompt_tokens": 100,
        "completion_tokens": 20,
        "total_tokens": 120,
        "duration_ms": 300,
    }


def setup(tmp_path: Path, receiver: Receiver, language: str = "zh"):
    tmp_path.mkdir(exist_ok=True)
    data = tmp_path / "data"
    cfg = {
        "governance": {"timezone": ZONE},
        "alerts": {
            "language": language,
            "channels": [{"name": "wecom", "type": "wecom", "url": receiver.url("/wecom?key=K")}],
            "schedules": [{"name": "日报", "every": "day", "at": "09:00", "channels": ["wecom"]},
                          {"name": "周报", "every": "week", "weekday": "mon", "at": "09:00", "channels": ["wecom"]}],
        },
    }  # fmt: skip
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg, allow_unicode=True))
    store = Store(f"sqlite:///{data / 'ledger.db'}")
    try:
        store.usage.insert([record(when + timedelta(minutes=i), "rd") for when, n in DAYS.items() for i in range(n)])
    finally:
        store.close()

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(BIN), *args, "--config", str(path), "--data-dir", str(data)],
            capture_output=True,
            text=True,
            timeout=120,
        )

    return cli


def fields(content: str) -> list[str]:
    """The message's last block: its field lines (``- **label**: value``)."""
    return [line for line in content.splitlines() if re.match(r"^- \*\*[^*]+\*\*: ", line)]


def test_a_daily_report_asked_before_dawn_covers_yesterday(tmp_path, receiver):
    cli = setup(tmp_path, receiver)
    r = cli("reports", "send", "日报", "--now", "--as-of", "2026-12-08T05:45")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["日报 for 2026-12-07", "wecom: sent"]
    (msg,) = receiver.on("/wecom")
    content = msg["json"]["markdown"]["content"]
    assert "用量报告 2026-12-07" in content and "周期：2026-12-07（Asia/Shanghai）" in content
    assert "合计：5 次请求，600 Token" in content  # yesterday's five requests, not the 6th's three
    # Chinese to the last line: the fields' labels, the severity, the time in Beijing time.
    shown = fields(content)
    assert [line.split("**")[1] for line in shown] == ["报告", "级别", "时间"], shown
    assert shown[0] == "- **报告**: 日报" and shown[1] == "- **级别**: 提示"
    when = re.fullmatch(r"- \*\*时间\*\*: (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) Asia/Shanghai", shown[2])
    assert when, shown[2]
    sent = datetime.fromisoformat(when.group(1)).replace(tzinfo=TZ)
    assert abs((datetime.now(TZ) - sent).total_seconds()) < 120  # sent now, shown in Beijing time
    assert not re.search(r"rule|severity|fired_at|\d\dZ\b", content), content

    # The same asked a day later at noon (after the send time) covers 12-08; a weekly report asked
    # on Monday 12-07 before its 09:00 covers the week that ended (Monday 11-30 to Sunday 12-06).
    r = cli("reports", "send", "日报", "--now", "--as-of", "2026-12-09T12:00")
    assert r.stdout.splitlines()[0] == "日报 for 2026-12-08"
    r = cli("reports", "send", "周报", "--now", "--as-of", "2026-12-07T08:00")
    assert r.returncode == 0 and r.stdout.splitlines()[0].startswith("周报 for "), r.stdout
    assert "2026-11-30" in r.stdout
    week = receiver.on("/wecom")[-1]["json"]["markdown"]["content"]
    assert "合计：3 次请求" in week  # Monday 11-30 to Sunday 12-06: the 6th's three

    r = cli("reports", "send", "日报", "--now", "--as-of", "yesterday")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "--as-of" in r.stderr


def test_an_english_report_and_a_chinese_test_message(tmp_path, receiver):
    cli = setup(tmp_path, receiver, language="en")
    r = cli("reports", "send", "日报", "--now", "--as-of", "2026-12-08T05:45")
    assert r.returncode == 0 and r.stdout.startswith("日报 for 2026-12-07"), r.stdout + r.stderr
    content = receiver.on("/wecom")[0]["json"]["markdown"]["content"]
    shown = fields(content)
    assert [line.split("**")[1] for line in shown] == ["report", "severity", "fired_at"], shown
    assert shown[-1].endswith(" Asia/Shanghai"), shown  # local time, named, in English too

    cli = setup(tmp_path / "zh", receiver)
    r = cli("alerts", "test")
    assert r.returncode == 0, r.stderr
    content = receiver.on("/wecom")[-1]["json"]["markdown"]["content"]
    assert "测试消息" in content
    assert [line.split("**")[1] for line in fields(content)] == ["规则", "级别", "时间"]
    assert not re.search(r"rule|severity|fired_at|\d\dZ\b", content), content
