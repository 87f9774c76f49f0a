"""Keys and limits are held to the organization once it exists: a misspelt department, project
or user is refused with the nearest name suggested; a known user's key is billed where the user
belongs; the CLI and the admin API apply the same rules, and the confirmation shows what was
stored."""

from __future__ import annotations

import json

import httpx
import pytest

from conftest import GatewayProc


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    g = GatewayProc(tmp_path_factory.mktemp("names") / "data").start()
    for args in (
        ("department", "add", "marketing"),
        ("department", "add", "finance"),
        ("project", "add", "campaign", "--department", "marketing"),
        ("project", "add", "ledger-audit", "--department", "finance"),
        ("user", "add", "carol", "--department", "finance", "--project", "ledger-audit"),
        ("user", "add", "fay", "--department", "finance"),
    ):
        g.cli("org", *args)
    yield g
    g.stop()


def one_line(gw: GatewayProc, *args: str) -> str:
    r = gw.cli(*args, check=False)
    assert r.returncode == 2, (args, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in r.stderr, r.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--user", "carol", "--department", "markting"], "unknown department 'markting': did you mean 'marketing'?"),
        (["--project", "campaing"], "unknown project 'campaing': did you mean 'campaign'?"),
        (["--user", "frank", "--department", "markting", "--project", "x"], "unknown department 'markting'"),
        (["--user", "frank"], "unknown user 'frank' (known: carol, fay)"),
        (["--user", "carl"], "unknown user 'carl': did you mean 'carol'?"),
        (
            ["--user", "carol", "--department", "marketing"],
            "user 'carol' belongs to department 'finance', not 'marketing'",
        ),
        (
            ["--user", "carol", "--project", "campaign"],
            "user 'carol' belongs to project 'ledger-audit', not 'campaign'",
        ),
        (
            ["--user", "fay", "--project", "campaign"],
            "user 'fay' belongs to department 'finance' and project 'campaign' to",
        ),
        (["--project", "campaign", "--department", "finance"], "project 'campaign' belongs to department 'marketing'"),
    ],
)
def test_names_the_organization_does_not_know_are_refused(gw, args, message):
    assert message in one_line(gw, "keys", "create", *args)
    with httpx.Client(base_url=gw.base_url.removesuffix("/v1") + "/admin", timeout=30) as c:
        body = {k.removeprefix("--"): v for k, v in zip(args[::2], args[1::2], strict=True)}
        r = c.post("/keys", json=body, headers={"Authorization": f"Bearer {gw.admin_key}"})
    assert r.status_code == 400 and message in r.json()["error"]["message"], r.text


def test_a_known_users_key_is_billed_where_the_user_belongs(gw):
    r = gw.cli("keys", "create", "--user", "carol")
    assert r.stderr.strip().endswith("Store the key now: it is not shown again.")
    assert "for user=carol department=finance project=ledger-audit." in r.stderr and "None" not in r.stderr
    fay = gw.cli("keys", "create", "--user", "fay", "--project", "ledger-audit", "--json")
    assert {k: json.loads(fay.stdout)[k] for k in ("user", "department", "project")} == {
        "user": "fay",
        "department": "finance",
        "project": "ledger-audit",
    }
    # A stranger billed to a known project is placed there (a service, a contractor).
    svc = json.loads(gw.cli("keys", "create", "--user", "etl-bot", "--project", "campaign", "--json").stdout)
    assert (svc["department"], svc["project"]) == ("marketing", "campaign")
    keys = json.loads(gw.cli("keys", "list", "--format", "json").stdout)
    carol = [k for k in keys if k["user"] == "carol"]
    assert [(k["department"], k["project"]) for k in carol] == [("finance", "ledger-audit")]


def test_a_limit_on_an_unknown_name_is_refused(gw):
    assert "unknown department 'markting': did you mean 'marketing'?" in one_line(
        gw, "quota", "set", "--department", "markting", "--tokens", "100", "--period", "day"
    )
    assert "unknown user 'carl': did you mean 'carol'?" in one_line(
        gw, "quota", "set", "--user", "carl", "--tokens", "100"
    )
    with httpx.Client(base_url=gw.base_url.removesuffix("/v1") + "/admin", timeout=30) as c:
        body = {"scope": "department", "name": "markting", "tokens": 100, "period": "day"}
        r = c.post("/quotas", json=body, headers={"Authorization": f"Bearer {gw.admin_key}"})
    assert r.status_code == 400 and "did you mean 'marketing'?" in r.json()["error"]["message"], r.text
    ok = gw.cli("quota", "set", "--department", "marketing", "--tokens", "100")
    assert "department=marketing 100 tokens per day" in ok.stdout


def test_without_an_organization_names_are_free(tmp_path):
    g = GatewayProc(tmp_path / "data")
    r = g.cli("keys", "create", "--user", "frank", "--department", "markting", "--project", "x")
    assert "for user=frank department=markting project=x." in r.stderr
    assert g.cli("quota", "set", "--department", "markting", "--tokens", "5").returncode == 0
