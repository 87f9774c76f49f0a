"""What a new user types first: `--version`, `-h` everywhere `--help` works, help that shows no
type for flags, and messages that name the option to give."""

from __future__ import annotations

import json
import subprocess

import pytest

from conftest import BIN
from tokenabacus import __version__
from tokenabacus.cli.usage import TABLE_COLS
from tokenabacus.money import show_money


def run(*args: str, data_dir=None) -> subprocess.CompletedProcess:
    extra = ["--data-dir", str(data_dir)] if data_dir else []
    return subprocess.run([str(BIN), *args, *extra], capture_output=True, text=True, timeout=60)


def test_version():
    for flag in ("--version", "-V"):
        r = run(flag)
        assert r.returncode == 0 and r.stdout.strip() == f"tokenabacus {__version__}", r


@pytest.mark.parametrize("words", [[], ["report", "top"], ["keys", "create"], ["costs", "adjust"], ["quota", "set"]])
def test_dash_h_is_help_and_flags_show_no_type(words):
    short, long = run(*words, "-h"), run(*words, "--help")
    assert short.returncode == long.returncode == 0, short.stderr
    assert short.stdout == long.stdout and "Usage: tokenabacus" in short.stdout
    assert "<bool>" not in short.stdout and "Show this message and exit." in short.stdout


def test_admin_key_without_a_name_names_the_option(tmp_path):
    r = run("keys", "create", "--role", "admin", data_dir=tmp_path)
    assert r.returncode == 2 and r.stderr.strip() == "error: an admin key needs a name: give it one with --name"
    assert not (tmp_path / "ledger.db").exists()


def test_an_adjustment_lands_in_the_month_it_corrects(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("governance:\n  timezone: Asia/Shanghai\n")
    args = ["--config", str(cfg)]
    r = run(
        "costs",
        "adjust",
        "--month",
        "2026-11",
        "--department",
        "marketing",
        "--amount",
        "-120",
        "--currency",
        "CNY",
        "--reason",
        "load test billed by mistake",
        *args,
        data_dir=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    nov = run(
        "costs", "adjustments", "--since", "2026-11", "--until", "2026-12", "--format", "json", *args, data_dir=tmp_path
    )
    rows = json.loads(nov.stdout)
    assert [(x["department"], x["amount_micros"]) for x in rows] == [("marketing", -120_000_000)]
    assert rows[0]["at"].startswith("2026-11-01T00:00:00+08:00")
    dec = run("costs", "adjustments", "--since", "2026-12", "--format", "json", *args, data_dir=tmp_path)
    assert json.loads(dec.stdout) == []


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--month", "2026-11", "--at", "2026-11-03"], "give --at or --month, not both"),
        (["--month", "2026-11-03"], "--month '2026-11-03': expected a month like 2026-11"),
        (["--month", "nov"], "--month 'nov': expected a month like 2026-11"),
    ],
)
def test_adjustment_month_errors(tmp_path, extra, needle):
    r = run("costs", "adjust", "--department", "d", "--amount", "1", "--reason", "r", *extra, data_dir=tmp_path)
    assert r.returncode == 2 and r.stderr.strip() == f"error: {needle}", r.stderr


def _on_a_terminal(args: list[str], columns: int) -> str:
    """Run the CLI with its stdout on a pseudo-terminal ``columns`` wide; the text it showed."""
    import os
    import pty
    import re

    main, sub = pty.openpty()
    env = dict(os.environ, COLUMNS=str(columns), LINES="60", NO_COLOR="1")
    p = subprocess.Popen([str(BIN), *args], stdout=sub, stderr=sub, env=env)
    os.close(sub)
    out = b""
    while True:
        try:
            chunk = os.read(main, 65536)
        except OSError:  # the child closed its end
            break
        if not chunk:
            break
        out += chunk
    os.close(main)
    assert p.wait(timeout=60) == 0, out
    return re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", out.decode()).replace("\r", "")


@pytest.fixture(scope="module")
def demo_ledger(tmp_path_factory):
    data = tmp_path_factory.mktemp("demo")
    r = run("demo", "seed", data_dir=data)
    assert r.returncode == 0, r.stderr
    return data


@pytest.mark.parametrize("columns", [100, 120, 200])
def test_tables_fit_the_terminal_and_never_cut_a_cell(demo_ledger, columns):
    rows = json.loads(run("usage", "-n", "5", "--format", "json", data_dir=demo_ledger).stdout)
    shown = _on_a_terminal(["usage", "-n", "5", "--data-dir", str(demo_ledger)], columns)
    table = [line for line in shown.splitlines() if line.startswith(("│", "┃", "┏", "└"))]
    assert len(table) == 2 + 5 + 1 and all(len(line) <= columns for line in table), shown
    assert "…" not in shown
    header = [h.strip() for h in table[1].strip("┃").split("┃")]
    assert {"timestamp", "model", "total_tokens", "cost"} <= set(header)
    for rec, line in zip(rows, table[2:7], strict=True):
        cells = dict(zip(header, (c.strip() for c in line.strip("│").split("│")), strict=True))
        assert cells["total_tokens"] == f"{rec['total_tokens']:,}"
        assert cells["cost"] == (show_money(rec["cost_micros"], rec["currency"]) or "")  # refused: no cost
        assert cells["model"] == rec["model"]
        if "request_id" in cells:
            assert cells["request_id"] == rec["request_id"]
    hidden = set(header) ^ set(TABLE_COLS)
    if hidden:
        assert f"{len(hidden)} more columns" in shown and "--wide" in shown
    wide = _on_a_terminal(["usage", "-n", "5", "--wide", "--data-dir", str(demo_ledger)], columns)
    assert "more columns" not in wide and "usage_source" in wide and "…" not in wide


def test_chargeback_counts_refusals_as_requests_and_survives_json(demo_ledger):
    """The demo month holds refused requests (no tokens, so no cost) to priced models: they are
    requests of their priced group, not a second 'unpriced' group per department; and a month
    with an adjustment prints as JSON (it crashed with a traceback)."""
    import sqlite3

    month = run("costs", "adjustments", "--format", "json", data_dir=demo_ledger)
    assert month.returncode == 0
    db = sqlite3.connect(demo_ledger / "ledger.db")
    (first,) = db.execute("SELECT MIN(timestamp) FROM usage_records").fetchone()
    from datetime import UTC, datetime

    ym = datetime.fromtimestamp(first / 1000, UTC).strftime("%Y-%m")
    r = run(
        "costs",
        "adjust",
        "--month",
        ym,
        "--department",
        "marketing",
        "--amount",
        "-120",
        "--reason",
        "test",
        data_dir=demo_ledger,
    )
    assert r.returncode == 0, r.stderr
    out = run("report", "chargeback", "--month", ym, "--format", "json", data_dir=demo_ledger)
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr
    cb = json.loads(out.stdout)
    assert [a["amount_micros"] for a in cb["adjustments"]] == [-120_000_000]
    since, until = cb["since_ms"], cb["until_ms"]
    q = "SELECT COUNT(*) FROM usage_records WHERE timestamp >= ? AND timestamp < ?"
    (requests,) = db.execute(q, (since, until)).fetchone()
    priced = (
        "SELECT DISTINCT model FROM usage_records WHERE cost_micros IS NOT NULL AND timestamp >= ? AND timestamp < ?"
    )
    (unpriced,) = db.execute(
        q + f" AND cost_micros IS NULL AND (COALESCE(total_tokens, 0) > 0 OR model NOT IN ({priced}))",
        (since, until, since, until),
    ).fetchone()
    (refused,) = db.execute(
        q + f" AND prompt_tokens IS NULL AND model IN ({priced})", (since, until, since, until)
    ).fetchone()
    assert refused > 0  # the demo has refusals to priced models, or this test proves nothing
    assert sum(t["requests"] for t in cb["totals"]) == requests
    assert cb["unpriced_requests"] == unpriced
    # An unpriced group is a model's with no price in the month, never refusals to a priced one.
    priced_models = {m for (m,) in db.execute(priced, (since, until))}
    for rows in cb["departments"].values():
        for row in rows:
            if row["currency"] is None and row["row"] == "group":
                assert row["model"] not in priced_models, row
    assert not any("several currencies" in n for n in cb["notes"])
