"""The organization: departments, projects and users from the CLI and over /admin, and keys that
take their owner from it."""

from __future__ import annotations

import csv
import io
import json

import httpx
import pytest

from conftest import EMBEDDED, GatewayProc


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    g = GatewayProc(tmp_path_factory.mktemp("org") / "data").start()
    yield g
    g.stop()


def admin_client(gw: GatewayProc, key: str | None = None) -> httpx.Client:
    base = gw.base_url.removesuffix("/v1") + "/admin"
    return httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key or gw.admin_key}"}, timeout=30)


def refused(gw: GatewayProc, *args: str) -> str:
    """Run a command that must fail with one line on stderr and no traceback; return that line."""
    r = gw.cli(*args, check=False)
    assert r.returncode == 2, (args, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in r.stderr, r.stderr
    return lines[0]


def test_org_cli_round_trip(gw):
    assert "added department" in gw.cli("org", "department", "add", "marketing").stdout
    gw.cli("org", "department", "add", "finance")
    gw.cli("org", "project", "add", "campaign", "--department", "marketing")
    gw.cli("org", "project", "add", "ledger-audit", "--department", "finance")
    gw.cli("org", "user", "add", "mia", "--department", "marketing", "--project", "campaign")
    gw.cli("org", "user", "add", "max", "--project", "ledger-audit")  # the department follows the project
    gw.cli("org", "user", "add", "fay", "--department", "finance")

    deps = json.loads(gw.cli("org", "department", "list", "--format", "json").stdout)
    by_name = {d["name"]: d for d in deps}
    assert by_name["marketing"]["projects"] == 1 and by_name["marketing"]["users"] == 1
    assert by_name["finance"]["projects"] == 1 and by_name["finance"]["users"] == 2
    projects = json.loads(gw.cli("org", "project", "list", "--department", "finance", "--format", "json").stdout)
    assert [p["name"] for p in projects] == ["ledger-audit"]
    users = list(csv.DictReader(io.StringIO(gw.cli("org", "user", "list", "--format", "csv").stdout)))
    assert {u["name"]: (u["department"], u["project"]) for u in users} == {
        "mia": ("marketing", "campaign"),
        "max": ("finance", "ledger-audit"),
        "fay": ("finance", ""),
    }
    table = gw.cli("org", "show").stdout
    assert "department marketing" in table and "project campaign" in table and "user mia" in table
    tree = json.loads(gw.cli("org", "show", "--format", "json").stdout)
    finance = next(d for d in tree if d["department"] == "finance")
    assert finance == {
        "department": "finance",
        "projects": [{"project": "ledger-audit", "users": ["max"]}],
        "users": ["fay"],
    }
    flat = list(csv.DictReader(io.StringIO(gw.cli("org", "show", "--format", "csv").stdout)))
    assert {"department": "marketing", "project": "campaign", "user": "mia"} in flat

    # Refusals: one line each, exit code 2.
    assert "org department add sales" in refused(gw, "org", "project", "add", "crm", "--department", "sales")
    assert "exists already" in refused(gw, "org", "department", "add", "finance")
    line = refused(gw, "org", "department", "delete", "finance")
    assert "still has 1 project(s) and 2 user(s)" in line
    assert "control characters" in refused(gw, "org", "department", "add", "bad\x07name")
    assert "1 to 200 characters" in refused(gw, "org", "department", "add", "x" * 201)
    assert "unknown project" in refused(gw, "org", "user", "add", "zed", "--project", "nowhere")
    assert "belongs to department 'finance'" in refused(
        gw, "org", "user", "add", "zed", "--department", "marketing", "--project", "ledger-audit"
    )
    assert "no department" in refused(gw, "org", "department", "delete", "nowhere")

    # Moves, then the department empties and goes.
    gw.cli("org", "project", "move", "ledger-audit", "--department", "marketing")
    moved = json.loads(gw.cli("org", "user", "list", "--project", "ledger-audit", "--format", "json").stdout)
    assert [(u["name"], u["department"]) for u in moved] == [("max", "marketing")]  # users follow their project
    gw.cli("org", "user", "move", "fay", "--project", "campaign")
    gw.cli("org", "department", "delete", "finance")
    names = [d["name"] for d in json.loads(gw.cli("org", "department", "list", "--format", "json").stdout)]
    assert "finance" not in names and "marketing" in names
    gw.cli("org", "user", "delete", "max")
    gw.cli("org", "project", "delete", "ledger-audit")
    assert "still has 2 user(s)" in refused(gw, "org", "project", "delete", "campaign")


def test_a_known_users_key_takes_its_project_and_department(gw):
    gw.cli("org", "department", "add", "research")
    gw.cli("org", "project", "add", "tokenizers", "--department", "research")
    gw.cli("org", "user", "add", "ivy", "--project", "tokenizers")
    made = json.loads(gw.cli("keys", "create", "--user", "ivy", "--json").stdout)
    assert (made["user"], made["project"], made["department"]) == ("ivy", "tokenizers", "research")
    listed = json.loads(gw.cli("keys", "list", "--format", "json").stdout)
    row = next(k for k in listed if k["key_id"] == made["key_id"])
    assert (row["project"], row["department"], row["role"], row["scope"]) == ("tokenizers", "research", "member", None)
    raw = gw.client(made["key"]).chat.completions.with_raw_response.create(
        model=EMBEDDED, messages=[{"role": "user", "content": "hi"}], max_tokens=2
    )
    rec = gw.record(raw.headers["x-request-id"])
    assert (rec["user"], rec["project"], rec["department"], rec["key_id"]) == (
        "ivy",
        "tokenizers",
        "research",
        made["key_id"],
    )
    # A known user's key is billed where the user belongs: another project is refused, and a
    # project the organization does not know is refused before that.
    gw.cli("org", "project", "add", "side", "--department", "research")
    assert "user 'ivy' belongs to project 'tokenizers', not 'side'" in refused(
        gw, "keys", "create", "--user", "ivy", "--project", "side"
    )
    assert "unknown project 'sde': did you mean 'side'?" in refused(gw, "keys", "create", "--project", "sde")
    stranger = json.loads(
        gw.cli("keys", "create", "--user", "nobody-known", "--project", "tokenizers", "--json").stdout
    )
    assert stranger["department"] == "research"  # a known project brings its department


def test_org_over_http(gw):
    with admin_client(gw) as admin:
        assert admin.post("/org/departments", json={"name": "ops"}).status_code == 201
        r = admin.post("/org/departments", json={"name": "ops"})
        assert r.status_code == 409 and r.json()["error"]["code"] == "conflict"
        r = admin.post("/org/projects", json={"name": "pager", "department": "nope"})
        assert r.status_code == 404 and "org department add nope" in r.json()["error"]["message"]
        assert admin.post("/org/projects", json={"name": "pager", "department": "ops"}).status_code == 201
        assert admin.post("/org/users", json={"name": "olga", "project": "pager"}).json()["department"] == "ops"
        bad = admin.post("/org/users", json={"name": "tab\there", "department": "ops"})
        assert bad.status_code == 400 and "control characters" in bad.json()["error"]["message"]
        assert any(d["name"] == "ops" for d in admin.get("/org/departments").json())
        assert [p["name"] for p in admin.get("/org/projects", params={"department": "ops"}).json()] == ["pager"]
        assert [u["name"] for u in admin.get("/org/users", params={"project": "pager"}).json()] == ["olga"]
        r = admin.delete("/org/departments/ops")
        assert r.status_code == 409 and "still has 1 project(s) and 1 user(s)" in r.json()["error"]["message"]

        # A key for a known user over HTTP takes its project and department as well.
        made = admin.post("/keys", json={"user": "olga"})
        assert made.status_code == 201
        assert (made.json()["project"], made.json()["department"], made.json()["role"]) == ("pager", "ops", "member")

        assert admin.patch("/org/users/olga", json={"department": "ops"}).json()["project"] == "pager"
        assert admin.delete("/org/users/olga").json() == {"name": "olga", "deleted": True}
        assert admin.delete("/org/users/olga").status_code == 404
        assert admin.delete("/org/projects/pager").status_code == 200
        assert admin.delete("/org/departments/ops").status_code == 200
        assert all(d["name"] != "ops" for d in admin.get("/org/departments").json())
    # Nothing under /admin/org answers without a key.
    base = gw.base_url.removesuffix("/v1") + "/admin"
    assert httpx.get(base + "/org/departments").status_code == 401
    assert httpx.post(base + "/org/departments", json={"name": "x"}).status_code == 401
