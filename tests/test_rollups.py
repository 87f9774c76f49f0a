"""Hourly rollups on SQLite, PostgreSQL and MariaDB: written by the real writer in the same
transaction as the records, they always equal the raw records aggregated by hour and dimension,
whatever the batches held (replayed duplicates, records set aside); a rebuild gives the same."""

from __future__ import annotations

import random
import subprocess
from bisect import bisect_left
from pathlib import Path

import orjson
from sqlalchemy import delete, select

from conftest import BIN
from tokenabacus.ledger import rollups
from tokenabacus.ledger.deadletter import DeadLetters
from tokenabacus.ledger.record import FIELDS, new_request_id
from tokenabacus.ledger.schema import meta, usage_records, usage_rollups, usage_rollups_daily
from tokenabacus.ledger.store import Store
from tokenabacus.ledger.writer import drain_segments

HOUR = 3_600_000
START = 1_774_000_000_000  # 2026-03-20 09:46:40 UTC: the window spans a month end and Europe's DST change
STATUSES = ["ok"] * 12 + ["error", "cancelled", "rejected"]


def random_records(rng: random.Random, n: int, start: int = START, hours: int = 24 * 16) -> list[dict]:
    """Records with a skewed mix of every dimension (some missing), figures (some unknown),
    prices in two currencies (some unpriced) and latencies over every histogram bucket."""
    out = []
    for _ in range(n):
        prompt = rng.choice([None, rng.randint(0, 4000)])
        completion = None if prompt is None else rng.randint(0, 2000)
        cost = rng.choice([None, None, rng.randint(0, 5_000_000)])
        source = rng.choice(["tokenizer", "tokenizer", "upstream", "engine", "estimated", None])
        # The upstream's figures: absent, equal to ours, or off by a few tokens.
        drift = rng.choice([None, 0, 0, rng.randint(-3, 3)])
        up_p = None if drift is None or prompt is None else max(0, prompt + drift)
        up_c = None if up_p is None or completion is None else completion
        out.append(
            {
                **dict.fromkeys(FIELDS),
                "request_id": new_request_id(),
                "timestamp": start + rng.randrange(hours * HOUR),
                "duration_ms": rng.choice([None, int(10 ** rng.uniform(0, 6.2)), rng.randint(-5, 40)]),
                "model": rng.choice(["qwen-7b", "qwen-7b", "llama-3", "smol", None]),
                "stream": rng.random() < 0.5,
                "status": rng.choice(STATUSES),
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": None if prompt is None else prompt + (completion or 0),
                "cached_tokens": rng.choice([None, 0, rng.randint(0, 100)]),
                "key_id": rng.choice(["key_a", "key_b", "key_c", None]),
                "user": rng.choice(["ann", "ben", "cai", "dai", ""]),
                "project": rng.choice(["alpha", "beta", "gamma", None]),
                "department": rng.choice(["sales", "rnd", "ops", None]),
                "cost_micros": cost,
                "currency": None if cost is None else rng.choice(["CNY", "CNY", "CNY", "USD"]),
                "price_version": None if cost is None else rng.choice(["pv_1", "pv_1", "pv_2"]),
                "usage_source": source,
                "upstream_prompt_tokens": up_p,
                "upstream_completion_tokens": up_c,
            }
        )
    return out


def raw_rollups(store: Store) -> dict[tuple, tuple]:
    """The rollups as they should be: every raw record summed by (hour, dimensions), in Python."""
    cols = [usage_records.c[c] for c in rollups.INPUT]
    with store.engine.connect() as conn:
        records = conn.execute(select(*cols)).all()
    out: dict[tuple, list[int]] = {}
    bounds = rollups.LATENCY_BOUNDS
    for ts, *dims_and_figures in records:
        width = len(rollups.DIMENSIONS)
        dims = tuple(v or "" for v in dims_and_figures[:width])
        prompt, completion, total, cached, cost, duration, source, up_p, up_c = dims_and_figures[width:]
        acc = out.setdefault((ts - ts % HOUR, *dims), [0] * len(rollups.FIGURES))
        acc[0] += 1
        for i, v in enumerate((prompt, completion, total, cached, cost), start=1):
            acc[i] += v or 0
        acc[6] += cost is not None
        if duration is not None:
            acc[7] += duration
            acc[14 + bisect_left(bounds, duration)] += 1
            acc[-1] = max(acc[-1], duration)
        differs = (prompt, completion) != (up_p, up_c)
        # Our count against the upstream's: billed from our tokenizer, or an upstream claim capped below it.
        if up_p is not None and up_c is not None and (source == "tokenizer" or (source == "upstream" and differs)):
            acc[8] += 1
            acc[9] += prompt or 0
            acc[10] += completion or 0
            acc[11] += up_p
            acc[12] += up_c
            acc[13] += differs
    return {k: tuple(v) for k, v in out.items()}


def stored_rollups(store: Store, table=usage_rollups) -> dict[tuple, tuple]:
    r = table.c
    with store.engine.connect() as conn:
        rows = conn.execute(select(r.hour, r.dims, *(r[c] for c in rollups.DIMENSIONS + rollups.FIGURES))).all()
    out = {}
    for hour, dims, *rest in rows:
        names = tuple(rest[: len(rollups.DIMENSIONS)])
        assert dims == rollups.digest(names)
        out[(hour, *names)] = tuple(int(v) for v in rest[len(rollups.DIMENSIONS) :])
    return out


def by_day(hourly: dict[tuple, tuple]) -> dict[tuple, tuple]:
    """What the daily rollups must hold: the hourly figures summed per UTC day (the longest
    duration, the last figure, by max)."""
    out: dict[tuple, list] = {}
    for (hour, *names), figs in hourly.items():
        key = (hour - hour % (24 * HOUR), *names)
        acc = out.setdefault(key, [0] * len(figs))
        acc[:-1] = [a + b for a, b in zip(acc[:-1], figs[:-1], strict=True)]
        acc[-1] = max(acc[-1], figs[-1])
    return {k: tuple(v) for k, v in out.items()}


def write_segment(spool: Path, seq: int, lines: list[bytes]) -> Path:
    spool.mkdir(parents=True, exist_ok=True)
    path = spool / f"seg-{seq:012d}.jsonl"
    path.write_bytes(b"".join(lines))
    return path


def test_rollups_equal_the_raw_records_after_replays_and_dead_letters(db_url, tmp_path):
    rng = random.Random(8)
    store = Store(db_url)
    spool = tmp_path / "spool"
    dead = DeadLetters(spool / "dead-letter.jsonl")
    try:
        records = random_records(rng, 1500)
        sent: list[dict] = []
        aside = 0
        for seq in range(1, 13):
            batch = [records.pop() for _ in range(min(len(records), rng.randint(1, 200)))]
            lines = [orjson.dumps(r) + b"\n" for r in batch]
            # Replays: records already written, some with other figures (the first one stands),
            # and a duplicate inside the same segment.
            for old in rng.sample(sent, min(len(sent), rng.randint(0, 40))):
                lines.append(orjson.dumps({**old, "prompt_tokens": 7, "duration_ms": 999_999}) + b"\n")
            if batch:
                lines.append(orjson.dumps({**batch[0], "total_tokens": 1}) + b"\n")
            # Dead letters: not JSON, a figure out of its column's range, a missing status.
            bad = {**random_records(rng, 1)[0], "completion_tokens": 2**40}
            lines += [
                b"{not json\n",
                orjson.dumps(bad) + b"\n",
                orjson.dumps({"request_id": "x", "timestamp": 1}) + b"\n",
            ]
            rng.shuffle(lines)  # whichever copy of a request_id comes first is the one stored
            done = drain_segments([write_segment(spool, seq, lines)], store.usage, [], dead)
            aside, sent = aside + done.set_aside, sent + batch
        assert aside == 12 * 3 and len(dead.path.read_bytes().splitlines()) == aside
        assert store.usage.count() == len(sent)
        expected = raw_rollups(store)
        assert stored_rollups(store) == expected
        assert sum(v[0] for v in expected.values()) == len(sent)
        days = by_day(expected)
        assert stored_rollups(store, usage_rollups_daily) == days and len(days) < len(expected)
        assert rollups.status(store.db) == {
            "complete": True,
            "daily_complete": True,
            "rollup_rows": len(expected),
            "daily_rows": len(days),
            "records_counted": len(sent),
            "records": len(sent),
        }
        # A rebuild from the raw records gives the same rows; so does one of damaged tables.
        assert rollups.rebuild(store.db, window_ms=7 * HOUR) == (len(sent), len(expected))
        assert stored_rollups(store) == expected and stored_rollups(store, usage_rollups_daily) == days
        with store.engine.begin() as conn:
            conn.execute(delete(usage_rollups).where(usage_rollups.c.status == "ok"))
            conn.execute(usage_rollups.update().values(requests=usage_rollups.c.requests + 1))
            conn.execute(delete(usage_rollups_daily).where(usage_rollups_daily.c.status == "error"))
        assert stored_rollups(store) != expected
        rollups.rebuild(store.db)
        assert stored_rollups(store) == expected and stored_rollups(store, usage_rollups_daily) == days
    finally:
        store.close()


def test_the_same_batch_twice_counts_once(db_url):
    store = Store(db_url)
    try:
        batch = random_records(random.Random(3), 300)
        assert store.usage.insert(batch) == 300
        once = stored_rollups(store)
        assert store.usage.insert(batch + batch[:10]) == 0
        assert store.usage.insert([]) == 0
        assert stored_rollups(store) == once == raw_rollups(store)
        assert stored_rollups(store, usage_rollups_daily) == by_day(once)
    finally:
        store.close()


def test_a_ledger_older_than_rollups_is_marked_only_by_a_rebuild(db_url):
    store = Store(db_url)
    try:
        records = random_records(random.Random(5), 200)
        store.usage.insert(records[:100])
        # As a ledger written before rollups existed: records, no rollups, no mark.
        with store.engine.begin() as conn:
            conn.execute(delete(usage_rollups))
            conn.execute(delete(meta).where(meta.c.key == rollups.COMPLETE_KEY))
        fresh = Store(db_url)  # a new process: its first write must not mark this ledger complete
        try:
            fresh.usage.insert(records[100:])
            assert not rollups.complete(fresh.db)
            assert rollups.rebuild(fresh.db)[0] == 200
            assert rollups.complete(fresh.db)
            assert stored_rollups(fresh) == raw_rollups(fresh)
        finally:
            fresh.close()
    finally:
        store.close()


def test_db_rollup_rebuild_command(tmp_path):
    data = tmp_path / "data"
    store = Store(f"sqlite:///{data / 'ledger.db'}")
    try:
        store.usage.insert(random_records(random.Random(9), 120))
        expected = stored_rollups(store)
        with store.engine.begin() as conn:
            conn.execute(delete(usage_rollups))
    finally:
        store.close()

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(BIN), "db", "rollup", *args, "--data-dir", str(data)], capture_output=True, text=True, timeout=60
        )

    r = run()
    assert r.returncode == 0, r.stderr
    assert "0 of the ledger's 120 records" in r.stdout and "--rebuild" in r.stdout
    r = run("--rebuild")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"rebuilt the hourly and daily rollups: 120 records in {len(expected)} hourly rows"
    shown = run().stdout
    assert "all 120 records" in shown and f"daily rollups: {len(by_day(expected))} rows" in shown
    store = Store(f"sqlite:///{data / 'ledger.db'}")
    try:
        assert stored_rollups(store) == expected
        assert stored_rollups(store, usage_rollups_daily) == by_day(expected)
    finally:
        store.close()
