"""`tokenabacus demo seed`: a realistic month in a sandbox ledger, through the real CLI, checked
with SQL and with the real reports (the CLI's `report` commands)."""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from conftest import BIN, DATABASES, drop_ledger, service_available

RECORDS = 6_000
SEED = "7"
UNTIL = (datetime.now(UTC) - timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M")  # pinned: runs compare


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run([str(BIN), *args], capture_output=True, text=True, timeout=180)
    if check:
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    return r


def seed(data_dir: Path, *extra: str, check: bool = True) -> subprocess.CompletedProcess:
    return cli(
        "demo",
        "seed",
        "--data-dir",
        str(data_dir),
        "--records",
        str(RECORDS),
        "--seed",
        SEED,
        "--tz",
        "UTC",
        "--until",
        UNTIL,
        *extra,
        check=check,
    )


def rows(data_dir: Path, sql: str, args: tuple = ()) -> list[tuple]:
    with sqlite3.connect(data_dir / "ledger.db") as db:
        return db.execute(sql, args).fetchall()


@pytest.fixture(scope="module")
def seeded(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    data_dir = tmp_path_factory.mktemp("demo") / "data"
    return data_dir, seed(data_dir, "--print-keys")


def test_the_count_asked_and_the_summary(seeded):
    data_dir, out = seeded
    assert rows(data_dir, "SELECT COUNT(*) FROM usage_records") == [(RECORDS,)]
    tokens, cost = rows(data_dir, "SELECT SUM(total_tokens), SUM(cost_micros) FROM usage_records")[0]
    summary = out.stdout
    assert f"seeded {RECORDS:,} records" in summary
    assert f"{tokens:,} tokens costing ¥{cost // 10**6}.{cost % 10**6:06d}" in summary
    assert "6 departments, 15 projects, 60 users" in summary and "6 models" in summary
    assert "next: tokenabacus serve --data-dir" in summary and "/console" in summary
    member, viewer = re.findall(r"(?:member|viewer) key of .*: (sk-\S+)", summary)
    assert member != viewer
    assert out.stderr == ""


def test_every_name_is_in_the_organization(seeded):
    data_dir, _ = seeded
    assert rows(data_dir, "SELECT COUNT(*) FROM departments") == [(6,)]
    for column, table in (("department", "departments"), ("project", "projects"), ("user", "users")):
        missing = rows(
            data_dir,
            f'SELECT DISTINCT r."{column}" FROM usage_records r LEFT JOIN {table} o ON o.name = r."{column}" '
            "WHERE o.name IS NULL",
        )
        assert missing == [], (column, missing)
    # Each record's project and department are its user's, and its key is its user's live key.
    wrong = rows(
        data_dir,
        'SELECT COUNT(*) FROM usage_records r JOIN users u ON u.name = r."user" '
        "LEFT JOIN api_keys k ON k.key_id = r.key_id "
        'WHERE u.project != r.project OR u.department != r.department OR k."user" IS NOT r."user"',
    )
    assert wrong == [(0,)]
    per_user = dict(rows(data_dir, 'SELECT "user", COUNT(*) FROM api_keys WHERE role = \'member\' GROUP BY "user"'))
    assert len(per_user) == 60 and set(per_user.values()) == {1, 2}
    assert rows(data_dir, "SELECT scope_kind, scope_value FROM api_keys WHERE role = 'viewer'") == [
        ("department", "marketing")
    ]
    models = dict(rows(data_dir, "SELECT model, COUNT(*) FROM usage_records GROUP BY model"))
    assert len(models) == 6 and "smollm2-135m-instruct" in models
    statuses = dict(rows(data_dir, "SELECT status, COUNT(*) FROM usage_records GROUP BY status"))
    assert set(statuses) == {"ok", "error", "cancelled", "rejected"}
    assert 0.02 < statuses["error"] / RECORDS < 0.06


def test_costs_are_the_price_books(seeded):
    """Recomputed here from the price_versions rows: the version in force at the record's start,
    (uncached prompt x input + cached x cached price + completion x output) / 1M, half up."""
    data_dir, _ = seeded
    versions: dict[str, list[tuple]] = {}
    for v in rows(
        data_dir,
        "SELECT model, effective_from, version_id, currency, input_per_mtok_micros, cached_per_mtok_micros, "
        "output_per_mtok_micros FROM price_versions ORDER BY effective_from",
    ):
        versions.setdefault(v[0], []).append(v[1:])
    assert len(versions["deepseek-v3"]) == 2  # a price cut part-way through the month
    sample = rows(
        data_dir,
        "SELECT model, timestamp, prompt_tokens, completion_tokens, cached_tokens, cost_micros, price_version, "
        "currency, status FROM usage_records ORDER BY request_id LIMIT 1500",
    )
    priced = 0
    for model, ts, prompt, completion, cached, cost, version, currency, status in sample:
        in_force = [v for v in versions.get(model, []) if v[0] <= ts]
        if not in_force or prompt is None:
            assert (cost, version, currency) == (None, None, None), (model, status)
            continue
        _, vid, cur, inp, cached_price, out = in_force[-1]
        hit = min(cached or 0, prompt)
        exact = (prompt - hit) * inp + hit * (inp if cached_price is None else cached_price) + completion * out
        assert (cost, version, currency) == ((exact + 500_000) // 1_000_000, vid, cur)
        priced += 1
    assert priced > 1000
    unpriced = rows(data_dir, "SELECT COUNT(*) FROM usage_records WHERE model = 'internal-finetune-v2'")[0][0]
    assert unpriced > 0 and "internal-finetune-v2" not in versions


def test_report_suspicious_finds_the_burst(seeded):
    data_dir, _ = seeded
    since = (datetime.fromisoformat(UNTIL) - timedelta(days=1)).date().isoformat()
    out = cli(
        "report", "suspicious", "--since", since, "--until", UNTIL, "--data-dir", str(data_dir), "--format", "json"
    )
    found = json.loads(out.stdout)
    assert found, out.stdout
    burst = found[0]
    assert burst["peak_requests_per_minute"] >= 60 and burst["requests_ratio"] >= 5
    agents = rows(data_dir, "SELECT DISTINCT user_agent FROM usage_records WHERE key_id = ?", (burst["key_id"],))
    assert ("python-requests/2.32.3",) in agents


def test_report_drift_shows_differences(seeded):
    data_dir, _ = seeded
    since = (datetime.fromisoformat(UNTIL) - timedelta(days=30)).date().isoformat()
    out = cli(
        "report", "drift", "--since", since, "--differences-only", "--data-dir", str(data_dir), "--format", "json"
    )
    days = [r for r in json.loads(out.stdout) if r.get("row", "group") == "group"]
    assert days and all(r["mismatched_requests"] > 0 for r in days)
    assert any(r["prompt_difference"] != 0 for r in days)


def test_quotas_requests_and_alerts(seeded):
    data_dir, _ = seeded
    pending = rows(data_dir, "SELECT scope_kind, scope_value, reason FROM quota_requests WHERE status = 'pending'")
    assert len(pending) == 3 and all(reason for *_, reason in pending)
    status = json.loads(cli("quota", "status", "--data-dir", str(data_dir), "--format", "json").stdout)
    assert len(status) == 5
    assert any(r["name"] == "campaign-618" and 0.8 <= r["used"] / r["limit"] < 1 for r in status), status
    kinds = {k for (k,) in rows(data_dir, "SELECT kind FROM alert_events")}
    assert {"burst", "spike", "error_rate"} <= kinds


def test_a_ledger_with_records_is_refused(seeded):
    data_dir, _ = seeded
    before = rows(data_dir, "SELECT (SELECT COUNT(*) FROM usage_records), (SELECT COUNT(*) FROM api_keys)")
    r = seed(data_dir, check=False)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.startswith("error: ") and len(r.stderr.strip().splitlines()) == 1
    assert "--force" in r.stderr
    assert rows(data_dir, "SELECT (SELECT COUNT(*) FROM usage_records), (SELECT COUNT(*) FROM api_keys)") == before


def test_the_same_seed_gives_the_same_month(seeded, tmp_path):
    data_dir, _ = seeded
    seed(tmp_path / "again")
    sql = (
        'SELECT COUNT(*), SUM(total_tokens), SUM(cost_micros), SUM(duration_ms), COUNT(DISTINCT "user"), '
        "SUM(status = 'error') FROM usage_records"
    )
    assert rows(tmp_path / "again", sql) == rows(data_dir, sql)
    by_day = "SELECT timestamp / 86400000, department, SUM(total_tokens) FROM usage_records GROUP BY 1, 2 ORDER BY 1, 2"
    assert rows(tmp_path / "again", by_day) == rows(data_dir, by_day)


def test_seeding_postgresql(tmp_path):
    url, port, name = DATABASES["postgresql"]
    service_available("127.0.0.1", port, name)
    drop_ledger(url)
    try:
        config = tmp_path / "tokenabacus.yaml"
        config.write_text(yaml.safe_dump({"ledger": {"url": url}}))
        out = cli("demo", "seed", "--config", str(config), "--data-dir", str(tmp_path), "--records", "3000")
        assert "seeded 3,000 records" in out.stdout
        from sqlalchemy import create_engine, text

        engine = create_engine(url)
        try:
            with engine.connect() as conn:
                count, tokens = conn.execute(text("SELECT COUNT(*), SUM(total_tokens) FROM usage_records")).one()
                pending = conn.execute(text("SELECT COUNT(*) FROM quota_requests WHERE status = 'pending'")).scalar()
                users = conn.execute(text("SELECT COUNT(*) FROM users")).scalar()
        finally:
            engine.dispose()
        assert (count, pending, users) == (3000, 3, 60)
        assert f"{tokens:,} tokens" in out.stdout
        again = cli("demo", "seed", "--config", str(config), "--data-dir", str(tmp_path), check=False)
        assert again.returncode == 2 and len(again.stderr.strip().splitlines()) == 1
    finally:
        drop_ledger(url)
