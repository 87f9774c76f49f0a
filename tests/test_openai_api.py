"""The /v1 surface through the real openai SDK, validated against OpenAI's OpenAPI schemas."""

from __future__ import annotations

import httpx
import pytest

from conftest import EMBEDDED
from openapi_schema import validate

PROMPT = [{"role": "user", "content": "写一段母亲节促销文案"}]


@pytest.fixture(params=["embedded", "upstream"])
def target(request):
    """(gateway, key, model) for the embedded engine and for a llama.cpp upstream."""
    if request.param == "embedded":
        return request.getfixturevalue("embedded_gw"), request.getfixturevalue("embedded_key"), EMBEDDED
    return request.getfixturevalue("upstream_gw"), request.getfixturevalue("upstream_key"), "smol-gguf"


def test_issue_snippet_prints_exact_usage(embedded_gw, embedded_key):
    client = embedded_gw.client(embedded_key)
    r = client.chat.completions.create(model=EMBEDDED, messages=PROMPT, max_tokens=150)
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    assert 0 < r.usage.completion_tokens <= 150
    validate(r.model_dump(exclude_unset=True), "CreateChatCompletionResponse")


def test_chat_non_stream_schema_headers_and_record(target):
    gw, key, model = target
    raw = gw.client(key).chat.completions.with_raw_response.create(model=model, messages=PROMPT, max_tokens=20)
    request_id = raw.headers["x-request-id"]
    body = raw.http_response.json()
    validate(body, "CreateChatCompletionResponse")
    assert body["model"] == model
    usage = body["usage"]
    rec = gw.record(request_id)
    assert rec["status"] == "ok" and rec["model"] == model and rec["endpoint"] == "/v1/chat/completions"
    assert (rec["prompt_tokens"], rec["completion_tokens"], rec["total_tokens"]) == (
        usage["prompt_tokens"],
        usage["completion_tokens"],
        usage["total_tokens"],
    )
    assert rec["stream"] is False and rec["duration_ms"] >= 0


def test_stream_with_usage_chunk(target):
    gw, key, model = target
    stream = gw.client(key).chat.completions.create(
        model=model, messages=PROMPT, max_tokens=20, temperature=0, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    for ch in chunks:
        validate(ch.model_dump(exclude_unset=True), "CreateChatCompletionStreamResponse")
    usage_chunks = [c for c in chunks if c.usage is not None]
    assert len(usage_chunks) == 1 and usage_chunks[0] is chunks[-1] and chunks[-1].choices == []
    u = usage_chunks[0].usage
    assert u.total_tokens == u.prompt_tokens + u.completion_tokens and u.completion_tokens > 0
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text


def test_stream_without_usage_request_gets_no_usage_chunk(target):
    gw, key, model = target
    with httpx.stream(
        "POST",
        f"{gw.base_url}/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={"model": model, "messages": PROMPT, "max_tokens": 12, "stream": True},
        timeout=120,
    ) as r:
        assert r.status_code == 200
        request_id = r.headers["x-request-id"]
        events = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    assert all('"usage"' not in e for e in events[:-1])
    rec = gw.record(request_id)
    # The gateway metered the stream anyway.
    assert rec["status"] == "ok" and rec["stream"] is True
    assert rec["prompt_tokens"] > 0 and 0 < rec["completion_tokens"] <= 12
    assert rec["ttft_ms"] is not None and rec["ttft_ms"] <= rec["duration_ms"]


def test_completions_endpoint(target):
    gw, key, model = target
    client = gw.client(key)
    r = client.completions.create(model=model, prompt="Once upon a time", max_tokens=10)
    validate(r.model_dump(exclude_unset=True), "CreateCompletionResponse")
    assert r.usage.prompt_tokens > 0 and 0 < r.usage.completion_tokens <= 10
    chunks = list(
        client.completions.create(
            model=model, prompt="The sky is", max_tokens=8, stream=True, stream_options={"include_usage": True}
        )
    )
    for ch in chunks:
        body = ch.model_dump(exclude_unset=True)
        # OpenAI's spec shares this schema between responses and stream chunks but types
        # finish_reason as a string, while the API (and every engine) sends null until the end.
        for choice in body["choices"]:
            assert choice["finish_reason"] in (None, "stop", "length")
            choice["finish_reason"] = choice["finish_reason"] or "stop"
        validate(body, "CreateCompletionResponse")
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_models_list_and_get(target):
    gw, key, model = target
    client = gw.client(key)
    page = client.models.with_raw_response.list()
    body = page.http_response.json()
    validate(body, "ListModelsResponse")
    assert model in [m["id"] for m in body["data"]]
    one = client.models.retrieve(model)
    validate(one.model_dump(exclude_unset=True), "Model")
    assert one.id == model
