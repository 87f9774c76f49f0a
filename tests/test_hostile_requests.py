"""Requests a hostile or careless client sends the embedded model: never a 500, refusals bill
nothing and still name the model, and the engine never generates past max_tokens."""

from __future__ import annotations

import json
import socket
import time

import httpx
import pytest

from conftest import EMBEDDED, GatewayProc
from openapi_schema import validate
from procs import wait_for
from test_errors import check_error, post

GOOD = {"model": EMBEDDED, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
TEXT_PARTS = [{"type": "text", "text": "Tell me"}, {"type": "text", "text": "a joke."}]


def test_text_parts_are_flattened_and_counted_like_a_string(embedded_gw, embedded_key):
    client = embedded_gw.client(embedded_key)
    as_parts = client.chat.completions.create(
        model=EMBEDDED, max_tokens=2, messages=[{"role": "user", "content": TEXT_PARTS}]
    )
    as_string = client.chat.completions.create(
        model=EMBEDDED, max_tokens=2, messages=[{"role": "user", "content": "Tell me\na joke."}]
    )
    assert as_parts.usage.prompt_tokens == as_string.usage.prompt_tokens > 0


@pytest.mark.parametrize(
    "messages",
    [
        [{"role": "user", "content": []}],
        [{"role": "assistant", "content": None}],
        [
            {"role": "user", "content": "What's the weather?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "weather", "arguments": '{"city": "Beijing"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "Sunny, 21C"},
        ],
    ],
    ids=["empty-parts", "lone-assistant-null", "tool-round-trip"],
)
def test_odd_but_valid_messages_are_served(embedded_gw, embedded_key, messages):
    r = post(embedded_gw, embedded_key, {**GOOD, "messages": messages})
    assert r.status_code == 200, r.text
    validate(r.json(), "CreateChatCompletionResponse")
    rec = embedded_gw.record(r.headers["x-request-id"])
    assert rec["status"] == "ok" and rec["prompt_tokens"] == r.json()["usage"]["prompt_tokens"]


REFUSED = {
    "image-part": (
        {
            **GOOD,
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "what is this"},
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}},
                    ],
                }
            ],
        },
        "messages[0].content",
        "unsupported_content",
    ),
    "response-format-string": ({**GOOD, "response_format": "json"}, "response_format", "invalid_value"),
    "logit-bias-list": ({**GOOD, "logit_bias": [1, 2]}, "logit_bias", "invalid_type"),
    "logit-bias-beyond-vocab": ({**GOOD, "logit_bias": {"99999999": 5}}, "logit_bias", "invalid_value"),
    "tool-choice-bogus": ({**GOOD, "tool_choice": "sometimes"}, "tool_choice", "invalid_value"),
    "tool-choice-unknown-function": (
        {**GOOD, "tool_choice": {"type": "function", "function": {"name": "nope"}}},
        "tool_choice",
        "invalid_value",
    ),
    "max-tokens-float": ({**GOOD, "max_tokens": 1e23}, "max_tokens", "invalid_type"),
}


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_bad_parameters_are_400_with_param_and_bill_nothing(embedded_gw, embedded_key, name):
    body, param, code = REFUSED[name]
    err = check_error(post(embedded_gw, embedded_key, body), 400, code)
    assert err["param"] == param
    r = post(embedded_gw, embedded_key, body)
    rec = embedded_gw.record(r.headers["x-request-id"])
    assert rec["status"] == "rejected" and rec["model"] == EMBEDDED  # the body named it
    assert (rec["prompt_tokens"], rec["completion_tokens"], rec["total_tokens"]) == (None, None, None)
    if name == "max-tokens-float":
        assert "1e+23" in err["message"] and "float" not in err["message"]


def test_empty_completion_prompt_is_400(embedded_gw, embedded_key):
    err = check_error(
        post(embedded_gw, embedded_key, {"model": EMBEDDED, "prompt": "", "max_tokens": 2}, path="/completions"), 400
    )
    assert err["param"] == "prompt"


def test_context_overflow_is_rejected_and_bills_nothing(embedded_gw, embedded_key):
    long = "token " * 5000
    for stream in (False, True):
        r = post(embedded_gw, embedded_key, {**GOOD, "stream": stream, "messages": [{"role": "user", "content": long}]})
        check_error(r, 400, "context_length_exceeded")
        rec = embedded_gw.record(r.headers["x-request-id"])
        assert rec["status"] == "rejected" and rec["prompt_tokens"] is None and rec["total_tokens"] is None
    rows = json.loads(embedded_gw.cli("report", "--by", "status", "--format", "json").stdout)
    assert next(row for row in rows if row["status"] == "rejected")["total_tokens"] == 0


# Prompts whose replies are mostly multi-byte characters: a cut at max_tokens lands inside one.
MULTIBYTE = ["用中文写一首关于月亮的诗", "Reply with five emoji only 🎉", "请用日语回答：你好吗？"]


@pytest.mark.parametrize("stream", [False, True])
def test_never_more_completion_tokens_than_max_tokens(embedded_gw, embedded_key, stream):
    client = embedded_gw.client(embedded_key)
    for prompt in MULTIBYTE:
        for max_tokens in range(1, 9):
            messages = [{"role": "user", "content": prompt}]
            if stream:
                chunks = list(
                    client.chat.completions.create(
                        model=EMBEDDED,
                        messages=messages,
                        max_tokens=max_tokens,
                        temperature=0,
                        stream=True,
                        stream_options={"include_usage": True},
                    )
                )
                usage = chunks[-1].usage
            else:
                usage = client.chat.completions.create(
                    model=EMBEDDED, messages=messages, max_tokens=max_tokens, temperature=0
                ).usage
            assert usage.completion_tokens <= max_tokens, (prompt, max_tokens, usage)


def test_revoked_key_is_named_on_its_401_record_and_agents_are_bounded(embedded_gw):
    key = embedded_gw.create_key(user="leaver", project="gone", department="hr")
    key_id = next(
        k["key_id"]
        for k in json.loads(embedded_gw.cli("keys", "list", "--format", "json").stdout)
        if k["user"] == "leaver"
    )
    embedded_gw.cli("keys", "revoke", key_id)
    answers: list[httpx.Response] = []

    def refused() -> bool:
        answers.append(post(embedded_gw, key, GOOD, headers={"User-Agent": "x" * 5000}))
        return answers[-1].status_code == 401

    wait_for(refused, 10, "the revoked key to be refused")
    r = answers[-1]
    check_error(r, 401, "invalid_api_key")
    rec = embedded_gw.record(r.headers["x-request-id"])
    assert rec["status"] == "rejected" and rec["key_id"] == key_id and rec["user"] is None
    assert len(rec["user_agent"]) == 200
    anon = post(embedded_gw, None, GOOD, headers={"User-Agent": "y" * 5000})
    rec = embedded_gw.record(anon.headers["x-request-id"])
    assert rec["key_id"] is None and len(rec["user_agent"]) == 200


def test_404_and_405_carry_a_request_id(embedded_gw):
    for r in (httpx.get(embedded_gw.base_url + "/nothing-here"), httpx.get(embedded_gw.base_url + "/chat/completions")):
        assert r.headers["x-request-id"].startswith("req_")


def test_slow_headers_are_cut_off(tmp_path):
    gw = GatewayProc(tmp_path / "data", {"server": {"header_timeout_s": 1}}).start()
    try:
        with socket.create_connection(("127.0.0.1", gw.port)) as s:
            s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")  # and never the rest
            s.settimeout(5)
            t0 = time.monotonic()
            assert s.recv(1024) == b""  # closed by the server
            assert 0.5 < time.monotonic() - t0 < 4
        # An honest client on a kept-alive connection is not affected by the deadline.
        with httpx.Client(timeout=10) as c:
            for _ in range(2):
                assert c.get(gw.base_url.removesuffix("/v1") + "/health").status_code == 200
                time.sleep(1.5)  # the scenario: idle on the connection for longer than header_timeout_s
    finally:
        gw.stop()
