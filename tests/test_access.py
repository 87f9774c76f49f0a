"""Model access and IP policy through the real gateway: who may use a model, from which address,
what /v1/models shows them, and that forwarded-for headers count only from trusted proxies."""

from __future__ import annotations

import httpx
import openai
import pytest

from conftest import GatewayProc

SAY = [{"role": "user", "content": "hi"}]


def models(base_url: str) -> list[dict]:
    return [
        {"name": "open", "engine": "upstream", "base_url": base_url},
        {"name": "secret", "engine": "upstream", "base_url": base_url, "allow": {"projects": ["finance"]}},
        {"name": "office-only", "engine": "upstream", "base_url": base_url, "allow_ips": ["10.0.0.0/8"]},
        {"name": "loopback", "engine": "upstream", "base_url": base_url, "allow_ips": ["127.0.0.1/32", "::1"]},
        {
            "name": "partner",
            "engine": "upstream",
            "base_url": base_url,
            "allow_ips": ["203.0.113.0/24", "2001:db8::/32"],
        },
    ]


@pytest.fixture
def gw(tmp_path, rogue_upstream):
    g = GatewayProc(tmp_path / "data", {"models": models(rogue_upstream)}).start()
    yield g
    g.stop()


def chat(gw: GatewayProc, key: str, model: str, headers: dict | None = None) -> httpx.Response:
    return httpx.post(
        f"{gw.base_url}/chat/completions",
        json={"model": model, "messages": SAY, "max_tokens": 3},
        headers={"Authorization": f"Bearer {key}", **(headers or {})},
        timeout=30,
    )


def test_model_allow_list_refuses_others_and_hides_it_from_their_model_list(gw):
    ops = gw.create_key(user="o", project="ops", department="it")
    fin = gw.create_key(user="f", project="finance", department="money")
    with pytest.raises(openai.PermissionDeniedError) as info:
        gw.client(ops).chat.completions.create(model="secret", messages=SAY, max_tokens=3)
    err = info.value.response.json()["error"]
    assert err["type"] == "permission_error" and err["code"] == "model_not_allowed"
    rec = gw.record(info.value.response.headers["x-request-id"])
    assert rec["status"] == "rejected" and rec["error_code"] == "model_not_allowed" and rec["project"] == "ops"
    assert rec["total_tokens"] is None
    assert "secret" not in [m.id for m in gw.client(ops).models.list()]
    with pytest.raises(openai.NotFoundError):
        gw.client(ops).models.retrieve("secret")
    assert gw.client(fin).chat.completions.create(model="secret", messages=SAY, max_tokens=3).choices
    assert "secret" in [m.id for m in gw.client(fin).models.list()]


def test_hidden_models_answer_404_as_if_absent(tmp_path, rogue_upstream):
    g = GatewayProc(
        tmp_path / "h", {"models": models(rogue_upstream), "governance": {"hide_forbidden_models": True}}
    ).start()
    try:
        key = g.create_key(user="o", project="ops")
        with pytest.raises(openai.NotFoundError) as info:
            g.client(key).chat.completions.create(model="secret", messages=SAY, max_tokens=3)
        assert info.value.response.json()["error"]["code"] == "model_not_found"
        assert g.record(info.value.response.headers["x-request-id"])["error_code"] == "model_not_found"
    finally:
        g.stop()


def test_model_ip_allowlist_judges_the_socket_peer(gw):
    key = gw.create_key(user="o", project="ops")
    r = chat(gw, key, "office-only")
    assert r.status_code == 403 and r.json()["error"]["code"] == "ip_not_allowed"
    assert "127.0.0.1" in r.json()["error"]["message"]
    assert chat(gw, key, "loopback").status_code == 200
    # Without trusted proxies a forwarded-for header changes nothing, in either direction.
    spoofed = chat(gw, key, "partner", {"X-Forwarded-For": "203.0.113.7", "X-Real-IP": "203.0.113.7"})
    assert spoofed.status_code == 403
    rec = gw.record(spoofed.headers["x-request-id"])
    assert rec["client_ip"] == "127.0.0.1" and rec["status"] == "rejected"
    assert chat(gw, key, "loopback", {"X-Forwarded-For": "10.1.2.3"}).status_code == 200


def test_forwarded_for_is_believed_only_from_trusted_proxies(tmp_path, rogue_upstream):
    g = GatewayProc(
        tmp_path / "p", {"models": models(rogue_upstream), "server": {"trusted_proxies": ["127.0.0.1/32"]}}
    ).start()
    try:
        key = g.create_key(user="o", project="ops")
        ok = chat(g, key, "partner", {"X-Forwarded-For": "203.0.113.7"})
        assert ok.status_code == 200
        assert g.record(ok.headers["x-request-id"])["client_ip"] == "203.0.113.7"
        # The rightmost hop not a trusted proxy is the client; what it claims before that is ignored.
        chained = chat(g, key, "partner", {"X-Forwarded-For": "203.0.113.7, 198.51.100.9"})
        assert chained.status_code == 403
        assert g.record(chained.headers["x-request-id"])["client_ip"] == "198.51.100.9"
        # Trusted hops on the right are skipped.
        via = chat(g, key, "partner", {"X-Forwarded-For": "203.0.113.8, 127.0.0.1"})
        assert via.status_code == 200 and g.record(via.headers["x-request-id"])["client_ip"] == "203.0.113.8"
        v6 = chat(g, key, "partner", {"X-Forwarded-For": "2001:db8::5"})
        assert v6.status_code == 200 and g.record(v6.headers["x-request-id"])["client_ip"] == "2001:db8::5"
        garbled = chat(g, key, "partner", {"X-Forwarded-For": "203.0.113.7, not-an-ip"})
        assert garbled.status_code == 403
        assert g.record(garbled.headers["x-request-id"])["client_ip"] == "127.0.0.1"
        real = chat(g, key, "partner", {"X-Real-IP": "203.0.113.9"})
        assert real.status_code == 200 and g.record(real.headers["x-request-id"])["client_ip"] == "203.0.113.9"
    finally:
        g.stop()


def test_key_ip_allowlist(gw):
    out = gw.cli("keys", "create", "--user", "k", "--project", "ops", "--allow-ip", "10.0.0.0/8", "--json")
    import json

    key = json.loads(out.stdout)["key"]
    r = chat(gw, key, "open")
    assert r.status_code == 403 and r.json()["error"]["code"] == "ip_not_allowed"
    assert "API key" in r.json()["error"]["message"]
    out = gw.cli("keys", "create", "--user", "k2", "--project", "ops", "--allow-ip", "127.0.0.0/8", "--json")
    assert chat(gw, json.loads(out.stdout)["key"], "open").status_code == 200


def test_bad_cidr_in_config_is_one_line(tmp_path):
    bad = GatewayProc(tmp_path / "bad", {"server": {"trusted_proxies": ["10.0.0.300/8"]}})
    r = bad.cli("quota", "list", check=False)
    assert r.returncode != 0 and "not an IP address or CIDR" in r.stderr and "Traceback" not in r.stderr
