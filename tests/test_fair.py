"""Fair scheduling through the real gateway: a model with a concurrency limit serves waiting
projects in weighted fair order, so one project's flood cannot starve another; a wait past the
queue limit is a clear 503 and a rejected record."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

from conftest import EMBEDDED, GatewayProc
from procs import wait_for

SAY = [{"role": "user", "content": "hi"}]


def slow(client: openai.OpenAI, words: int):
    """A streamed request to the slow upstream: it holds its slot for ``words`` x 100 ms."""
    return client.chat.completions.create(model="slow", messages=SAY, max_tokens=words, stream=True)


def queue(g: GatewayProc, model: str) -> dict:
    """A model's queue now: running, waiting, max_concurrency (the admin view of /health)."""
    return httpx.get(f"http://127.0.0.1:{g.port}/health", headers={"Authorization": f"Bearer {g.admin_key}"}).json()[
        "governance"
    ]["queues"][model]


@pytest.fixture
def gw(tmp_path, rogue_upstream):
    # "slow" streams one word per 100 ms: 4 words hold a slot for about 0.4 s.
    cfg = {
        "models": [{"name": "slow", "engine": "upstream", "base_url": rogue_upstream, "max_concurrency": 2}],
        "governance": {"fair": {"queue_timeout_s": 60}},
    }
    g = GatewayProc(tmp_path / "data", cfg).start()
    yield g
    g.stop()


def test_a_flood_from_one_project_does_not_starve_another(gw):
    a = gw.client(gw.create_key(user="batch", project="A"), timeout=120)
    b = gw.client(gw.create_key(user="chat", project="B"), timeout=120)
    done: dict[str, list[float]] = {"A": [], "B": []}
    lock = threading.Lock()

    def call(client, who: str) -> None:
        list(slow(client, 4))
        with lock:
            done[who].append(time.monotonic())

    t0 = time.monotonic()
    with ThreadPoolExecutor(48) as pool:
        flood = [pool.submit(call, a, "A") for _ in range(40)]
        # A's flood is queued: 40 requests, 2 slots, about 8 s of work.
        wait_for(lambda: queue(gw, "slow")["waiting"] >= 30, 30, "A's flood in the queue")
        b_start = time.monotonic()
        late = [pool.submit(call, b, "B") for _ in range(4)]
        for f in late + flood:
            f.result()
    b_waits = [t - b_start for t in done["B"]]
    a_end = max(done["A"]) - t0
    # Fair order alternates A and B, so B's 4 requests finish within a few slot turns (0.4 s each),
    # while FIFO would put them behind A's whole backlog (about 7 s more).
    assert max(b_waits) < 3.0, (b_waits, a_end)
    assert a_end > max(b_waits) + 2.0


def test_queue_wait_limit_is_a_503_and_a_rejected_record(tmp_path, rogue_upstream):
    cfg = {
        "models": [{"name": "slow", "engine": "upstream", "base_url": rogue_upstream, "max_concurrency": 1}],
        "governance": {"fair": {"queue_timeout_s": 0.5}},
    }
    g = GatewayProc(tmp_path / "q", cfg).start()
    try:
        key = g.create_key(user="u", project="P")
        hold = threading.Thread(target=lambda: list(slow(g.client(key, timeout=60), 20)))
        hold.start()
        wait_for(lambda: queue(g, "slow")["running"] == 1, 10, "the first request holding the only slot")
        with pytest.raises(openai.InternalServerError) as info:
            list(slow(g.client(key), 2))
        assert info.value.status_code == 503
        err = info.value.response.json()["error"]
        assert err["code"] == "queue_timeout" and "slow" in err["message"]
        rec = g.record(info.value.response.headers["x-request-id"])
        assert rec["status"] == "rejected" and rec["error_code"] == "queue_timeout"
        hold.join()
        slow_queue = queue(g, "slow")
        assert slow_queue["running"] == 0 and slow_queue["waiting"] == 0
    finally:
        g.stop()


def test_embedded_model_is_scheduled_fairly_by_default(tmp_path):
    g = GatewayProc(tmp_path / "e", {}).start()
    try:
        key = g.create_key(user="u", project="P")
        with ThreadPoolExecutor(6) as pool:
            list(
                pool.map(
                    lambda _: g.client(key).chat.completions.create(model=EMBEDDED, messages=SAY, max_tokens=2),
                    range(6),
                )
            )
        queues = httpx.get(
            f"http://127.0.0.1:{g.port}/health", headers={"Authorization": f"Bearer {g.admin_key}"}
        ).json()["governance"]["queues"]
        assert queues[EMBEDDED]["max_concurrency"] == 1 and queues[EMBEDDED]["running"] == 0
    finally:
        g.stop()
