"""Admin events through the real gateway and CLI, on SQLite, PostgreSQL and MariaDB: every quota
change, deletion and decision leaves who (the admin key, or the CLI and its OS user), when, from
where, and the row before and after; the trail is read-only and shown to admins only."""

from __future__ import annotations

import getpass
import json
import time

import httpx
import pytest

from conftest import GatewayProc
from tokenabacus.ledger.store import Store


@pytest.fixture
def make_gw(tmp_path, rogue_upstream):
    started: list[GatewayProc] = []

    def make(db_url: str | None = None) -> GatewayProc:
        cfg: dict = {"models": [{"name": "m", "engine": "upstream", "base_url": rogue_upstream, "upstream_model": "m"}]}
        if db_url:
            cfg["ledger"] = {"url": db_url}
        gw = GatewayProc(tmp_path / "data", cfg).start()
        started.append(gw)
        return gw

    yield make
    for gw in started:
        gw.stop()


class Admin:
    """The /admin API as one key sees it."""

    def __init__(self, gw: GatewayProc, key: str) -> None:
        self.http = httpx.Client(
            base_url=f"http://127.0.0.1:{gw.port}/admin", headers={"Authorization": f"Bearer {key}"}, timeout=30
        )

    def ok(self, method: str, path: str, status: int = 200, **kw) -> dict | list:
        r = self.http.request(method, path, **kw)
        assert r.status_code == status, (method, path, r.status_code, r.text)
        return r.json()


def cli_json(gw: GatewayProc, *args: str) -> list[dict]:
    return json.loads(gw.cli(*args, "--format", "json").stdout)


def test_every_quota_change_and_decision_leaves_who_when_and_what(make_gw, db_url):
    gw = make_gw(db_url)
    root = Admin(gw, gw.admin_key)
    ops_key = root.ok("POST", "/keys", 201, json={"role": "admin", "name": "ops-oncall"})
    ops = Admin(gw, ops_key["key"])
    member = root.ok("POST", "/keys", 201, json={"user": "ann", "project": "p-ann", "department": "d"})
    t0 = int(time.time() * 1000)

    # The CLI creates a limit and changes its number; an admin key changes it again, then deletes it.
    qid = gw.cli("quota", "set", "--user", "ann", "--tokens", "1000", "--period", "day").stdout.split(":")[0]
    gw.cli("quota", "set", "--user", "ann", "--tokens", "2000", "--period", "day")
    ops.ok("POST", "/quotas", 201, json={"scope": "user", "name": "ann", "tokens": 3000, "period": "day"})
    row = next(q for q in root.ok("GET", "/quotas") if q["quota_id"] == qid)
    assert row["limit"] == 3000
    ops.ok("DELETE", f"/quotas/{qid}")
    assert ops.http.delete(f"/quotas/{qid}").status_code == 404  # nothing to delete: nothing recorded
    # A request for more quota, approved over the API; another, denied by the CLI.
    ask = {"scope": "user", "name": "ann", "tokens": 500, "reason": "launch"}
    rid1 = Admin(gw, member["key"]).ok("POST", "/quota-requests", 201, json=ask)["request_id"]
    rid2 = Admin(gw, member["key"]).ok("POST", "/quota-requests", 201, json=ask)["request_id"]
    ops.ok("POST", f"/quota-requests/{rid1}/approve", json={"tokens": 300, "reason": "ok for this week"})
    gw.cli("quota", "deny", rid2, "--reason", "budget frozen")

    events = root.ok("GET", "/events")
    assert [(e["action"], e["target_id"]) for e in events] == [
        ("quota_request.deny", rid2),
        ("quota_request.approve", rid1),
        ("quota.delete", qid),
        ("quota.update", qid),
        ("quota.update", qid),
        ("quota.create", qid),
    ]
    deny, approve, delete, api_update, cli_update, create = events
    me = getpass.getuser()
    for e in (deny, cli_update, create):
        assert (e["actor_key_id"], e["actor_name"], e["client_ip"]) == ("cli", me, None)
    for e in (approve, delete, api_update):
        assert (e["actor_key_id"], e["actor_name"], e["client_ip"]) == (ops_key["key_id"], "ops-oncall", "127.0.0.1")
    assert all(t0 <= e["at_ms"] <= int(time.time() * 1000) for e in events)
    assert [e["id"] for e in events] == sorted((e["id"] for e in events), reverse=True)
    # Before and after, as rows.
    assert create["before"] is None and create["after"]["limit_value"] == 1000
    assert (cli_update["before"]["limit_value"], cli_update["after"]["limit_value"]) == (1000, 2000)
    assert (api_update["before"]["limit_value"], api_update["after"]["limit_value"]) == (2000, 3000)
    assert create["after"]["created_by"] == api_update["after"]["created_by"] == f"cli:{me}"  # the creator stays
    assert api_update["after"]["updated_by"] == "admin:ops-oncall" and api_update["after"]["updated_at"] >= t0
    assert cli_update["after"]["updated_by"] == f"cli:{me}"
    assert delete["before"] == api_update["after"] and delete["after"] is None
    assert (approve["before"]["status"], approve["after"]["status"], approve["after"]["granted"]) == (
        "pending",
        "approved",
        300,
    )
    assert (deny["before"]["status"], deny["after"]["status"]) == ("pending", "denied")
    assert deny["after"]["decision_reason"] == "budget frozen"

    # The CLI reads the same trail, filtered.
    assert [e["id"] for e in cli_json(gw, "audit", "events")] == [e["id"] for e in events]
    only = cli_json(gw, "audit", "events", "--target", qid, "--action", "quota.update", "--actor", "cli")
    assert [e["id"] for e in only] == [cli_update["id"]] and only[0]["after"]["limit_value"] == 2000
    # It is stored in the ledger database itself.
    store = Store(db_url)
    try:
        assert [e["id"] for e in store.events.list(action="quota_request.")] == [deny["id"], approve["id"]]
    finally:
        store.close()


def test_the_trail_is_read_only_for_admins_and_refuses_bad_input(make_gw):
    gw = make_gw()
    root = Admin(gw, gw.admin_key)
    qid = root.ok("POST", "/quotas", 201, json={"scope": "global", "requests": 9, "period": "day"})["quota_id"]
    root.ok("POST", "/quotas", 201, json={"scope": "project", "name": "p", "requests": 5, "period": "week"})
    root.ok("DELETE", f"/quotas/{qid}")
    (ev,) = root.ok("GET", "/events", params={"target": qid, "action": "quota.delete"})
    assert (ev["actor_key_id"], ev["actor_name"]) == ("admin", "bootstrap")
    assert ev["before"]["scope_kind"] == "global" and ev["after"] is None
    assert len(root.ok("GET", "/events", params={"action": "quota."})) == 3
    assert len(root.ok("GET", "/events", params={"limit": 1})) == 1
    assert root.ok("GET", "/events", params={"since": "2999-01-01"}) == []
    csv_text = root.http.get("/events", params={"format": "csv"}).text
    assert csv_text.splitlines()[0].startswith("id,at_ms,action,target_id") and '"{""' in csv_text

    # Admins only: a member and a viewer are refused, no key is unauthorized; there is no write route.
    member = root.ok("POST", "/keys", 201, json={"user": "bo", "project": "p", "department": "d"})["key"]
    viewer = root.ok("POST", "/keys", 201, json={"role": "viewer", "scope": {"kind": "project", "value": "p"}})["key"]
    for key in (member, viewer):
        r = Admin(gw, key).http.get("/events")
        assert r.status_code == 403 and r.json()["error"]["type"] == "permission_error"
    assert httpx.get(f"http://127.0.0.1:{gw.port}/admin/events").status_code == 401
    assert root.http.post("/events", json={}).status_code == 405
    assert root.http.delete(f"/events/{ev['id']}").status_code in (404, 405)

    for params in ({"since": "yesterday-ish"}, {"limit": 0}, {"tz": "Mars/Olympus"}, {"action": "x" * 300}):
        r = root.http.get("/events", params=params)
        assert r.status_code == 400 and r.json()["error"]["message"], (params, r.text)
    for args in (["--since", "soon"], ["--limit", "0"], ["--tz", "Mars/Olympus"]):
        r = gw.cli("audit", "events", *args, check=False)
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr, args
    table = gw.cli("audit", "events").stdout
    assert "quota.delete" in table and qid in table
