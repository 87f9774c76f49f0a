"""The command line: keys, usage, report, config validation, and one-line errors."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import time
from datetime import UTC, datetime

import httpx
import pytest
import yaml

from conftest import BIN, EMBEDDED, GatewayProc
from tokenabacus.ledger.record import FIELDS


def run(*args: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN), *args], capture_output=True, text=True, timeout=60, env=env)


def test_keys_create_list_revoke(embedded_gw):
    out = embedded_gw.cli("keys", "create", "--user", "dave", "--project", "p1", "--department", "d1")
    key = out.stdout.strip()
    assert key.startswith("sk-") and len(key) > 40 and "\n" not in key
    listed = json.loads(embedded_gw.cli("keys", "list", "--format", "json").stdout)
    mine = [k for k in listed if k["user"] == "dave"]
    assert len(mine) == 1 and mine[0]["prefix"] == key[:8]
    assert key not in json.dumps(listed)  # only the prefix, never the key
    raw = (embedded_gw.data_dir / "ledger.db").read_bytes()
    assert key.encode() not in raw  # stored hashed
    client = embedded_gw.client(key)
    assert client.chat.completions.create(
        model=EMBEDDED, messages=[{"role": "user", "content": "hi"}], max_tokens=2
    ).usage
    embedded_gw.cli("keys", "revoke", mine[0]["key_id"])
    deadline = time.monotonic() + 10
    status = None
    while time.monotonic() < deadline:
        status = httpx.get(embedded_gw.base_url + "/models", headers={"Authorization": f"Bearer {key}"}).status_code
        if status == 401:
            break
        time.sleep(0.2)
    assert status == 401
    r = embedded_gw.cli("keys", "revoke", mine[0]["key_id"], check=False)
    assert r.returncode == 2 and r.stderr.startswith("error: ") and len(r.stderr.strip().splitlines()) == 1


def test_usage_json_has_every_contract_field(embedded_gw, embedded_key):
    raw = embedded_gw.client(embedded_key).chat.completions.with_raw_response.create(
        model=EMBEDDED, messages=[{"role": "user", "content": "你好"}], max_tokens=3, user="ignored"
    )
    request_id = raw.headers["x-request-id"]
    embedded_gw.record(request_id)
    rows = json.loads(embedded_gw.cli("usage", "--format", "json", "-n", "50").stdout)
    row = next(r for r in rows if r["request_id"] == request_id)
    assert list(row) == list(FIELDS)
    u = raw.parse().usage
    assert (row["prompt_tokens"], row["completion_tokens"], row["total_tokens"]) == (
        u.prompt_tokens,
        u.completion_tokens,
        u.total_tokens,
    )
    assert row["user"] == "alice" and row["project"] == "campaign-2024" and row["department"] == "marketing"
    assert row["client_ip"] == "127.0.0.1" and row["user_agent"].startswith("OpenAI/Python")
    assert row["engine"] == "embedded" and row["model_version"].startswith("sha256:")
    assert row["cost_micros"] is None and row["hash"] is None  # owned by later issues
    table = embedded_gw.cli("usage", "-n", "5").stdout
    assert "Latest usage records" in table


def test_report_groups_and_formats(tmp_path):
    gw = GatewayProc(tmp_path / "data").start()
    try:
        keys = {
            ("ann", "alpha", "sales"): gw.create_key("ann", "alpha", "sales"),
            ("ben", "beta", "sales"): gw.create_key("ben", "beta", "sales"),
        }
        expected: dict[str, list[int]] = {}
        request_ids = []
        for (user, project, _dept), key in keys.items():
            for n in range(2 if project == "alpha" else 3):
                raw = gw.client(key).chat.completions.with_raw_response.create(
                    model=EMBEDDED, messages=[{"role": "user", "content": f"{user} {n}"}], max_tokens=3
                )
                request_ids.append(raw.headers["x-request-id"])
                expected.setdefault(project, []).append(raw.parse().usage.total_tokens)
        for request_id in request_ids:  # the background writer moves records in batches: wait for each
            gw.record(request_id)
        today = datetime.now(UTC).strftime("%Y-%m-%d")
        rows = json.loads(gw.cli("report", "--by", "project", "--since", today, "--format", "json").stdout)
        got = {r["project"]: r for r in rows}
        for project, totals in expected.items():
            assert got[project]["requests"] == len(totals)
            assert got[project]["total_tokens"] == sum(totals)
            assert got[project]["avg_duration_ms"] > 0
        out = gw.cli("report", "--by", "department,day", "--format", "csv").stdout
        parsed = list(csv.DictReader(io.StringIO(out)))
        assert parsed[0]["department"] == "sales" and parsed[0]["day"] == today
        assert int(parsed[0]["total_tokens"]) == sum(sum(v) for v in expected.values())
        shanghai = json.loads(gw.cli("report", "--by", "hour", "--tz", "Asia/Shanghai", "--format", "json").stdout)
        assert sum(r["requests"] for r in shanghai) == 5
        assert "Usage by user" in gw.cli("report", "--by", "user").stdout
        future = json.loads(gw.cli("report", "--since", "2999-01-01", "--format", "json").stdout)
        assert future == []
        assert "no records" in gw.cli("report", "--since", "2999-01-01").stdout
        wide = gw.cli("report", "--by", "project,user,department").stdout  # piped: nothing cut short
        assert "campaign" not in wide and "alpha" in wide and "sales" in wide and "…" not in wide
    finally:
        gw.stop()


@pytest.mark.parametrize(
    "args,needle",
    [
        (["report", "--by", "planet"], "cannot group by planet"),
        (["report", "--since", "yesterday"], "--since 'yesterday'"),
        (["report", "--tz", "Mars/Olympus"], "unknown time zone"),
        (["keys", "create"], "needs --user or --project"),
    ],
)
def test_cli_errors_are_one_line(tmp_path, args, needle):
    r = run(*args, "--data-dir", str(tmp_path / "d"))
    assert r.returncode == 2
    assert needle in r.stderr and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


@pytest.mark.parametrize(
    "config,needle",
    [
        ({"models": [{"name": "x", "engine": "upstream"}]}, "models.0.upstream.base_url: Field required"),
        (
            {"models": [{"name": "x", "engine": "upstream", "base_url": "gpu-node-1:8000"}]},
            "models.0.upstream.base_url",
        ),
        ({"models": [{"name": "x", "engine": "teleport"}]}, "models.0"),
        ({"server": {"port": 70000}}, "server.port"),
        ({"server": {"prot": 8000}}, "server.prot: Extra inputs are not permitted"),
        ({"models": [{"name": "a", "engine": "embedded"}, {"name": "a", "engine": "embedded"}]}, "declared twice"),
    ],
)
def test_config_errors_name_the_field(tmp_path, config, needle):
    path = tmp_path / "tokenabacus.yaml"
    path.write_text(yaml.safe_dump(config))
    r = run("serve", "--config", str(path), "--data-dir", str(tmp_path / "d"))
    assert r.returncode == 2 and needle in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


def test_config_file_problems(tmp_path):
    r = run("serve", "--config", str(tmp_path / "missing.yaml"))
    assert r.returncode == 2 and "cannot read config file" in r.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: [\n")
    r = run("serve", "--config", str(bad))
    assert r.returncode == 2 and "not valid YAML" in r.stderr
    r = run("serve", "--upstream", "no-equals-sign")
    assert r.returncode == 2 and "NAME=URL" in r.stderr
    tok = tmp_path / "tok.yaml"
    tok.write_text(
        yaml.safe_dump(
            {
                "models": [
                    {
                        "name": "q",
                        "engine": "upstream",
                        "base_url": "http://127.0.0.1:9/v1",
                        "tokenizer": {"type": "hf", "path": str(tmp_path / "nope")},
                    }
                ]
            }
        )
    )
    r = run("serve", "--config", str(tok), "--data-dir", str(tmp_path / "d"))
    assert r.returncode == 2 and "tokenizer file not found" in r.stderr


def test_example_config_is_valid():
    from conftest import ROOT
    from tokenabacus.config import load_settings

    s = load_settings(ROOT / "deploy" / "tokenabacus.example.yaml")
    assert s.models and s.sinks.jsonl.enabled
