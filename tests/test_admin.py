"""The /admin API: authenticated by the admin key, and never showing key hashes."""

from __future__ import annotations

import httpx
import pytest

from conftest import EMBEDDED


@pytest.fixture
def admin(embedded_gw):
    base = embedded_gw.base_url.removesuffix("/v1") + "/admin"
    return httpx.Client(base_url=base, headers={"Authorization": f"Bearer {embedded_gw.admin_key}"}, timeout=30)


def test_every_admin_route_needs_the_admin_key(embedded_gw, embedded_key):
    """No key or an unknown one: 401. A member key is known but may not: 403 (roles in test_roles.py)."""
    base = embedded_gw.base_url.removesuffix("/v1") + "/admin"
    for method, path in (
        ("GET", "/keys"),
        ("POST", "/keys"),
        ("DELETE", "/keys/key_x"),
        ("GET", "/usage"),
        ("GET", "/report"),
        ("POST", "/quotas"),
        ("POST", "/quota-requests/qr_x/approve"),
    ):
        for headers in ({}, {"Authorization": "Bearer sk-nope"}):
            r = httpx.request(method, base + path, headers=headers, json={"user": "x"} if method == "POST" else None)
            assert r.status_code == 401, (method, path, r.text)
            assert r.json()["error"]["code"] == "invalid_api_key"
        member = {"Authorization": f"Bearer {embedded_key}"}
        r = httpx.request(method, base + path, headers=member, json={"user": "x"} if method == "POST" else None)
        assert r.status_code == 403, (method, path, r.text)
        assert r.json()["error"]["type"] == "permission_error"


def test_admin_key_lifecycle_and_reads(embedded_gw, admin):
    r = admin.post("/keys", json={"user": "frank", "project": "ops-bot", "department": "it"})
    assert r.status_code == 201
    created = r.json()
    key = created["key"]
    assert key.startswith("sk-") and "key_hash" not in created
    listed = admin.get("/keys").json()
    assert any(k["key_id"] == created["key_id"] for k in listed) and all("key_hash" not in k for k in listed)
    resp = embedded_gw.client(key).chat.completions.with_raw_response.create(
        model=EMBEDDED, messages=[{"role": "user", "content": "ops"}], max_tokens=2
    )
    embedded_gw.record(resp.headers["x-request-id"])
    rows = admin.get("/usage", params={"project": "ops-bot"}).json()
    assert [r["request_id"] for r in rows] == [resp.headers["x-request-id"]]
    rep = admin.get("/report", params={"by": "project,user"}).json()
    assert any(r["project"] == "ops-bot" and r["user"] == "frank" and r["requests"] == 1 for r in rep)
    assert admin.delete(f"/keys/{created['key_id']}").json() == {"key_id": created["key_id"], "revoked": True}
    assert admin.delete(f"/keys/{created['key_id']}").status_code == 404
    bad = admin.get("/report", params={"by": "planet"})
    assert bad.status_code == 400 and "cannot group by planet" in bad.json()["error"]["message"]
    assert admin.post("/keys", json={"user": 5}).status_code == 400
    assert admin.get("/usage", params={"since": "whenever"}).status_code == 400


def test_unknown_admin_routes_need_the_key_and_answer_error_json(embedded_gw, admin):
    base = embedded_gw.base_url.removesuffix("/v1") + "/admin"
    for method, path in (("GET", "/nope"), ("POST", "/usage/extra"), ("PUT", "/keys"), ("GET", "/")):
        r = httpx.request(method, base + path)  # no key: refused before routing
        assert r.status_code == 401 and set(r.json()) == {"error"}, (method, path, r.text)
        assert r.json()["error"]["code"] == "invalid_api_key"
    r = admin.get("/nope")
    assert r.status_code == 404
    assert r.json() == {
        "error": {
            "message": "Unknown route: GET /admin/nope",
            "type": "invalid_request_error",
            "param": None,
            "code": "not_found",
        }
    }
    r = admin.put("/keys")
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"
    assert "GET" in r.headers["allow"] and "PUT /admin/keys" in r.json()["error"]["message"]
    for path in ("/nope", "/keys/a/b"):
        assert set(admin.delete(path).json()["error"]) == {"message", "type", "param", "code"}


@pytest.mark.parametrize("path", ["/usage", "/report"])
def test_admin_refuses_an_unknown_status(admin, path):
    r = admin.get(path, params={"status": "bogus"})
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["message"] == "unknown status 'bogus'; choose from ok, error, cancelled, rejected"
    assert err["type"] == "invalid_request_error"
    assert admin.get(path, params={"status": "rejected"}).status_code == 200
