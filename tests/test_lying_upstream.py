"""Upstreams that lie or break: their figures are validated before they are billed or echoed,
refusals bill nothing, malformed answers are 502, and streaming and non-streaming failures are
recorded alike."""

from __future__ import annotations

import json

import httpx
import pytest

from conftest import GatewayProc, free_port, gguf_path
from openapi_schema import validate

MESSAGES = [{"role": "user", "content": "Say hello."}]


def gguf_tokenizer() -> dict:
    return {"type": "gguf", "path": str(gguf_path())}


def entry(name: str, base_url: str, upstream_model: str, **kw) -> dict:
    return {"name": name, "engine": "upstream", "base_url": base_url, "upstream_model": upstream_model, **kw}


@pytest.fixture(scope="module")
def rogue_gw(tmp_path_factory, rogue_upstream):
    rogue = rogue_upstream
    models = []
    for lie in ("usage-huge", "usage-negative", "usage-bool", "usage-float"):
        models.append(entry(f"{lie}-billed-upstream", rogue, lie, tokenizer=gguf_tokenizer(), bill="upstream"))
        models.append(entry(f"{lie}-bare", rogue, lie))
    models += [
        entry("honest", rogue, "honest", tokenizer=gguf_tokenizer()),
        entry("toolcalls", rogue, "toolcalls-5", tokenizer=gguf_tokenizer()),
        entry("sse-1mb", rogue, "sse-1mb", tokenizer=gguf_tokenizer()),
        entry("refuse", rogue, "refuse", tokenizer=gguf_tokenizer()),
        entry("fail", rogue, "fail", tokenizer=gguf_tokenizer()),
        entry("fail-bare", rogue, "fail"),
        entry("nobody-home", f"http://127.0.0.1:{free_port()}/v1", "x"),
    ]
    gw = GatewayProc(tmp_path_factory.mktemp("rogue") / "data", {"models": models}).start()
    yield gw, gw.create_key(user="mallory", project="abuse", department="sec")
    gw.stop()


def post(gw, key, body):
    return httpx.post(
        f"{gw.base_url}/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=60
    )


def sse_events(r: httpx.Response) -> list[str]:
    return [line[6:] for line in r.text.splitlines() if line.startswith("data: ")]


def assert_sane(usage: dict) -> None:
    for k in ("prompt_tokens", "completion_tokens", "total_tokens"):
        assert type(usage[k]) is int and 0 <= usage[k] < 10**9, usage
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("lie", ["usage-huge", "usage-negative", "usage-bool", "usage-float"])
@pytest.mark.parametrize("setup", ["billed-upstream", "bare"])
def test_lying_usage_is_never_billed_or_echoed(rogue_gw, lie, setup, stream):
    gw, key = rogue_gw
    body = {"model": f"{lie}-{setup}", "messages": MESSAGES, "max_tokens": 8, "stream": stream}
    if stream:
        body["stream_options"] = {"include_usage": True}
    r = post(gw, key, body)
    assert r.status_code == 200, r.text
    if stream:
        events = sse_events(r)
        assert events[-1] == "[DONE]"
        usage = json.loads(events[-2])["usage"]
    else:
        validate(r.json(), "CreateChatCompletionResponse")
        usage = r.json()["usage"]
    assert_sane(usage)
    rec = gw.record(r.headers["x-request-id"])
    assert (rec["prompt_tokens"], rec["completion_tokens"], rec["total_tokens"]) == (
        usage["prompt_tokens"],
        usage["completion_tokens"],
        usage["total_tokens"],
    )
    # The lie is kept nowhere: not as the upstream's figure, not as the bill.
    assert rec["upstream_prompt_tokens"] is None
    assert rec["upstream_completion_tokens"] == (5 if lie == "usage-huge" else None)  # that one figure was sane
    assert rec["usage_source"] == ("tokenizer" if setup == "billed-upstream" else "estimated")
    assert rec["prompt_tokens"] > 0 and rec["completion_tokens"] > 0
    assert "unusable usage figures" in gw.log.read_text()


def test_lies_do_not_poison_the_ledger_or_reports(rogue_gw):
    gw, key = rogue_gw
    for _ in range(2):
        assert post(gw, key, {"model": "usage-huge-bare", "messages": MESSAGES}).status_code == 200
    r = post(gw, key, {"model": "honest", "messages": MESSAGES})
    gw.record(r.headers["x-request-id"])  # the writer keeps moving records
    health = httpx.get(gw.base_url.removesuffix("/v1") + "/health").json()
    assert health["ledger"]["ok"] is True
    rows = json.loads(gw.cli("report", "--by", "model", "--format", "json").stdout)
    assert rows and all(0 <= row["total_tokens"] < 10**9 for row in rows)
    assert all(row["total_tokens"] == row["prompt_tokens"] + row["completion_tokens"] for row in rows)


@pytest.mark.parametrize("model,stream", [("toolcalls", False), ("toolcalls", True), ("sse-1mb", True)])
def test_malformed_upstream_answers_are_502(rogue_gw, model, stream):
    gw, key = rogue_gw
    r = post(gw, key, {"model": model, "messages": MESSAGES, "max_tokens": 8, "stream": stream})
    if r.status_code == 200:  # the stream had started: the error comes in-band, as OpenAI sends it
        assert stream
        err = json.loads(sse_events(r)[-1])["error"]
    else:
        assert r.status_code == 502, r.text
        err = r.json()["error"]
        validate(r.json(), "ErrorResponse")
    assert err["code"] == "upstream_bad_response"
    rec = gw.record(r.headers["x-request-id"])
    assert rec["status"] == "error" and rec["error_code"] == "upstream_bad_response"
    assert "Traceback" not in gw.log.read_text()


@pytest.mark.parametrize("stream", [False, True])
def test_refused_by_the_upstream_is_rejected_and_bills_nothing(rogue_gw, stream):
    gw, key = rogue_gw
    r = post(gw, key, {"model": "refuse", "messages": MESSAGES, "max_tokens": 8, "stream": stream})
    assert r.status_code == 400, r.text
    validate(r.json(), "ErrorResponse")
    rec = gw.record(r.headers["x-request-id"])
    assert rec["status"] == "rejected" and rec["model"] == "refuse"
    assert (rec["prompt_tokens"], rec["completion_tokens"], rec["total_tokens"], rec["usage_source"]) == (None,) * 4


@pytest.mark.parametrize("model", ["fail", "fail-bare"])
def test_stream_and_non_stream_failures_are_recorded_alike(rogue_gw, model):
    gw, key = rogue_gw
    recs = []
    for stream in (False, True):
        r = post(gw, key, {"model": model, "messages": MESSAGES, "max_tokens": 8, "stream": stream})
        assert r.status_code == 502, r.text
        recs.append(gw.record(r.headers["x-request-id"]))
    fields = ("status", "error_code", "prompt_tokens", "completion_tokens", "total_tokens", "usage_source")
    assert [tuple(rec[f] for f in fields) for rec in recs] == [("error", "upstream_error", None, None, None, None)] * 2


def test_image_parts_bill_the_upstreams_prompt_and_say_so(rogue_gw):
    gw, key = rogue_gw
    content = [
        {"type": "text", "text": "What is in this picture?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
    ]
    r = post(gw, key, {"model": "honest", "messages": [{"role": "user", "content": content}], "max_tokens": 8})
    assert r.status_code == 200, r.text
    rec = gw.record(r.headers["x-request-id"])
    assert rec["usage_source"] == "upstream" and rec["prompt_tokens"] == 12  # the rogue's honest figure
    assert "cannot count" in gw.log.read_text()


def test_health_says_not_ready_for_an_upstream_nobody_listens_on(rogue_gw):
    gw, _ = rogue_gw
    models = httpx.get(gw.base_url.removesuffix("/v1") + "/health").json()["models"]
    assert models["nobody-home"] == {"ready": False}
    assert models["honest"] == {"ready": True}
