"""An upstream that claims ten times what it did: the real gateway bills at most what the request
could use (max_tokens x n; with no tokenizer, the prompt's size as admission bounds it), keeps the
claim in upstream_*, and says so in `report drift` and /metrics. A token quota and a cost budget
then end exactly at what the records say, never past the limit, under a burst."""

from __future__ import annotations

import json
import re
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from conftest import GatewayProc
from tokenabacus.api.call import CHAT, COMPLETIONS, Call
from tokenabacus.metering.bounds import completion_bound, prompt_bound

MESSAGES = [{"role": "user", "content": "Say hello to everyone in the room, please."}]
SIZE = len(json.dumps(MESSAGES, ensure_ascii=False, separators=(",", ":")).encode())
PROMPT_BOUND = SIZE + 256  # what admission reserves for a prompt it cannot count
DEFAULT_MAX = 6  # governance.default_max_tokens: what admission puts in a body without max_tokens


def entry(name: str, rogue: str, **kw) -> dict:
    return {"name": name, "engine": "upstream", "base_url": rogue, "upstream_model": "inflate-10", **kw}


def config(rogue: str, gguf: str, **governance) -> dict:
    return {
        "models": [
            entry("inflate", rogue),  # no tokenizer: the upstream's figures are billed
            entry("inflate-drift", rogue),  # the same, for the drift and metrics test alone
            entry("inflate-billed-upstream", rogue, tokenizer={"type": "gguf", "path": gguf}, bill="upstream"),
        ],
        "prices": [{"model": "inflate", "input": "2", "output": "6", "per": "1k", "currency": "CNY"}],
        "governance": {"default_max_tokens": DEFAULT_MAX, **governance},
    }


@pytest.fixture(scope="module")
def gw(tmp_path_factory, rogue_upstream):
    from assets import gguf_path

    cfg = config(rogue_upstream, str(gguf_path()), quotas=[{"user": "limited", "tokens": 10**9, "period": "day"}])
    gw = GatewayProc(tmp_path_factory.mktemp("capped") / "data", cfg).start()
    yield gw
    gw.stop()


@pytest.fixture
def gw_factory(tmp_path, rogue_upstream):
    from assets import gguf_path

    started: list[GatewayProc] = []

    def make(**governance) -> GatewayProc:
        gw = GatewayProc(tmp_path / f"d{len(started)}", config(rogue_upstream, str(gguf_path()), **governance))
        started.append(gw.start())
        return gw

    yield make
    for gw in started:
        gw.stop()


def new_key(gw: GatewayProc, user: str, project: str, department: str = "rnd") -> str:
    """A key made over the admin API (quicker than a CLI process per key)."""
    r = httpx.post(
        f"http://127.0.0.1:{gw.port}/admin/keys",
        json={"user": user, "project": project, "department": department},
        headers={"Authorization": f"Bearer {gw.admin_key}"},
    )
    assert r.status_code == 201, r.text
    return r.json()["key"]


def records(gw: GatewayProc, responses: list[httpx.Response], timeout: float = 15) -> list[dict]:
    """The ledger rows of these responses, once the writer has moved them all."""
    from sqlalchemy import select

    from tokenabacus.ledger.schema import usage_records as t

    ids = [r.headers["x-request-id"] for r in responses]
    store = gw.store()
    try:
        deadline = time.monotonic() + timeout
        while True:
            with store.engine.connect() as c:
                rows = {
                    row.request_id: dict(row._mapping) for row in c.execute(select(t).where(t.c.request_id.in_(ids)))
                }
            if len(rows) == len(ids):
                return [rows[i] for i in ids]
            assert time.monotonic() < deadline, f"{len(ids) - len(rows)} records not in the ledger after {timeout}s"
            time.sleep(0.05)
    finally:
        store.close()


def post(gw: GatewayProc, key: str, body: dict) -> httpx.Response:
    return httpx.post(
        f"{gw.base_url}/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=60
    )


def usage_of(r: httpx.Response, stream: bool) -> dict:
    assert r.status_code == 200, r.text
    if not stream:
        return r.json()["usage"]
    events = [line[6:] for line in r.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    return json.loads(events[-2])["usage"]


def body(model: str, stream: bool, limit: str, max_tokens: int = 8) -> dict:
    out: dict = {"model": model, "messages": MESSAGES, "stream": stream}
    if stream:
        out["stream_options"] = {"include_usage": True}
    if limit != "injected":  # else admission puts governance.default_max_tokens in the body
        out[limit] = max_tokens
    return out


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("limit", ["max_tokens", "max_completion_tokens", "injected"])
@pytest.mark.parametrize("model", ["inflate", "inflate-billed-upstream"])
def test_a_claim_above_what_the_request_can_use_is_billed_at_that_bound(gw, model, limit, stream):
    # "limited" has a token quota, so admission bounds its requests; "free" has none.
    key = new_key(gw, "limited" if limit == "injected" else "free", f"p-{model}")
    r = post(gw, key, body(model, stream, limit))
    usage = usage_of(r, stream)
    generated = DEFAULT_MAX if limit == "injected" else 8  # the rogue sends exactly max_tokens words
    rec = gw.record(r.headers["x-request-id"])
    assert rec["usage_source"] == "upstream"
    # The claim is kept where the upstream's figures go...
    assert (rec["upstream_prompt_tokens"], rec["upstream_completion_tokens"]) == (10 * SIZE, 10 * generated)
    # ...and the bill stops at what the request could use: max_tokens x n, and (not counted by us)
    # the prompt's size, as admission bounds it.
    assert rec["completion_tokens"] == generated
    assert rec["prompt_tokens"] == PROMPT_BOUND
    assert (usage["prompt_tokens"], usage["completion_tokens"], usage["total_tokens"]) == (
        rec["prompt_tokens"],
        rec["completion_tokens"],
        rec["total_tokens"],
    )
    if model == "inflate":
        assert rec["cost_micros"] == PROMPT_BOUND * 2000 + generated * 6000  # ¥2 and ¥6 per 1k tokens
    assert "more than max_tokens x n allows" in gw.log.read_text()


def test_n_above_one_is_refused_before_anything_is_billed(gw):
    key = new_key(gw, "free", "p-n")
    r = post(gw, key, {**body("inflate", False, "max_tokens"), "n": 2})
    assert r.status_code == 400 and r.json()["error"]["param"] == "n"
    rec = gw.record(r.headers["x-request-id"])
    assert rec["status"] == "rejected" and rec["total_tokens"] is None


def test_bounds_multiply_by_the_sequences_generated():
    """n = 2 is refused at /v1 today (one choice per record); the bound still counts sequences."""
    chat = Call(CHAT, {"model": "m", "messages": MESSAGES, "max_tokens": 8, "n": 2})
    assert completion_bound(chat) == 16
    assert completion_bound(Call(CHAT, {"model": "m", "messages": MESSAGES})) is None
    assert completion_bound(Call(CHAT, {"model": "m", "messages": MESSAGES, "max_completion_tokens": 5})) == 5
    legacy = Call(COMPLETIONS, {"model": "m", "prompt": "Hi", "max_tokens": 4, "best_of": 3})
    assert completion_bound(legacy) == 12
    assert prompt_bound(legacy) == len(b'"Hi"') + 256
    assert prompt_bound(chat) == PROMPT_BOUND
    tools = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    with_tools = Call(CHAT, {"model": "m", "messages": MESSAGES, "tools": tools})
    assert prompt_bound(with_tools) == PROMPT_BOUND + len(json.dumps(tools, separators=(",", ":")))
    image = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x/y.png"}}]}]
    assert prompt_bound(Call(CHAT, {"model": "m", "messages": image})) is None


def metric(text: str, name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    m = re.search(rf"^{re.escape(name)}\{{{re.escape(want)}\}} (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def test_report_drift_and_metrics_show_the_capped_claims(gw):
    key = new_key(gw, "free", "p-drift")
    records(gw, [post(gw, key, body("inflate-drift", s, "max_tokens")) for s in (False, True)])
    (row,) = [
        r
        for r in json.loads(gw.cli("report", "drift", "--today", "--format", "json").stdout)
        if r["model"] == "inflate-drift"
    ]
    assert row["compared_requests"] == row["mismatched_requests"] == 2
    assert (row["our_completion_tokens"], row["upstream_completion_tokens"]) == (16, 160)
    assert (row["our_prompt_tokens"], row["upstream_prompt_tokens"]) == (2 * PROMPT_BOUND, 20 * SIZE)
    assert row["completion_difference"] == 16 - 160
    text = httpx.get(gw.base_url.removesuffix("/v1") + "/metrics").text
    for kind in ("prompt", "completion"):
        assert metric(text, "tokenabacus_capped_claims_total", model="inflate-drift", type=kind) == 2
    assert metric(text, "tokenabacus_mismatched_requests_total", model="inflate-drift") == 2
    assert (
        metric(text, "tokenabacus_compared_tokens_total", model="inflate-drift", side="upstream", type="completion")
        == 160
    )


def burst(gw: GatewayProc, key: str, requests: int, with_max_tokens: bool) -> list[httpx.Response]:
    def one(i: int) -> httpx.Response:
        return post(gw, key, body("inflate", i % 2 == 1, "max_tokens" if with_max_tokens else "injected"))

    with ThreadPoolExecutor(requests) as pool:
        return list(pool.map(one, range(requests)))


def ok_records(gw: GatewayProc, responses: list[httpx.Response]) -> list[dict]:
    recs = records(gw, responses)
    assert all(r.status_code in (200, 429) for r in responses), [r.text for r in responses if r.status_code >= 400]
    assert sum(r.status_code == 200 for r in responses) == sum(rec["status"] == "ok" for rec in recs)
    return [rec for rec in recs if rec["status"] == "ok"]


def counters(gw: GatewayProc, scope: str, name: str) -> dict:
    """The running gateway's own counters for a limit: used and still reserved."""
    r = httpx.get(
        f"http://127.0.0.1:{gw.port}/admin/quotas/status",
        params={"scope": scope, "name": name},
        headers={"Authorization": f"Bearer {gw.admin_key}"},
    )
    assert r.status_code == 200, r.text
    (row,) = r.json()
    return row


def test_a_token_quota_ends_at_what_the_records_say_under_a_burst(gw_factory):
    limit = 2000
    gw = gw_factory(quotas=[{"user": "burst", "tokens": limit, "period": "day"}])
    key = new_key(gw, "burst", "p-burst")
    responses = burst(gw, key, 12, with_max_tokens=False)
    ok = ok_records(gw, responses)
    per_request = PROMPT_BOUND + DEFAULT_MAX  # billed at the bound: exactly what admission reserved
    assert [rec["total_tokens"] for rec in ok] == [per_request] * len(ok)
    used = sum(rec["total_tokens"] for rec in ok)
    assert len(ok) == limit // per_request and used <= limit
    live = counters(gw, "user", "burst")
    assert (live["used"], live["reserved"]) == (used, 0)
    status = json.loads(gw.cli("quota", "status", "--user", "burst", "--format", "json").stdout)
    assert status[0]["used"] == used  # the ledger's figure, as a restart would seed it


def test_a_cost_budget_ends_at_what_the_records_say_under_a_burst(gw_factory):
    budget = 2_000_000  # ¥2 a day
    gw = gw_factory(quotas=[{"department": "thrifty", "cost": "2", "currency": "CNY", "period": "day"}])
    key = new_key(gw, "spender", "p-cost", "thrifty")
    responses = burst(gw, key, 8, with_max_tokens=True)
    ok = ok_records(gw, responses)
    per_request = PROMPT_BOUND * 2000 + 8 * 6000  # billed at the bound: exactly what admission reserved
    assert [rec["cost_micros"] for rec in ok] == [per_request] * len(ok)
    spent = sum(rec["cost_micros"] for rec in ok)
    assert len(ok) == budget // per_request and spent <= budget
    live = counters(gw, "department", "thrifty")
    assert (live["used"], live["reserved"]) == (spent, 0)
    status = json.loads(gw.cli("quota", "status", "--department", "thrifty", "--format", "json").stdout)
    assert status[0]["used"] == spent
