"""Quotas across gateway processes with the real Redis: two `tokenabacus serve` processes share one
limit, a concurrent burst from the openai SDK across both ends at or under it in their ledgers,
and an outage behaves as configured (closed: refuse; open: count locally) and recovers."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

from conftest import EMBEDDED, IN_CI, GatewayProc, service_available
from procs import free_port
from test_quotas import SAY, STEADY, ledger, settled, tokens_used


def ask(client: openai.OpenAI, max_tokens: int = 6):
    return client.chat.completions.create(model=EMBEDDED, messages=SAY, max_tokens=max_tokens, **STEADY)


@pytest.fixture
def redis_url():
    service_available("127.0.0.1", 6379, "Redis")
    return "redis://127.0.0.1:6379/0"


def redis_config(url: str, quotas: list[dict], **redis) -> dict:
    prefix = f"test-{os.urandom(4).hex()}:"
    return {"redis": {"url": url, "prefix": prefix, **redis}, "governance": {"quotas": quotas}}


def test_two_gateways_share_one_limit(tmp_path, redis_url):
    limit = 1500
    cfg = redis_config(redis_url, [{"project": "shared", "tokens": limit, "period": "day"}])
    a = GatewayProc(tmp_path / "a", cfg).start()
    b = GatewayProc(tmp_path / "b", cfg).start()
    try:
        clients = [
            a.client(a.create_key(user="x", project="shared")),
            b.client(b.create_key(user="y", project="shared")),
        ]

        def one(i: int):
            try:
                return ask(clients[i % 2]).usage.total_tokens
            except openai.RateLimitError as e:
                assert e.response.json()["error"]["type"] == "insufficient_quota"
                return None

        with ThreadPoolExecutor(32) as pool:
            results = list(pool.map(one, range(48)))
        served = [r for r in results if r is not None]
        assert served and len(served) < 48
        rows = settled(a, sum(1 for i in range(48) if i % 2 == 0)) + settled(b, 24)
        assert len(rows) == 48
        used = tokens_used(rows)
        assert used == sum(served) <= limit
        # Both processes served part of it: the limit really was shared, not enforced by one.
        assert tokens_used(ledger(a)) > 0 and tokens_used(ledger(b)) > 0
    finally:
        a.stop()
        b.stop()


class PrivateRedis:
    """A redis-server of the test's own, to stop and start again."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                import socket

                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise AssertionError("redis-server did not start")

    def stop(self) -> None:
        if self.proc:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


@pytest.fixture
def private_redis():
    if shutil.which("redis-server") is None:
        if IN_CI:
            pytest.fail("redis-server is not installed under CI")
        pytest.skip("redis-server is not installed")
    r = PrivateRedis()
    r.start()
    yield r
    r.stop()


def health(gw: GatewayProc, admin: bool = False) -> dict:
    headers = {"Authorization": f"Bearer {gw.admin_key}"} if admin else {}
    return httpx.get(f"http://127.0.0.1:{gw.port}/health", headers=headers).json()


def wait_until(fn, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = fn()
        if out:
            return out
        time.sleep(0.2)
    raise AssertionError("condition not met in time")


def test_redis_outage_closed_refuses_then_recovers(tmp_path, private_redis):
    cfg = redis_config(private_redis.url, [{"user": "ops", "tokens": 100000, "period": "day"}])
    gw = GatewayProc(tmp_path / "g", cfg).start()
    try:
        client = gw.client(gw.create_key(user="ops"))
        assert ask(client).usage.total_tokens > 0
        private_redis.stop()
        with pytest.raises(openai.InternalServerError) as info:
            ask(client)
        err = info.value.response.json()["error"]
        assert info.value.status_code == 503 and err["code"] == "quota_backend_unavailable"
        assert gw.record(info.value.response.headers["x-request-id"])["status"] == "rejected"
        assert health(gw)["quota_counters"]["ok"] is False
        detail = health(gw, admin=True)["governance"]["counters"]
        assert detail["on_error"] == "closed" and detail["since"]
        # A caller with no limit is not affected by the outage.
        assert ask(gw.client(gw.create_key(user="free"))).usage.total_tokens > 0
        private_redis.start()
        wait_until(lambda: _served(client), timeout=10)
        assert health(gw)["quota_counters"]["ok"] is True
        assert "redis unavailable" in gw.log.read_text() and "redis is back" in gw.log.read_text()
    finally:
        gw.stop()


def _served(client) -> bool:
    try:
        return ask(client).usage.total_tokens > 0
    except openai.APIStatusError:
        return False


def test_redis_outage_open_counts_locally(tmp_path, private_redis):
    cfg = redis_config(private_redis.url, [{"user": "ops", "requests": 3, "period": "day"}], on_error="open")
    gw = GatewayProc(tmp_path / "g", cfg).start()
    try:
        client = gw.client(gw.create_key(user="ops"))
        private_redis.stop()
        # Local counters still enforce the limit while Redis is away.
        for _ in range(3):
            ask(client)
        with pytest.raises(openai.RateLimitError):
            ask(client)
        assert health(gw)["quota_counters"]["ok"] is False
    finally:
        gw.stop()


def slow_config(url: str, rogue: str, limit: int, **governance) -> dict:
    cfg = redis_config(url, [{"user": "sig", "tokens": limit, "period": "day"}])
    cfg["models"] = [{"name": "slow", "engine": "upstream", "base_url": rogue}]
    cfg["server"] = {"shutdown_grace_s": 1}
    cfg["governance"].update(governance)
    return cfg


def start_slow_stream(gw: GatewayProc, key: str, words: int) -> None:
    """A streamed request holding a reservation of about ``words`` tokens, left running."""
    import threading

    def run() -> None:
        try:
            for _ in gw.client(key, timeout=60).chat.completions.create(
                model="slow", messages=SAY, max_tokens=words, stream=True
            ):
                pass
        except Exception:
            pass  # the gateway goes away under it

    threading.Thread(target=run, daemon=True).start()
    time.sleep(1.0)


def test_sigterm_mid_request_leaves_no_reservation_in_redis(tmp_path, redis_url, rogue_upstream):
    gw = GatewayProc(tmp_path / "s", slow_config(redis_url, rogue_upstream, 10_000)).start()
    key = gw.create_key(user="sig")
    start_slow_stream(gw, key, 5000)
    held = [r for r in _status(gw) if r["name"] == "sig"][0]
    assert held["reserved"] >= 5000
    gw.stop()  # SIGTERM: the request is cancelled after the grace period and settled
    (rec,) = ledger(gw)
    assert rec["status"] == "cancelled" and rec["error_code"] == "server_shutdown"
    after = [r for r in _status(gw) if r["name"] == "sig"][0]
    assert after["reserved"] == 0 and after["used"] == (rec["total_tokens"] or 0)


def test_reservations_of_a_killed_gateway_lapse(tmp_path, redis_url, rogue_upstream):
    ttl = 6.0
    cfg = slow_config(redis_url, rogue_upstream, 8_000, reservation_ttl_s=ttl)
    # Both gateways up first: the check below must happen well inside the reservation's life.
    other = GatewayProc(tmp_path / "k2", cfg).start()
    gw = GatewayProc(tmp_path / "k", cfg).start()
    try:
        client = other.client(other.create_key(user="sig"))
        start_slow_stream(gw, gw.create_key(user="sig"), 5000)
        gw.kill()  # SIGKILL: nothing settles the reservation
        killed_at = time.monotonic()
        with pytest.raises(openai.RateLimitError):  # the dead process's 5000 still count for now
            client.chat.completions.create(model="slow", messages=SAY, max_tokens=5000, stream=True)
        assert time.monotonic() - killed_at < ttl, "the check came too late to mean anything"
        time.sleep(max(0.0, ttl + 0.5 - (time.monotonic() - killed_at)))
        stream = client.chat.completions.create(model="slow", messages=SAY, max_tokens=3, stream=True)
        assert len([c for c in stream if c.choices and c.choices[0].delta.content]) == 3
    finally:
        other.stop()


def _status(gw: GatewayProc) -> list[dict]:
    import json

    return json.loads(gw.cli("quota", "status", "--format", "json").stdout)
