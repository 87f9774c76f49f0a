"""A key's life through the real gateway, the CLI and /admin with the openai SDK: an expiry (a day
in governance.timezone, or a lifetime), a budget set at creation (a key-scoped limit), and
rotation to a new secret with a grace period for the old one. Refusals are 401s recorded in the
ledger under the key's id, as a revoked key's are; each change leaves an admin event without a
secret or its hash."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import httpx
import openai
import pytest

from conftest import GatewayProc

ZONE = "Asia/Shanghai"
MSG = [{"role": "user", "content": "hi"}]


@pytest.fixture
def gw(tmp_path, rogue_upstream):
    cfg = {
        "models": [{"name": "m", "engine": "upstream", "base_url": rogue_upstream, "upstream_model": "m"}],
        "prices": [{"model": "m", "input": "0.8", "output": "2.4", "per": "1k", "currency": "CNY"}],
        "governance": {"timezone": ZONE},
    }
    g = GatewayProc(tmp_path / "data", cfg).start()
    yield g
    g.stop()


def admin(g: GatewayProc, key: str | None = None) -> httpx.Client:
    return httpx.Client(
        base_url=f"http://127.0.0.1:{g.port}/admin",
        headers={"Authorization": f"Bearer {key or g.admin_key}"},
        timeout=30,
    )


def create(g: GatewayProc, *args: str) -> dict:
    return json.loads(g.cli("keys", "create", "--user", "ann", "--project", "p", *args, "--json").stdout)


def call(g: GatewayProc, key: str, max_tokens: int = 2) -> str:
    """A request that must pass; its request id."""
    raw = g.client(key).chat.completions.with_raw_response.create(model="m", messages=MSG, max_tokens=max_tokens)
    return raw.headers["x-request-id"]


def refused(g: GatewayProc, key: str, kind: type[openai.APIStatusError], max_tokens: int = 2) -> dict:
    """A request that must be refused with ``kind``; the ledger's record of it."""
    with pytest.raises(kind) as e:
        g.client(key).chat.completions.create(model="m", messages=MSG, max_tokens=max_tokens)
    rec = g.record(e.value.response.headers["x-request-id"])
    rec["error"] = e.value.response.json()["error"]
    return rec


def listed(g: GatewayProc, key_id: str) -> dict:
    rows = json.loads(g.cli("keys", "list", "--all", "--format", "json").stdout)
    return next(r for r in rows if r["key_id"] == key_id)


def events(g: GatewayProc, action: str) -> list[dict]:
    return json.loads(g.cli("audit", "events", "--action", action, "--format", "json").stdout)


def test_an_expired_key_is_refused_with_the_day_it_expired_and_recorded(gw):
    short = create(gw, "--ttl", "4s")
    ok = call(gw, short["key"])
    assert gw.record(ok)["key_id"] == short["key_id"]
    # As an admin key it reaches /admin until it expires too.
    adm = json.loads(gw.cli("keys", "create", "--role", "admin", "--name", "temp", "--ttl", "4s", "--json").stdout)
    made_at = time.time()
    assert admin(gw, adm["key"]).get("/keys").status_code == 200
    time.sleep(max(0.0, made_at + 4.5 - time.time()))

    rec = refused(gw, short["key"], openai.AuthenticationError)
    assert rec["error"]["code"] == "key_expired"
    assert rec["error"]["message"].startswith("API key expired ") and f"({ZONE})" in rec["error"]["message"]
    assert "ask an admin for a new one" in rec["error"]["message"]
    assert (rec["status"], rec["error_code"], rec["key_id"]) == ("rejected", "key_expired", short["key_id"])
    r = admin(gw, adm["key"]).get("/keys")
    assert r.status_code == 401 and r.json()["error"]["code"] == "key_expired"

    # A date means through the end of that day, in governance.timezone; shown in the list.
    out = gw.cli("keys", "create", "--user", "bo", "--project", "p", "--expires", "2099-03-31")
    assert "valid through 2099-03-31 (Asia/Shanghai)" in out.stderr
    key_id = out.stderr.split("key id ")[1].split()[0]
    assert listed(gw, key_id)["expires_at"] == "2099-04-01T00:00:00+08:00"
    call(gw, out.stdout.strip())
    # A date-time a few seconds ahead, in the zone: valid until then.
    soon = (datetime.now(ZoneInfo(ZONE)) + timedelta(seconds=6)).replace(microsecond=0, tzinfo=None)
    timed = create(gw, "--expires", soon.isoformat())
    call(gw, timed["key"])
    assert listed(gw, timed["key_id"])["expires_at"] == soon.isoformat() + "+08:00"
    time.sleep(max(0.0, soon.replace(tzinfo=ZoneInfo(ZONE)).timestamp() + 0.5 - time.time()))
    rec = refused(gw, timed["key"], openai.AuthenticationError)
    assert (
        rec["error"]["code"] == "key_expired" and f"at {soon.date()} {soon.time()} ({ZONE})" in rec["error"]["message"]
    )

    # What cannot be: a past time, both ways at once, a lifetime without a unit.
    for args, says in (
        (["--expires", "2020-01-01"], "already have expired"),
        (["--expires", "2099-01-01", "--ttl", "3d"], "not both"),
        (["--ttl", "90"], "a number and a unit"),
    ):
        r = gw.cli("keys", "create", "--user", "x", "--project", "p", *args, check=False)
        assert r.returncode == 2 and says in r.stderr, (args, r.stderr)

    # Each key with a lifetime left an admin event, never with its hash.
    ev = {e["target_id"]: e for e in events(gw, "key.create")}
    assert ev[short["key_id"]]["after"]["expires_at"] and ev[short["key_id"]]["actor_key_id"] == "cli"
    assert all("key_hash" not in e["after"] for e in ev.values())
    plain = create(gw)  # a plain key as before: no event
    assert plain["key_id"] not in {e["target_id"] for e in events(gw, "key.create")}


def test_a_budget_at_creation_is_a_limit_on_that_key(gw):
    out = gw.cli(
        "keys", "create", "--user", "cy", "--project", "p", "--budget", "1", "--currency", "CNY", "--period", "month"
    )
    assert "budget ¥1.000000 per month" in out.stderr
    key = out.stdout.strip()
    key_id = out.stderr.split("key id ")[1].split()[0]
    limits = json.loads(gw.cli("quota", "list", "--format", "json").stdout)
    (mine,) = [q for q in limits if q["scope"] == "key" and q["name"] == key_id]
    assert (mine["metric"], mine["period"], mine["limit"]) == ("cost:CNY", "month", 1_000_000)
    call(gw, key)
    time.sleep(1.5)  # running gateways reload limits within governance.refresh_interval_s (1 s)
    rec = refused(gw, key, openai.RateLimitError, max_tokens=1000)  # could cost over ¥2.4: past the budget
    assert rec["error"]["type"] == "insufficient_quota" and rec["key_id"] == key_id
    assert {e["target_id"] for e in events(gw, "key.create")} == {key_id}
    assert [e["target_id"] for e in events(gw, "quota.create")] == [mine["quota_id"]]

    # The same over /admin: a lifetime and a token budget.
    r = admin(gw).post("/keys", json={"user": "di", "project": "p", "ttl": "90d", "budget_tokens": 5, "period": "day"})
    assert r.status_code == 201, r.text
    made = r.json()
    assert made["expires_at"] - time.time() * 1000 > 89 * 86_400_000 and "previous_hash" not in made
    assert made["budget"].startswith("5 tokens per day")
    limits = json.loads(gw.cli("quota", "list", "--format", "json").stdout)
    assert any(q["scope"] == "key" and q["name"] == made["key_id"] and q["limit"] == 5 for q in limits)
    bad = admin(gw).post("/keys", json={"user": "di", "project": "p", "budget": "1", "period": "fortnight"})
    assert bad.status_code == 400 and "--period" in bad.text
    r = gw.cli("keys", "create", "--user", "x", "--project", "p", "--budget", "abc", check=False)
    assert r.returncode == 2 and "--budget" in r.stderr


def test_rotation_gives_a_new_secret_and_the_old_one_a_grace_period(gw):
    made = create(gw)
    key_id, old = made["key_id"], made["key"]
    first = call(gw, old)
    out = json.loads(gw.cli("keys", "rotate", key_id, "--grace", "3s", "--json").stdout)
    rotated_at = time.time()
    new = out["key"]
    assert new != old and new.startswith("sk-") and out["key_id"] == key_id
    both = [call(gw, new), call(gw, old)]  # the new one at once; the old one during its grace
    time.sleep(max(0.0, rotated_at + 3.5 - time.time()))
    rec = refused(gw, old, openai.AuthenticationError)
    assert (rec["error"]["code"], rec["status"], rec["key_id"]) == ("invalid_api_key", "rejected", key_id)
    both.append(call(gw, new))
    assert {gw.record(r)["key_id"] for r in [first, *both]} == {key_id}
    row = listed(gw, key_id)
    assert row["prefix"] == new[:8] and row["user"] == "ann"
    # The admin API: no grace at all; the secret before it is refused at once.
    r = admin(gw).post(f"/keys/{key_id}/rotate", json={"grace": "0s"})
    assert r.status_code == 200, r.text
    newest = r.json()["key"]
    assert "key_hash" not in r.json() and "previous_hash" not in r.json()
    call(gw, newest)
    assert refused(gw, new, openai.AuthenticationError)["key_id"] == key_id
    assert admin(gw).post("/keys/key_nope/rotate").status_code == 404
    assert admin(gw).post(f"/keys/{key_id}/rotate", json={"grace": "soon"}).status_code == 400
    r = gw.cli("keys", "rotate", "key_nope", check=False)
    assert r.returncode == 2 and "no active key" in r.stderr
    # Who rotated, and when: never a secret or its hash.
    ev = events(gw, "key.rotate")
    assert [e["target_id"] for e in ev] == [key_id, key_id]
    assert ev[1]["actor_key_id"] == "cli" and ev[0]["actor_name"] == "bootstrap"
    text = json.dumps(ev)
    assert "key_hash" not in text and "previous_hash" not in text and new not in text and old not in text


def test_times_people_give_are_read_in_the_zone():
    from tokenabacus.governance import keylife

    sh = ZoneInfo(ZONE)
    at = keylife.parse_expiry("2027-03-31", sh)
    assert at == int(datetime(2027, 4, 1, tzinfo=sh).timestamp() * 1000)  # through the whole day
    assert keylife.validity(at, sh) == "valid through 2027-03-31 (Asia/Shanghai)"
    msg = keylife.expired_message(at, sh)
    assert msg == "API key expired on 2027-03-31 (Asia/Shanghai); ask an admin for a new one."
    noon = keylife.parse_expiry("2027-03-31T12:30", sh)
    assert keylife.validity(noon, sh) == "valid until 2027-03-31 12:30:00 (Asia/Shanghai)"
    assert [keylife.parse_duration(t, "--ttl") for t in ("3s", "2m", "24h", "90d", "1w")] == [
        3_000,
        120_000,
        86_400_000,
        90 * 86_400_000,
        7 * 86_400_000,
    ]
    assert keylife.expires_at(None, None, sh) is None
    with pytest.raises(ValueError, match="a number and a unit"):
        keylife.parse_duration("1y", "--ttl")
