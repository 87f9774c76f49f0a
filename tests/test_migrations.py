"""Schema migrations on SQLite, PostgreSQL and MariaDB (real servers): a new ledger is built by
the migrations and matches the tables the code uses, an older ledger made before migrations is
adopted with its records, and several processes opening one new ledger at once migrate it once."""

from __future__ import annotations

import subprocess

import yaml
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import column, create_engine, func, select, table, text

from conftest import BIN
from tokenabacus.ledger import migrate
from tokenabacus.ledger.record import start_record
from tokenabacus.ledger.schema import metadata, usage_records
from tokenabacus.ledger.store import Store


def test_new_ledger_is_built_by_migrations_and_matches_the_schema(db_url):
    store = Store(db_url)
    try:
        assert migrate.current(store.engine) == migrate.head()
        with store.engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn), metadata) == []
        assert migrate.upgrade(store.engine) is False  # already current: nothing to do
    finally:
        store.close()


def as_written_before_0010(rec) -> dict:
    """A record as releases before revision 0010 wrote it: without the fields added since."""
    return {k: v for k, v in rec.to_dict().items() if k != "model_alias"}


def make_first_release_tables(engine) -> None:
    """What releases before migrations made with create_all: revision 0001's tables, unstamped."""
    from alembic import command

    with engine.begin() as conn:
        command.upgrade(migrate._config(conn), "0001")
        conn.execute(text("DROP TABLE alembic_version"))


def test_keys_of_an_older_ledger_become_members_and_keep_working(db_url):
    engine = create_engine(db_url)
    make_first_release_tables(engine)
    with engine.begin() as conn:
        # The 0001 columns only (sqlalchemy's lightweight table quotes "user" for each database).
        old = table(
            "api_keys", column("key_id"), column("key_hash"), column("prefix"), column("user"), column("created_at")
        )
        conn.execute(old.insert().values(key_id="key_old", key_hash="h", prefix="sk-abc", user="alice", created_at=1))
    engine.dispose()
    store = Store(db_url)
    try:
        (row,) = store.keys.list()
        assert row["key_id"] == "key_old" and row["role"] == "member" and row["scope_kind"] is None
    finally:
        store.close()


def test_ledger_made_before_migrations_is_adopted_with_its_records(db_url):
    engine = create_engine(db_url)
    make_first_release_tables(engine)
    rec = start_record(model="m", endpoint="/v1/chat/completions", prompt_tokens=3, completion_tokens=4)
    rec.finish()
    with engine.begin() as conn:
        conn.execute(usage_records.insert(), [as_written_before_0010(rec)])
    engine.dispose()

    store = Store(db_url)
    try:
        assert migrate.current(store.engine) == migrate.head()
        assert [r["request_id"] for r in store.usage.latest()] == [rec.request_id]
    finally:
        store.close()


def test_concurrent_openers_migrate_a_new_ledger_once(db_url, tmp_path):
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({"ledger": {"url": db_url}}))
    cmd = [str(BIN), "db", "upgrade", "--config", str(tmp_path / "c.yaml"), "--data-dir", str(tmp_path / "d")]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(4)]
    results = [p.communicate(timeout=120) + (p.returncode,) for p in procs]
    assert all(rc == 0 for _, _, rc in results), results
    assert all(f"schema revision {migrate.head()} (newest)" in out for out, _, _ in results)
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(select(func.count()).select_from(usage_records)).scalar() == 0
            assert compare_metadata(MigrationContext.configure(conn), metadata) == []
    finally:
        engine.dispose()


def test_db_upgrade_hides_the_password(tmp_path):
    """Nothing reachable here: the command fails with one line that does not show the password."""
    (tmp_path / "c.yaml").write_text(
        yaml.safe_dump({"ledger": {"url": "postgresql+psycopg://ledger:hunter2@127.0.0.1:1/none"}})
    )
    r = subprocess.run(
        [str(BIN), "db", "upgrade", "--config", str(tmp_path / "c.yaml"), "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2
    assert "hunter2" not in r.stderr + r.stdout
    assert r.stderr.startswith("error: cannot open the ledger at postgresql+psycopg://ledger:***@127.0.0.1:1/none")
    assert len(r.stderr.strip().splitlines()) == 1


def test_rollups_made_before_price_versions_are_cleared_and_rebuilt(db_url):
    """Revision 0004 adds a dimension to the rollups' key: rows made before it cannot be split by
    it, so they go and reports read raw records (still right) until `db rollup --rebuild`."""
    from alembic import command

    from tokenabacus.billing.reports import ReportQuery, run_report
    from tokenabacus.ledger import rollups

    engine = create_engine(db_url)
    with engine.begin() as conn:
        command.upgrade(migrate._config(conn), "0003")
    rec = start_record(model="m", endpoint="/v1/chat/completions", prompt_tokens=3, completion_tokens=4)
    rec.finish()
    rec.cost_micros, rec.currency, rec.price_version = 17, "CNY", "pv_1"
    hour = rec.timestamp - rec.timestamp % rollups.HOUR_MS
    with engine.begin() as conn:
        conn.execute(usage_records.insert(), [as_written_before_0010(rec)])
        zeros = dict.fromkeys(
            ["department", "project", "user", "key_id", "status", "currency"], ""
        )  # the 0003 key's other dimensions
        figures = [c.name for c in metadata.tables["usage_rollups"].columns if c.name.startswith("lat_")]
        figures += ["prompt_tokens", "completion_tokens", "total_tokens", "cached_tokens", "cost_micros"]
        figures += ["priced_requests", "duration_ms", "duration_max_ms"]
        full = table("usage_rollups", *(column(c) for c in ["hour", "dims", "model", "requests", *zeros, *figures]))
        conn.execute(
            full.insert().values(hour=hour, dims="x", model="m", requests=1, **zeros, **dict.fromkeys(figures, 0))
        )
        conn.execute(
            table("meta", column("key"), column("value")).insert().values(key="usage_rollups", value="complete")
        )
    engine.dispose()
    store = Store(db_url)
    try:
        assert migrate.current(store.engine) == migrate.head()
        assert rollups.status(store.db) == {
            "complete": False,
            "daily_complete": False,  # 0007: daily rollups of a ledger with records wait for the rebuild too
            "rollup_rows": 0,
            "daily_rows": 0,
            "records_counted": 0,
            "records": 1,
        }
        rep = run_report(store, ReportQuery(by=("price_version",)))
        assert not rep.from_rollups and rep.rows[0]["price_version"] == "pv_1" and rep.total["cost_micros"] == 17
        assert rollups.rebuild(store.db) == (1, 1)
        assert rollups.status(store.db)["daily_complete"] and rollups.status(store.db)["daily_rows"] == 1
        rep = run_report(store, ReportQuery(by=("price_version",)))
        assert rep.from_rollups and rep.rows[0]["price_version"] == "pv_1" and rep.total["cost_micros"] == 17
    finally:
        store.close()


def test_alerts_fired_before_0008_keep_their_outcomes(db_url):
    """Revision 0008 moves each channel's outcome into a row of its own: an alert fired before
    keeps the outcomes it recorded as JSON, and the history reads both kinds."""
    from alembic import command

    engine = create_engine(db_url)
    with engine.begin() as conn:
        command.upgrade(migrate._config(conn), "0007")
        old = table("alert_events", *(column(c) for c in ["rule", "kind", "scope", "period", "fired_at", "severity",
                                                          "message", "deliveries"]))  # fmt: skip
        conn.execute(old.insert().values(rule="spike", kind="spike", scope="department=x", period="2026-11-24",
                                         fired_at=1, severity="warning", message="m",
                                         deliveries='{"wecom": "sent", "mail": "failed: SMTP 535"}'))  # fmt: skip
    engine.dispose()
    store = Store(db_url)
    try:
        assert migrate.current(store.engine) == migrate.head()
        row = {"rule": "spike", "kind": "spike", "scope": "department=y", "period": "2026-11-25", "fired_at": 2,
               "severity": "warning", "figure": 1.0, "baseline": 0.5, "threshold": 300.0, "message": "m",
               "title": "t", "unit": "tokens"}  # fmt: skip
        assert store.alerts.claim(row, ["wecom"]) is not None
        new, old_alert = store.alerts.history()
        assert old_alert["deliveries"] == {"wecom": "sent", "mail": "failed: SMTP 535"} and old_alert["title"] is None
        assert new["deliveries"] == {"wecom": "pending"} and new["unit"] == "tokens"
    finally:
        store.close()
