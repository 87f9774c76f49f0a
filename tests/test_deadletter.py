"""A poisoned spool: records the ledger cannot take are set aside in the dead-letter file, and
every record behind them still reaches the database and the JSONL sink, at start, while
running, and through `tokenabacus db replay`. A database that is only unavailable keeps the
records in the spool instead."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time
from pathlib import Path

import httpx
import orjson
import pytest
from sqlalchemy import create_engine, text

from conftest import BIN, GatewayProc
from records import sample_records
from tokenabacus.ledger.store import Store

# Models pointing nowhere: the gateway starts in a moment and no request here needs one.
NOWHERE = [{"name": "m", "engine": "upstream", "base_url": "http://127.0.0.1:9/v1"}]


def good(n: int, project: str = "poison") -> list[dict]:
    return sample_records(n, lambda _: project)


def poisoned() -> list[tuple[bytes, str]]:
    """(spooled line, a phrase its dead-letter reason must contain)."""
    base = good(5)
    huge, text_count, bad_stream, as_bool, no_id = base
    huge["total_tokens"] = 2**63  # the figure that wedged the writer on SQLite
    text_count["prompt_tokens"] = "12"
    bad_stream["stream"] = "yes"
    as_bool["completion_tokens"] = True
    del no_id["request_id"]
    return [
        (orjson.dumps(huge) + b"\n", "total_tokens: 9223372036854775808 is out of range"),
        (orjson.dumps(text_count) + b"\n", "prompt_tokens: expected an integer"),
        (orjson.dumps(bad_stream) + b"\n", "stream: expected true or false"),
        (orjson.dumps(as_bool) + b"\n", "completion_tokens: expected an integer, got True"),
        (orjson.dumps(no_id) + b"\n", "request_id: missing"),
        (
            b'{"request_id": "req_x", "timestamp": 1, "stream": false, "status": "ok", '
            b'"prompt_tokens": 18446744073709551616}\n',
            "prompt_tokens: expected an integer, got 1.8446744073709552e+19",
        ),
        (b'{"request_id": "req_y", oops}\n', "not valid JSON"),
        (b"[1, 2, 3]\n", "not a JSON object"),
    ]


def write_segment(spool: Path, seq: int, goods: list[dict], bads: list[tuple[bytes, str]]) -> None:
    """Bad lines between good ones, and a torn last line (never acknowledged) at the end."""
    spool.mkdir(parents=True, exist_ok=True)
    lines = [orjson.dumps(r) + b"\n" for r in goods]
    for i, (line, _) in enumerate(bads):
        lines.insert(min(len(lines), 1 + 2 * i), line)
    tmp = spool / f"incoming-{seq}.tmp"  # renamed into place whole: a live writer may be looking
    tmp.write_bytes(b"".join(lines) + b'{"request_id": "req_torn", "tim')
    tmp.rename(spool / f"seg-{seq:012d}.jsonl")


def dead_letters(spool: Path) -> list[dict]:
    path = spool / "dead-letter.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def jsonl_ids(data: Path) -> list[str]:
    return [json.loads(line)["request_id"] for line in (data / "usage.jsonl").read_text().splitlines()]


def wait_for(predicate, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def health(gw: GatewayProc, admin: bool = False) -> dict:
    headers = {"Authorization": f"Bearer {gw.admin_key}"} if admin else {}
    return httpx.get(gw.base_url.removesuffix("/v1") + "/health", headers=headers).json()["ledger"]


def test_poisoned_spool_is_set_aside_at_start_and_while_running(db_url, tmp_path):
    data = tmp_path / "data"
    spool = data / "spool"
    goods, bads = good(20), poisoned()
    goods[3]["model"] = "a\x00b"  # PostgreSQL refuses NUL in text: stored as U+FFFD, not set aside
    write_segment(spool, 1, goods, bads)
    gw = GatewayProc(data, {"models": NOWHERE, "ledger": {"url": db_url}}).start()  # a restart used to fail here
    try:
        store = Store(db_url)
        try:
            ids = store.usage.request_ids()
        finally:
            store.close()
        assert {r["request_id"] for r in goods} <= ids and "req_torn" not in ids and "req_x" not in ids
        assert {r["request_id"] for r in goods} == set(jsonl_ids(data))  # the sink saw exactly the good ones
        letters = dead_letters(spool)
        assert len(letters) == len(bads)
        for letter, (line, reason) in zip(letters, bads, strict=True):
            assert reason in letter["reason"] and letter["segment"] == "seg-000000000001.jsonl"
            assert letter["line"] == line.decode().rstrip("\n")  # kept as spooled, to be mended
        assert health(gw) == {"ok": True, "dead_letters": len(bads)}
        assert "set aside" in gw.log.read_text() and " ERROR " in gw.log.read_text()

        # The running writer meets another poisoned segment: the records behind it still move.
        later = good(5, project="later")
        huge = good(1)[0]
        huge["prompt_tokens"] = 2**40  # fits SQLite, not PostgreSQL's or MariaDB's INTEGER
        write_segment(spool, 0, later, [(orjson.dumps(huge) + b"\n", "out of range for a 32-bit")])  # seq 0: never live
        wait_for(lambda: health(gw)["dead_letters"] == len(bads) + 1)
        store = Store(db_url)
        try:
            assert wait_for(lambda: {r["request_id"] for r in later} <= store.usage.request_ids())
            assert huge["request_id"] not in store.usage.request_ids()
        finally:
            store.close()
        detail = health(gw, admin=True)
        assert (
            detail["ok"]
            and detail["last_error"] is None
            and detail["dead_letter_file"] == str(spool / "dead-letter.jsonl")
        )
        assert "out of range for a 32-bit" in dead_letters(spool)[-1]["reason"]
    finally:
        gw.stop()
    # The count survives a restart: it is what waits in the file.
    gw.start()
    try:
        assert health(gw)["dead_letters"] == len(bads) + 1
    finally:
        gw.stop()


@pytest.fixture
def refusing_db(db_url, tmp_path):
    """A ledger whose database refuses negative prompt_tokens: a row that passes the writer's
    checks and is still refused, as a data or integrity error, by the database itself."""
    if db_url.startswith("mysql"):
        pytest.skip("MariaDB's INSERT IGNORE turns a CHECK violation into a warning")
    Store(db_url).close()  # create the tables
    engine = create_engine(db_url)
    with engine.begin() as conn:
        if db_url.startswith("sqlite"):
            conn.execute(
                text(
                    "CREATE TRIGGER no_negative BEFORE INSERT ON usage_records WHEN NEW.prompt_tokens < 0 "
                    "BEGIN SELECT RAISE(ABORT, 'prompt_tokens must not be negative'); END"
                )
            )
        else:
            conn.execute(text("ALTER TABLE usage_records ADD CONSTRAINT no_negative CHECK (prompt_tokens >= 0)"))
    engine.dispose()
    return db_url


def test_rows_the_database_refuses_are_set_aside(refusing_db, tmp_path):
    data = tmp_path / "data"
    goods = good(10)
    refused = good(1)[0]
    refused["prompt_tokens"] = -5
    write_segment(data / "spool", 1, goods, [(orjson.dumps(refused) + b"\n", "")])
    gw = GatewayProc(data, {"models": NOWHERE, "ledger": {"url": refusing_db}}).start()
    try:
        store = Store(refusing_db)
        try:
            ids = store.usage.request_ids()
        finally:
            store.close()
        assert ids == {r["request_id"] for r in goods}
        (letter,) = dead_letters(data / "spool")
        assert letter["reason"].startswith("the database refused it: IntegrityError")
        assert refused["request_id"] in letter["line"]
        assert health(gw) == {"ok": True, "dead_letters": 1}
    finally:
        gw.stop()


def test_db_replay_sets_aside_and_feeds_the_sinks(tmp_path):
    data = tmp_path / "data"
    goods, bads = good(12), poisoned()
    write_segment(data / "spool", 1, goods, bads)
    write_segment(data / "spool", 2, good(3, project="second"), [])
    r = subprocess.run([str(BIN), "db", "replay", "--data-dir", str(data)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr + r.stdout
    assert r.stdout.strip().splitlines() == [
        f"replayed 15 records from {data / 'spool'}; {len(bads)} set aside in "
        f"{data / 'spool' / 'dead-letter.jsonl'} (see the log above)"
    ]
    assert len(dead_letters(data / "spool")) == len(bads)
    assert not list((data / "spool").glob("seg-*.jsonl"))
    store = Store(f"sqlite:///{data / 'ledger.db'}")
    try:
        assert store.usage.count() == 15
    finally:
        store.close()
    # Every record reaches every sink, whichever process moved it.
    assert len(jsonl_ids(data)) == 15 and {r["request_id"] for r in goods} <= set(jsonl_ids(data))


def test_a_busy_database_keeps_the_records_in_the_spool(tmp_path):
    """Not a bad record: SQLite locked by another writer for longer than the busy timeout. The
    segment waits, nothing is set aside, and the records move once the database is free."""
    data = tmp_path / "data"
    gw = GatewayProc(data, {"models": NOWHERE}).start()
    try:
        key = gw.create_key()
        blocker = sqlite3.connect(data / "ledger.db", isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")  # holds the write lock
        try:
            r = httpx.post(
                gw.base_url + "/chat/completions",
                headers={"Authorization": f"Bearer {key}"},
                json={"model": "nope", "messages": [{"role": "user", "content": "hi"}]},
            )
            assert r.status_code == 404  # a rejected request is recorded too
            request_id = r.headers["x-request-id"]
            detail = wait_for(lambda: (h := health(gw, admin=True))["last_error"] and h, timeout=30)
            assert detail["ok"] is False and "locked" in detail["last_error"] and detail["dead_letters"] == 0
            assert any(request_id in p.read_text() for p in (data / "spool").glob("seg-*.jsonl"))
            # /admin fails with OpenAI's error JSON too when its database call does.
            r = httpx.post(
                gw.base_url.removesuffix("/v1") + "/admin/keys",
                json={"user": "x"},
                timeout=60,
                headers={"Authorization": f"Bearer {gw.admin_key}"},
            )
            assert r.status_code == 500 and r.json()["error"]["code"] == "internal_error"
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        assert gw.record(request_id, timeout=30)["status"] == "rejected"
        assert wait_for(lambda: health(gw)["ok"], timeout=30)
        assert not (data / "spool" / "dead-letter.jsonl").exists()
    finally:
        gw.stop()
