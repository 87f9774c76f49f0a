"""One line, exit 2: `serve` on a ledger it cannot open, read-only commands on a ledger that is
not there (and nothing created), a status that does not exist; and reports over a ledger that
already holds absurd figures."""

from __future__ import annotations

import json
import sqlite3
import subprocess

import httpx
import pytest
import yaml

from conftest import BIN, GatewayProc, free_port
from tokenabacus.ledger.record import start_record
from tokenabacus.ledger.store import Store

NOWHERE = [{"name": "m", "engine": "upstream", "base_url": "http://127.0.0.1:9/v1"}]


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN), *args], capture_output=True, text=True, timeout=timeout)


def one_line_error(r: subprocess.CompletedProcess, needle: str) -> None:
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], r.stderr
    assert "Traceback" not in r.stdout + r.stderr


def config(tmp_path, body: dict) -> str:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(body))
    return str(path)


def test_serve_on_a_corrupt_ledger(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "ledger.db").write_bytes(b"this is not a database, just bytes " * 200)
    r = run(
        "serve", "--port", str(free_port()), "--data-dir", str(data), "--config", config(tmp_path, {"models": NOWHERE})
    )
    one_line_error(r, f"cannot open the ledger at sqlite:///{(data / 'ledger.db').resolve()}: DatabaseError")
    assert "file is not a database" in r.stderr


def test_serve_on_a_data_dir_that_is_a_file(tmp_path):
    data = tmp_path / "data"
    data.write_text("a file")
    r = run(
        "serve", "--port", str(free_port()), "--data-dir", str(data), "--config", config(tmp_path, {"models": NOWHERE})
    )
    one_line_error(r, f"cannot use the data dir {data}: Not a directory")
    assert data.read_text() == "a file"


def test_serve_with_postgresql_unreachable(tmp_path):
    url = "postgresql+psycopg://ledger:secret@127.0.0.1:1/none"
    r = run(
        "serve",
        "--port",
        str(free_port()),
        "--data-dir",
        str(tmp_path / "d"),
        "--config",
        config(tmp_path, {"models": NOWHERE, "ledger": {"url": url}}),
    )
    one_line_error(r, "cannot open the ledger at postgresql+psycopg://ledger:***@127.0.0.1:1/none: OperationalError")
    assert "secret" not in r.stderr


@pytest.mark.parametrize(
    "args", [["usage"], ["report", "--by", "project"], ["keys", "list"], ["keys", "revoke", "key_x"]]
)
def test_read_only_commands_do_not_create_a_ledger(tmp_path, args):
    data = tmp_path / "never"
    r = run(*args, "--data-dir", str(data))
    one_line_error(r, f"no ledger at {(data / 'ledger.db').resolve()}")
    assert not data.exists()
    # The case: ledger.url pointing into a directory that does not exist.
    missing = tmp_path / "no" / "such" / "dir" / "ledger.db"
    r = run(*args, "--data-dir", str(data), "--config", config(tmp_path, {"ledger": {"url": f"sqlite:///{missing}"}}))
    one_line_error(r, f"no ledger at {missing}")
    assert not (tmp_path / "no").exists() and not data.exists()


@pytest.mark.parametrize("command", ["usage", "report"])
def test_unknown_status_is_refused(tmp_path, command):
    Store(f"sqlite:///{tmp_path / 'd' / 'ledger.db'}").close()
    r = run(command, "--status", "bogus", "--data-dir", str(tmp_path / "d"))
    one_line_error(r, "unknown status 'bogus'; choose from ok, error, cancelled, rejected")
    ok = run(command, "--status", "cancelled", "--data-dir", str(tmp_path / "d"), "--format", "json")
    assert ok.returncode == 0 and json.loads(ok.stdout) == []


def test_reports_survive_a_ledger_with_absurd_figures(tmp_path):
    """Records written before the writer checked figures: SQLite's sum() overflowed on two."""
    data = tmp_path / "data"
    Store(f"sqlite:///{data / 'ledger.db'}").close()
    rows = []
    for i, (p, c) in enumerate([(2**62, 2**62 - 1), (2**62, 2**62 - 1), (5, 1), (7, 3)]):
        rec = start_record(model="m", project="huge" if i < 3 else "sane", prompt_tokens=p, completion_tokens=c)
        rec.finish()
        rows.append(rec.to_dict())
    con = sqlite3.connect(data / "ledger.db")
    cols = list(rows[0])
    con.executemany(
        f"INSERT INTO usage_records ({', '.join(repr(c) for c in cols)}) VALUES ({', '.join('?' * len(cols))})",
        [[r[c] for c in cols] for r in rows],
    )
    con.commit()
    con.close()
    want = {"huge": (2**63 + 5, 2**63 - 1, 2**64 + 4), "sane": (7, 3, 10)}  # past 64 bits, exactly

    r = run("report", "--by", "project", "--format", "json", "--data-dir", str(data))
    assert r.returncode == 0, r.stderr
    got = {
        row["project"]: (row["prompt_tokens"], row["completion_tokens"], row["total_tokens"])
        for row in json.loads(r.stdout)
    }
    assert got == want
    for fmt in ("table", "csv"):
        r = run("report", "--by", "project,day", "--format", fmt, "--data-dir", str(data))
        assert r.returncode == 0 and str(2**64 + 4) in r.stdout.replace(",", ""), r.stderr

    gw = GatewayProc(data, {"models": NOWHERE}).start()
    try:
        rep = httpx.get(
            gw.base_url.removesuffix("/v1") + "/admin/report",
            params={"by": "project"},
            headers={"Authorization": f"Bearer {gw.admin_key}"},
        )
        assert rep.status_code == 200, rep.text
        assert {
            row["project"]: (row["prompt_tokens"], row["completion_tokens"], row["total_tokens"]) for row in rep.json()
        } == want
    finally:
        gw.stop()
