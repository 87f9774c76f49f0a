"""The ledger's storage: idempotent batched inserts on SQLite, PostgreSQL and MariaDB (real
servers), the gateway writing to each, and the JSONL sink."""

from __future__ import annotations

import json
import time

from sqlalchemy import text

from conftest import EMBEDDED, GatewayProc
from records import sample_records
from tokenabacus.ledger.record import FIELDS
from tokenabacus.ledger.store import Store
from tokenabacus.observe.jsonl import JsonlSink


def _records(n: int) -> list[dict]:
    return sample_records(n)


def test_insert_is_idempotent_on_request_id(db_url):
    store = Store(db_url)
    try:
        recs = _records(50)
        store.usage.insert(recs[:30])
        store.usage.insert(recs)  # a replay overlapping what is already there
        store.usage.insert(recs[10:20])
        assert store.usage.count() == 50
        rows = {r["request_id"]: r for r in store.usage.latest(limit=100)}
        for r in recs:
            got = rows[r["request_id"]]
            assert {f: got[f] for f in FIELDS} == {f: r[f] for f in FIELDS}
    finally:
        store.close()


def test_overlong_strings_are_clipped_not_fatal(db_url):
    store = Store(db_url)
    try:
        rec = _records(1)[0]
        rec["model"] = "m" * 5000
        rec["user_agent"] = "ua" * 1000
        store.usage.insert([rec])
        row = store.usage.latest(limit=1)[0]
        assert row["model"] == "m" * 200 and len(row["user_agent"]) == 500
    finally:
        store.close()


def test_gateway_writes_to_database(db_url, tmp_path):
    gw = GatewayProc(tmp_path / "data", {"ledger": {"url": db_url}, "sinks": {"jsonl": {"enabled": False}}}).start()
    try:
        key = gw.create_key(user="erin", project="db", department="ops")
        raw = gw.client(key).chat.completions.with_raw_response.create(
            model=EMBEDDED, messages=[{"role": "user", "content": "数据库"}], max_tokens=2
        )
        request_id = raw.headers["x-request-id"]
        store = Store(db_url)
        deadline = time.monotonic() + 10
        row = None
        while time.monotonic() < deadline and row is None:
            row = next((r for r in store.usage.latest(limit=10) if r["request_id"] == request_id), None)
            time.sleep(0.1)
        store.close()
        assert row is not None and row["user"] == "erin" and row["total_tokens"] == raw.parse().usage.total_tokens
    finally:
        gw.stop()


def test_jsonl_sink_lines_use_contract_names(embedded_gw, embedded_key):
    raw = embedded_gw.client(embedded_key).chat.completions.with_raw_response.create(
        model=EMBEDDED, messages=[{"role": "user", "content": "ELK"}], max_tokens=2
    )
    request_id = raw.headers["x-request-id"]
    embedded_gw.record(request_id)
    lines = (embedded_gw.data_dir / "usage.jsonl").read_text().splitlines()
    entry = next(json.loads(line) for line in lines if request_id in line)
    assert list(entry) == list(FIELDS)
    assert entry["model"] == EMBEDDED and entry["project"] == "campaign-2024"
    assert entry["total_tokens"] == raw.parse().usage.total_tokens


def test_jsonl_sink_rotates_by_size_and_keeps_n(tmp_path):
    sink = JsonlSink(tmp_path / "usage.jsonl", rotate_bytes=2048, rotate_daily=True, keep=3)
    written = []
    for _ in range(20):
        batch = _records(5)
        written += [r["request_id"] for r in batch]
        sink.write([json.dumps(r).encode() + b"\n" for r in batch])
    sink.close()
    files = sorted(tmp_path.glob("usage*.jsonl"))
    assert 2 <= len(files) <= 4  # the live file plus at most `keep` rotated ones
    for f in files:
        assert f.stat().st_size < 2048 + 5 * 1024
    ids = [json.loads(line)["request_id"] for f in files for line in f.read_text().splitlines()]
    assert ids == sorted(ids, key=written.index)  # nothing reordered
    assert set(ids) <= set(written) and ids[-1] == written[-1]


def test_sqlite_is_in_wal_mode(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'l.db'}")
    with store.engine.connect() as c:
        assert c.execute(text("PRAGMA journal_mode")).scalar() == "wal"
    store.close()
