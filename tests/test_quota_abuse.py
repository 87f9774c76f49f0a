"""Quotas under abuse, against real gateways, Redis and PostgreSQL: the ledger never passes a limit
whatever happens to the counters (a limit deleted and set again, a Redis flush, a limit set while
traffic runs and the spool holds records), a counter below the ledger is corrected, quotas on a
shared ledger are never per-process silently, the embedded model's prompt is counted exactly at
admission, and a killed gateway's reservations come back at its restart."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest
import redis

from conftest import DATABASES, EMBEDDED, GatewayProc, drop_ledger, service_available
from procs import ProcessExited, wait_for
from test_quotas import STEADY, ask, ledger, tokens_used
from test_quotas_redis import private_redis, redis_config, start_slow_stream  # noqa: F401  (a fixture)


def admin(gw: GatewayProc, method: str, path: str, **kw) -> httpx.Response:
    return httpx.request(
        method, f"http://127.0.0.1:{gw.port}{path}", headers={"Authorization": f"Bearer {gw.admin_key}"}, **kw
    )


def admin_status(gw: GatewayProc, name: str) -> dict:
    rows = admin(gw, "GET", "/admin/quotas/status").json()
    return next(r for r in rows if r["name"] == name)


def cli_status(gw: GatewayProc, name: str) -> dict:
    rows = json.loads(gw.cli("quota", "status", "--format", "json").stdout)
    return next(r for r in rows if r["name"] == name)


def quiet(gw: GatewayProc, timeout: float = 15.0) -> list[dict]:
    """The ledger once the spool is empty (every record written)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(gw.data_dir.glob("spool/seg-*.jsonl")) or _segments_empty(gw):
            before = len(ledger(gw))
            time.sleep(0.5)
            rows = ledger(gw)
            if len(rows) == before:
                return rows
        time.sleep(0.1)
    raise AssertionError("the spool never emptied")


def _segments_empty(gw: GatewayProc) -> bool:
    return all(p.stat().st_size == 0 for p in gw.data_dir.glob("spool/seg-*.jsonl"))


def project_tokens(gw: GatewayProc, project: str) -> int:
    return tokens_used([r for r in ledger(gw) if r["project"] == project])


def burst(client: openai.OpenAI, n: int, threads: int = 8, max_tokens: int = 6) -> tuple[int, int]:
    """n concurrent requests: (served, refused with a quota 429)."""

    def one(_i: int) -> bool:
        try:
            ask(client, max_tokens=max_tokens)
            return True
        except openai.RateLimitError as e:
            assert e.response.json()["error"]["type"] == "insufficient_quota"
            return False

    with ThreadPoolExecutor(threads) as pool:
        results = list(pool.map(one, range(n)))
    return sum(results), n - sum(results)


def set_quota(gw: GatewayProc, project: str, tokens: int) -> str:
    r = admin(
        gw, "POST", "/admin/quotas", json={"scope": "project", "name": project, "tokens": tokens, "period": "day"}
    )
    assert r.status_code == 201, r.text
    return r.json()["quota_id"]


@pytest.fixture
def pg_url():
    """One ledger for several gateways, as replicas share it."""
    url, port, name = DATABASES["postgresql"]
    service_available("127.0.0.1", port, name)
    drop_ledger(url)
    yield url
    drop_ledger(url)


# 1. Counters forget ---------------------------------------------------------------------------------
def test_a_limit_deleted_and_set_again_counts_what_the_ledger_holds(tmp_path):
    gw = GatewayProc(tmp_path / "g", {}).start()
    try:
        client = gw.client(gw.create_key(user="u", project="again"))
        qid = set_quota(gw, "again", 150)
        served, refused = burst(client, 12, threads=4)
        assert refused > 0
        first = project_tokens(gw, "again")
        assert first <= 150
        assert admin(gw, "DELETE", f"/admin/quotas/{qid}").status_code == 200
        for _ in range(6):  # no limit now: the ledger grows past the old figure
            ask(client, max_tokens=6)
        quiet(gw)
        grown = project_tokens(gw, "again")
        assert grown > 150
        limit = grown + 60  # room for a few more, counted from what the ledger holds
        set_quota(gw, "again", limit)
        burst(client, 16, threads=8)
        rows = quiet(gw)
        final = tokens_used([r for r in rows if r["project"] == "again"])
        assert grown < final <= limit
        # One truth: the gateway's counters and the ledger agree once every record is written.
        assert admin_status(gw, "again")["used"] == cli_status(gw, "again")["used"] == final
    finally:
        gw.stop()


def test_a_limit_set_while_traffic_runs_counts_the_spool_and_requests_in_flight(tmp_path):
    """Records still in the spool (a slow writer here) and requests admitted before the limit
    existed are counted: lowering the limit to what the gateway says is used lets nothing past."""
    gw = GatewayProc(tmp_path / "g", {"ledger": {"writer_interval_ms": 3000}}).start()
    stop = threading.Event()
    try:
        client = gw.client(gw.create_key(user="u", project="live"))
        ask(client, max_tokens=6)  # the model's first evaluation is slow: out of the way

        def traffic() -> None:
            while not stop.is_set():
                try:
                    ask(client, max_tokens=6)
                except openai.RateLimitError:
                    time.sleep(0.05)

        threads = [threading.Thread(target=traffic, daemon=True) for _ in range(4)]
        for t in threads:
            t.start()
        time.sleep(2.5)  # records pile up in the spool: the writer moves them every 3 s
        qid = set_quota(gw, "live", 10_000_000)
        # Requests admitted before the limit existed are counted when they end (not held back by it):
        # let them end, so every request in flight now holds a reservation on the limit.
        time.sleep(1.0)
        status = admin_status(gw, "live")
        assert status["used"] > 0
        limit = status["used"] + status["reserved"] + 40
        r = admin(
            gw, "POST", "/admin/quotas", json={"scope": "project", "name": "live", "tokens": limit, "period": "day"}
        )
        assert r.status_code == 201 and r.json()["quota_id"] == qid
        wait_for(lambda: admin_status(gw, "live")["remaining"] < 200, what="the lowered limit")
        time.sleep(2.0)  # the traffic keeps trying against the lowered limit
        stop.set()
        for t in threads:
            t.join(30)
        rows = quiet(gw)
        final = tokens_used([r for r in rows if r["project"] == "live"])
        assert final <= limit, f"the ledger passed the limit: {final} > {limit}"
        assert any(r["status"] == "rejected" and (r["error_code"] or "").startswith("quota_exceeded") for r in rows)
        assert admin_status(gw, "live")["used"] == cli_status(gw, "live")["used"] == final
    finally:
        stop.set()
        gw.stop()


def test_redis_losing_its_keys_reseeds_from_the_ledger(tmp_path, private_redis, pg_url):  # noqa: F811
    limit = 400
    cfg = redis_config(private_redis.url, [{"project": "flushed", "tokens": limit, "period": "day"}])
    cfg["ledger"] = {"url": pg_url}
    a = GatewayProc(tmp_path / "a", cfg).start()
    b = GatewayProc(tmp_path / "b", cfg).start()
    try:
        ca = a.client(a.create_key(user="x", project="flushed"))
        cb = b.client(b.create_key(user="y", project="flushed"))
        for _ in range(4):
            ask(ca, max_tokens=6)
            ask(cb, max_tokens=6)
        quiet(a), quiet(b)
        before = project_tokens(a, "flushed")
        assert 0 < before < limit
        r = redis.Redis.from_url(private_redis.url)
        r.flushall()  # a restart without persistence, an eviction, an operator's mistake
        r.close()
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(lambda c: burst(c, 14, threads=4), [ca, cb]))
        quiet(a), quiet(b)
        total = project_tokens(a, "flushed")
        assert before < total <= limit
        assert admin_status(b, "flushed")["used"] == total  # b started last: its admin key is the ledger's
    finally:
        a.stop()
        b.stop()


def test_a_counter_below_the_ledger_is_corrected_logged_and_counted(tmp_path, private_redis):  # noqa: F811
    cfg = redis_config(private_redis.url, [{"project": "drift", "tokens": 100_000, "period": "day"}])
    cfg["governance"]["reconcile_interval_s"] = 0.5
    gw = GatewayProc(tmp_path / "g", cfg).start()
    try:
        client = gw.client(gw.create_key(user="x", project="drift"))
        for _ in range(3):
            ask(client, max_tokens=6)
        used = tokens_used(quiet(gw))
        r = redis.Redis.from_url(private_redis.url)
        (key,) = [k for k in r.scan_iter(match=f"{cfg['redis']['prefix']}c:q:project=drift*")]
        r.hset(key, "used", 1)  # the counter forgot (a stale replica, a bad restore)
        r.close()
        wait_for(lambda: admin_status(gw, "drift")["used"] == used, what="the correction")
        metrics = httpx.get(f"http://127.0.0.1:{gw.port}/metrics").text
        assert re.search(r'tokenabacus_quota_counter_corrections_total\{scope="project"\} [1-9]', metrics), metrics
        assert f'tokenabacus_quota_counter_corrected_amount_total{{scope="project"}} {float(used - 1)}' in metrics
        assert "below the ledger" in gw.log.read_text()
    finally:
        gw.stop()


# 3. A shared ledger without Redis ---------------------------------------------------------------------
def test_gateways_sharing_postgres_without_redis_never_enforce_limits_per_process(tmp_path, pg_url):
    declared = {
        "ledger": {"url": pg_url},
        "governance": {"quotas": [{"project": "pg", "tokens": 500, "period": "day"}]},
    }
    first = GatewayProc(tmp_path / "one", declared).start()
    try:
        second = GatewayProc(tmp_path / "two", declared)
        with pytest.raises(ProcessExited):
            second.start()
        log = second.log.read_text()
        assert "redis.url" in log and "another gateway" in log and "Traceback" not in log
        assert second.proc is not None and second.proc.wait(10) != 0
    finally:
        first.stop()
    # No limit at start: both serve. A limit set later is enforced by the lease holder only.
    plain = {"ledger": {"url": pg_url}, "governance": {"refresh_interval_s": 0.2}}
    a = GatewayProc(tmp_path / "a", plain).start()
    b = GatewayProc(tmp_path / "b", plain).start()
    try:
        ka, kb = a.create_key(user="x", project="pg"), b.create_key(user="y", project="pg")
        ask(a.client(ka)), ask(b.client(kb))
        a.cli("quota", "set", "--project", "pg", "--tokens", "300", "--period", "day")
        with pytest.raises(openai.InternalServerError) as info:
            wait_for(lambda: ask(b.client(kb)) and False, timeout=5, what="b's refusal")
        err = info.value.response.json()["error"]
        assert info.value.status_code == 503 and err["code"] == "quota_backend_unavailable"
        assert "redis.url" in err["message"]
        assert b.record(info.value.response.headers["x-request-id"])["status"] == "rejected"
        served, refused = burst(a.client(ka), 20, threads=4)
        assert served and refused
        rows = quiet(a)
        assert tokens_used([r for r in rows if r["project"] == "pg"]) <= 300
        detail = admin(b, "GET", "/health").json()["governance"]["local_counters"]
        assert detail["holding"] is False and str(tmp_path / "a") in (detail["holder"] or "")
    finally:
        a.stop()
        b.stop()


# 4. The embedded model's prompt, exactly ------------------------------------------------------------
CORPUS = [
    [{"role": "user", "content": "Say hi"}],
    [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "List three colours."}],
    [{"role": "user", "content": "你好，请用中文介绍一下北京的天气。价格是¥12.50，订单号 2026-12-07-0042。"}],
    [
        {"role": "user", "content": "Count: one two three"},
        {"role": "assistant", "content": "four five"},
        {"role": "user", "content": [{"type": "text", "text": "and then "}, {"type": "text", "text": "six? 🙂"}]},
    ],
    [{"role": "user", "content": "<|im_start|> is a special token spelled out " + "long text " * 300}],
]


def test_embedded_admission_counts_the_prompt_exactly(tmp_path):
    cfg = {"governance": {"quotas": [{"project": "tiny", "tokens": 1, "period": "day"}]}}
    gw = GatewayProc(tmp_path / "g", cfg).start()
    try:
        free = gw.client(gw.create_key(user="f", project="free"))
        tiny = gw.client(gw.create_key(user="t", project="tiny"))
        for messages in CORPUS:
            out = free.chat.completions.create(model=EMBEDDED, messages=messages, max_tokens=8, **STEADY)
            prompt = out.usage.prompt_tokens
            with pytest.raises(openai.RateLimitError) as info:
                tiny.chat.completions.create(model=EMBEDDED, messages=messages, max_tokens=8, **STEADY)
            needs = re.search(r"needs up to ([\d,]+)", info.value.response.json()["error"]["message"])
            assert needs and int(needs.group(1).replace(",", "")) == prompt + 8, (messages, prompt)
            # A quota of exactly that much admits it (the bound is the prompt, not its byte size).
            name = f"exact-{prompt}"
            set_quota(gw, name, prompt + 8)
            exact = gw.client(gw.create_key(user=name, project=name))
            got = exact.chat.completions.create(model=EMBEDDED, messages=messages, max_tokens=8, **STEADY)
            assert got.usage.prompt_tokens == prompt and got.usage.total_tokens == prompt + 8
        # completions too
        out = free.completions.create(model=EMBEDDED, prompt="Once upon a time", max_tokens=8, **STEADY)
        with pytest.raises(openai.RateLimitError) as info:
            tiny.completions.create(model=EMBEDDED, prompt="Once upon a time", max_tokens=8, **STEADY)
        assert f"needs up to {out.usage.prompt_tokens + 8}." in info.value.response.json()["error"]["message"]
        assert "admission counted" not in gw.log.read_text()  # no mismatch with the engine's own ids
    finally:
        gw.stop()


# 5. A killed gateway's reservations --------------------------------------------------------------------
def test_reservations_are_renewed_while_running_and_reclaimed_at_restart(tmp_path, private_redis, rogue_upstream):  # noqa: F811
    cfg = redis_config(private_redis.url, [{"user": "sig", "tokens": 50_000, "period": "day"}])
    cfg["governance"]["reservation_ttl_s"] = 1.5
    cfg["models"] = [{"name": "slow", "engine": "upstream", "base_url": rogue_upstream}]
    gw = GatewayProc(tmp_path / "k", cfg).start()
    try:
        key = gw.create_key(user="sig")
        start_slow_stream(gw, key, 60)  # 6 s of words: four leases long
        time.sleep(3.5)
        assert admin_status(gw, "sig")["reserved"] >= 60  # renewed: still held past two leases
        start_slow_stream(gw, key, 5000)
        assert admin_status(gw, "sig")["reserved"] >= 5000
        gw.kill()
        gw.start()  # the same data dir: the same owner
        assert admin_status(gw, "sig")["reserved"] == 0  # at once, not a lease later
        assert "released" in gw.log.read_text()
    finally:
        gw.stop()


# 17. No warning from redis-py ----------------------------------------------------------------------------
def test_redis_counters_use_the_asyncio_retry_and_the_cli_prints_no_warning(tmp_path):
    service_available("127.0.0.1", 6379, "Redis")
    code = (
        "import asyncio\n"
        "from tokenabacus.governance.redis_counters import RedisCounters\n"
        "async def main():\n"
        "    rc = RedisCounters('redis://127.0.0.1:6379/0', prefix='warn-test:')\n"
        "    print(await rc.usage(['k']))\n"
        "    await rc.close()\n"
        "asyncio.run(main())\n"
    )
    out = subprocess.run([sys.executable, "-W", "default", "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "[(0, 0)]"
    assert "Warning" not in out.stderr, out.stderr
    cfg = redis_config("redis://127.0.0.1:6379/0", [{"user": "w", "tokens": 100, "period": "day"}])
    gw = GatewayProc(tmp_path / "g", cfg)
    gw.cli("keys", "create", "--user", "w")
    r = gw.cli("quota", "status", "--format", "json")
    assert json.loads(r.stdout)[0]["name"] == "w" and r.stderr == ""
