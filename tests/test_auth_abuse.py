"""Hostile callers against a real gateway: /metrics labels for refusals, and a key's IP allowlist
on /v1/models.

Client addresses are varied with X-Forwarded-For from a trusted proxy (127.0.0.1), as a gateway
behind a load balancer sees them."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import GatewayProc

SAY = [{"role": "user", "content": "hi"}]


def config(base_url: str) -> dict:
    return {
        "models": [{"name": "open", "engine": "upstream", "base_url": base_url}],
        "server": {
            "trusted_proxies": ["127.0.0.1/32"],
        },
        "governance": {"quotas": [{"user": "capped", "requests": 1, "period": "day"}]},
    }


@pytest.fixture(scope="module")
def gw(tmp_path_factory, rogue_upstream) -> Iterator[GatewayProc]:
    g = GatewayProc(tmp_path_factory.mktemp("auth") / "data", config(rogue_upstream)).start()
    yield g
    g.stop()


def root(gw: GatewayProc) -> str:
    return gw.base_url.removesuffix("/v1")


def ip(n: int) -> dict[str, str]:
    """Headers that make the trusted proxy (127.0.0.1) speak for client 198.51.100.n."""
    return {"X-Forwarded-For": f"198.51.100.{n}"}


def chat(gw: GatewayProc, key: str, headers: dict | None = None) -> httpx.Response:
    return httpx.post(
        f"{gw.base_url}/chat/completions",
        json={"model": "open", "messages": SAY, "max_tokens": 3},
        headers={"Authorization": f"Bearer {key}", **(headers or {})},
        timeout=30,
    )


def scrape(gw: GatewayProc) -> dict[tuple[str, tuple], float]:
    text = httpx.get(f"{root(gw)}/metrics", timeout=10).text
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def wait_for_metric(gw: GatewayProc, name: str, at_least: float, **labels: str) -> dict:
    """Metrics counted from ledger records appear once the writer has moved them: poll."""
    deadline = time.monotonic() + 10
    while True:
        samples = scrape(gw)
        if value(samples, name, **labels) >= at_least or time.monotonic() > deadline:
            return samples
        time.sleep(0.1)


# Item 12: refusals labelled by kind ---------------------------------------------------------------
def test_a_quota_refusal_is_labelled_quota_exceeded_in_metrics(gw):
    key = gw.create_key(user="capped", project="capped", department="ops")
    assert chat(gw, key).status_code == 200
    refused = chat(gw, key)
    assert refused.status_code == 429 and refused.json()["error"]["code"].startswith("quota_exceeded:")
    samples = wait_for_metric(gw, "tokenabacus_rejections_total", 1, model="open", reason="quota_exceeded")
    assert value(samples, "tokenabacus_rejections_total", model="open", reason="quota_exceeded") == 1
    reasons = {dict(labels).get("reason") for (name, labels) in samples if name == "tokenabacus_rejections_total"}
    assert "other" not in reasons and not any(":" in r for r in reasons if r), reasons


# Item 14: a key's IP allowlist on /v1/models --------------------------------------------------------
def test_v1_models_enforce_the_keys_ip_allowlist_like_chat(gw):
    out = gw.cli("keys", "create", "--user", "vpn", "--project", "ops", "--allow-ip", "10.0.0.0/8", "--json")
    key = json.loads(out.stdout)["key"]
    refused_chat = chat(gw, key)
    assert refused_chat.status_code == 403
    for path in ("/models", "/models/open"):
        r = httpx.get(gw.base_url + path, headers={"Authorization": f"Bearer {key}"}, timeout=10)
        assert r.status_code == 403 and r.json() == refused_chat.json(), (path, r.text)
        assert r.json()["error"]["code"] == "ip_not_allowed"
    inside = httpx.get(
        f"{gw.base_url}/models", headers={"Authorization": f"Bearer {key}", "X-Forwarded-For": "10.9.8.7"}
    )
    assert inside.status_code == 200 and [m["id"] for m in inside.json()["data"]] == ["open"]
