"""Roles on /admin: named admin keys, viewers limited to a department or project, members limited to
themselves; each refusal a 403 in OpenAI's error JSON."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from conftest import EMBEDDED, GatewayProc


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    g = GatewayProc(tmp_path_factory.mktemp("roles") / "data").start()
    yield g
    g.stop()


def client(gw: GatewayProc, key: str) -> httpx.Client:
    base = gw.base_url.removesuffix("/v1") + "/admin"
    return httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=30)


def make_key(gw: GatewayProc, *args: str) -> dict:
    return json.loads(gw.cli("keys", "create", *args, "--json").stdout)


def call(gw: GatewayProc, key: str, text: str) -> str:
    raw = gw.client(key).chat.completions.with_raw_response.create(
        model=EMBEDDED, messages=[{"role": "user", "content": text}], max_tokens=2
    )
    request_id = raw.headers["x-request-id"]
    gw.record(request_id)
    return request_id


def assert_forbidden(r: httpx.Response) -> None:
    assert r.status_code == 403, (r.request.method, r.request.url, r.text)
    assert set(r.json()) == {"error"} and r.json()["error"]["type"] == "permission_error"


@pytest.fixture(scope="module")
def org(gw):
    """Departments d-east (projects p-one, p-two) and d-west (project q-one), a member key in each
    project with one request each (two in p-one)."""
    gw.cli("org", "department", "add", "d-east")
    gw.cli("org", "department", "add", "d-west")
    for project, dept in (("p-one", "d-east"), ("p-two", "d-east"), ("q-one", "d-west")):
        gw.cli("org", "project", "add", project, "--department", dept)
    gw.cli("org", "user", "add", "una", "--project", "p-one")
    keys = {
        "p-one": make_key(gw, "--user", "una"),
        "p-two": make_key(gw, "--user", "tom", "--project", "p-two"),
        "q-one": make_key(gw, "--user", "wes", "--project", "q-one"),
    }
    requests = {p: [call(gw, k["key"], p)] for p, k in keys.items()}
    requests["p-one"].append(call(gw, keys["p-one"]["key"], "again"))
    return keys, requests


def test_a_named_admin_key_does_everything_until_revoked(gw, org):
    made = make_key(gw, "--role", "admin", "--name", "ops-lead")
    assert made["role"] == "admin" and made["project"] is None
    with client(gw, made["key"]) as admin:
        me = admin.get("/me").json()
        assert (me["role"], me["key_id"], me["name"]) == ("admin", made["key_id"], "ops-lead")
        new = admin.post("/keys", json={"user": "kim", "project": "p-two"})
        assert new.status_code == 201 and new.json()["department"] == "d-east"
        assert admin.delete(f"/keys/{new.json()['key_id']}").json()["revoked"] is True
        for path in ("/keys", "/usage", "/report", "/org/departments", "/org/projects", "/org/users"):
            assert admin.get(path).status_code == 200, path
        projects = {r["project"] for r in admin.get("/report", params={"by": "project"}).json()}
        assert {"p-one", "p-two", "q-one"} <= projects
        # Revoked by the bootstrap key: refused within seconds (the key cache polls the keys generation).
        with client(gw, gw.admin_key) as boot:
            assert boot.delete(f"/keys/{made['key_id']}").status_code == 200
        deadline = time.monotonic() + 10
        r = admin.get("/keys")
        while r.status_code != 401 and time.monotonic() < deadline:
            time.sleep(0.2)
            r = admin.get("/keys")
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    # The bootstrap key keeps working.
    with client(gw, gw.admin_key) as boot:
        assert boot.get("/me").json()["role"] == "admin"


def test_a_project_viewer_reads_its_project_only(gw, org):
    keys, requests = org
    viewer = make_key(gw, "--role", "viewer", "--project", "p-one")
    assert (viewer["scope_kind"], viewer["scope_value"]) == ("project", "p-one")
    with client(gw, viewer["key"]) as v:
        rows = v.get("/usage").json()
        assert sorted(r["request_id"] for r in rows) == sorted(requests["p-one"])
        assert {r["project"] for r in v.get("/usage", params={"project": "p-one"}).json()} == {"p-one"}
        assert_forbidden(v.get("/usage", params={"project": "p-two"}))
        assert_forbidden(v.get("/usage", params={"department": "d-west"}))
        assert len(v.get("/usage", params={"department": "d-east"}).json()) == 2  # its project's department
        rep = v.get("/report", params={"by": "department"}).json()
        assert len(rep) == 1 and rep[0]["department"] == "d-east" and rep[0]["requests"] == 2
        assert [r["project"] for r in v.get("/report", params={"by": "project,user"}).json()] == ["p-one"]
        assert_forbidden(v.get("/report", params={"project": "q-one"}))
        assert [p["name"] for p in v.get("/org/projects").json()] == ["p-one"]
        assert {k["key_id"] for k in v.get("/keys").json()} == {keys["p-one"]["key_id"], viewer["key_id"]}
        assert_forbidden(v.post("/keys", json={"user": "x", "project": "p-one"}))
        assert_forbidden(v.delete(f"/keys/{keys['p-one']['key_id']}"))
        assert_forbidden(v.post("/org/departments", json={"name": "sneaky"}))
        assert v.get("/me").json()["scope"] == {"kind": "project", "value": "p-one"}


def test_a_department_viewer_sees_its_projects(gw, org):
    keys, requests = org
    viewer = make_key(gw, "--role", "viewer", "--department", "d-east")
    with client(gw, viewer["key"]) as v:
        assert sorted(p["name"] for p in v.get("/org/projects").json()) == ["p-one", "p-two"]
        assert [d["name"] for d in v.get("/org/departments").json()] == ["d-east"]
        assert [u["name"] for u in v.get("/org/users").json()] == ["una"]
        got = sorted(r["request_id"] for r in v.get("/usage").json())
        assert got == sorted(requests["p-one"] + requests["p-two"])
        assert [r["request_id"] for r in v.get("/usage", params={"project": "p-two"}).json()] == requests["p-two"]
        assert_forbidden(v.get("/usage", params={"project": "q-one"}))
        assert_forbidden(v.get("/org/projects", params={"department": "d-west"}))
        rep = {r["project"]: r["requests"] for r in v.get("/report", params={"by": "project"}).json()}
        assert rep == {"p-one": 2, "p-two": 1}
        listed = {k["key_id"] for k in v.get("/keys").json()}
        assert {keys["p-one"]["key_id"], keys["p-two"]["key_id"]} <= listed
        assert keys["q-one"]["key_id"] not in listed
        assert_forbidden(v.delete("/org/projects/p-two"))


def test_a_member_reaches_only_itself(gw, org):
    keys, requests = org
    member = keys["p-one"]
    with client(gw, member["key"]) as m:
        me = m.get("/me").json()
        assert (me["key_id"], me["role"], me["user"], me["project"], me["department"], me["scope"]) == (
            member["key_id"],
            "member",
            "una",
            "p-one",
            "d-east",
            None,
        )
        mine = m.get("/me/usage").json()
        assert sorted(r["request_id"] for r in mine) == sorted(requests["p-one"])
        assert {r["key_id"] for r in mine} == {member["key_id"]}
        for method, path in (
            ("GET", "/usage"),
            ("GET", "/report"),
            ("GET", "/keys"),
            ("POST", "/keys"),
            ("DELETE", "/keys/key_x"),
            ("GET", "/org/projects"),
            ("POST", "/org/departments"),
        ):
            assert_forbidden(m.request(method, path, json={"name": "x"} if method == "POST" else None))


def test_a_key_is_refused_outside_its_addresses(gw):
    made = make_key(gw, "--role", "admin", "--name", "vpn-only", "--allow-ip", "10.0.0.0/8")
    assert made["allow_ips"] == ["10.0.0.0/8"]
    with client(gw, made["key"]) as far:
        r = far.get("/me")
        assert_forbidden(r)
        assert r.json()["error"]["code"] == "ip_not_allowed"
    local = make_key(gw, "--role", "admin", "--name", "local", "--allow-ip", "127.0.0.1", "--allow-ip", "::1")
    with client(gw, local["key"]) as near:
        assert near.get("/me").json()["allow_ips"] == ["127.0.0.1/32", "::1/128"]
    listed = json.loads(gw.cli("keys", "list", "--format", "json").stdout)
    assert next(k for k in listed if k["key_id"] == local["key_id"])["allow_ips"] == ["127.0.0.1/32", "::1/128"]


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--user", "x", "--allow-ip", "10.0.0.300/8"], "--allow-ip: '10.0.0.300/8' is not an IP address or CIDR"),
        (["--user", "x", "--allow-ip", "office"], "'office' is not an IP address"),
        (["--role", "viewer"], "a viewer key needs exactly one scope"),
        (["--role", "viewer", "--project", "a", "--department", "b"], "a viewer key needs exactly one scope"),
        (["--role", "admin"], "an admin key needs a name"),
    ],
)
def test_keys_create_refusals_are_one_line(gw, args, needle):
    r = gw.cli("keys", "create", *args, check=False)
    assert r.returncode == 2 and needle in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


def test_an_unknown_role_is_a_usage_error(gw):
    r = gw.cli("keys", "create", "--role", "owner", "--user", "x", check=False)
    assert r.returncode == 2 and "'owner' is not one of" in r.stderr and "Traceback" not in r.stderr


def test_admin_api_checks_roles_on_create(gw):
    with client(gw, gw.admin_key) as admin:
        r = admin.post("/keys", json={"role": "viewer", "name": "v"})
        assert r.status_code == 400 and "exactly one scope" in r.json()["error"]["message"]
        r = admin.post("/keys", json={"role": "viewer", "scope": {"kind": "department", "value": "d-west"}})
        assert r.status_code == 201 and (r.json()["scope_kind"], r.json()["scope_value"]) == ("department", "d-west")
        r = admin.post("/keys", json={"user": "x", "allow_ips": ["10.0.0.0/33"]})
        assert r.status_code == 400 and "10.0.0.0/33" in r.json()["error"]["message"]
        assert admin.post("/keys", json={"role": "admin"}).status_code == 400
        r = admin.post("/keys", json={"role": "admin", "name": "ci", "allow_ips": ["192.168.0.0/16"]})
        assert r.status_code == 201 and r.json()["allow_ips"] == ["192.168.0.0/16"]


def test_openapi_lists_the_routes(gw):
    base = gw.base_url.removesuffix("/v1") + "/admin"
    assert httpx.get(base + "/openapi.json").status_code == 401
    member = make_key(gw, "--user", "reader", "--project", "p-one")
    with client(gw, member["key"]) as m:
        spec = m.get("/openapi.json").json()
    paths = spec["paths"]
    for path in ("/keys", "/keys/{key_id}", "/org/departments", "/org/projects", "/org/users", "/me", "/me/usage"):
        assert path in paths, path
    assert set(paths["/keys"]) == {"get", "post"}
    assert all(op.get("summary") for ops in paths.values() for op in ops.values())
    assert httpx.get(base + "/docs").status_code == 401  # no docs pages (and nothing without a key)
    with client(gw, gw.admin_key) as admin:
        assert admin.get("/docs").status_code == 404 and admin.get("/redoc").status_code == 404


def test_a_named_admin_key_is_billed_as_itself_on_v1(gw):
    row = make_key(gw, "--role", "admin", "--name", "ops-bill")
    rid = call(gw, row["key"], "hi")
    rec = gw.record(rid)
    assert rec["key_id"] == row["key_id"] and rec["status"] == "ok"
    # The bootstrap key has no row: it is billed as `admin`.
    assert gw.record(call(gw, gw.admin_key, "hi"))["key_id"] == "admin"
