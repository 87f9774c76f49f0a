"""Bad input gets OpenAI's error JSON with the right status, is recorded, and never hurts the server."""

from __future__ import annotations

import httpx
import openai
import pytest

from conftest import EMBEDDED, GatewayProc
from openapi_schema import validate

GOOD = {"model": EMBEDDED, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}


def post(gw, key, body=None, content=None, headers=None, path="/chat/completions"):
    h = {"Authorization": f"Bearer {key}"} if key else {}
    h.update(headers or {})
    if content is not None:
        h.setdefault("content-type", "application/json")
        return httpx.post(gw.base_url + path, content=content, headers=h, timeout=60)
    return httpx.post(gw.base_url + path, json=body, headers=h, timeout=60)


def check_error(r: httpx.Response, status: int, code: str | None = None) -> dict:
    assert r.status_code == status, r.text
    body = r.json()
    validate(body, "ErrorResponse")
    assert body["error"]["message"]
    if code:
        assert body["error"]["code"] == code
    assert "Traceback" not in r.text
    return body["error"]


BAD_BODIES = {
    "malformed_json": (b'{"model": "x", "messages": [', "invalid_json"),
    "not_an_object": (b"[1, 2, 3]", "invalid_body"),
    "empty_body": (b"", "invalid_json"),
    "messages_wrong_type": ({**GOOD, "messages": "hello"}, "invalid_type"),
    "empty_messages": ({**GOOD, "messages": []}, "empty_array"),
    "message_not_object": ({**GOOD, "messages": ["hi"]}, "invalid_type"),
    "bad_role": ({**GOOD, "messages": [{"role": "wizard", "content": "hi"}]}, "invalid_value"),
    "content_number": ({**GOOD, "messages": [{"role": "user", "content": 42}]}, "invalid_type"),
    "negative_max_tokens": ({**GOOD, "max_tokens": -5}, "invalid_value"),
    "zero_max_tokens": ({**GOOD, "max_tokens": 0}, "invalid_value"),
    "huge_max_tokens": ({**GOOD, "max_tokens": 10**12}, "invalid_value"),
    "string_max_tokens": ({**GOOD, "max_tokens": "100"}, "invalid_type"),
    "bool_max_tokens": ({**GOOD, "max_tokens": True}, "invalid_type"),
    "temperature_out_of_range": ({**GOOD, "temperature": 7}, "invalid_value"),
    "stream_not_bool": ({**GOOD, "stream": "yes"}, "invalid_type"),
    "stream_options_without_stream": ({**GOOD, "stream_options": {"include_usage": True}}, "invalid_value"),
    "missing_model": ({"messages": GOOD["messages"]}, "missing_required_parameter"),
    "model_wrong_type": ({**GOOD, "model": 123}, "invalid_type"),
    "n_above_one": ({**GOOD, "n": 3}, "invalid_value"),
}


@pytest.mark.parametrize("name", sorted(BAD_BODIES))
def test_invalid_bodies_are_400(embedded_gw, embedded_key, name):
    body, code = BAD_BODIES[name]
    r = (
        post(embedded_gw, embedded_key, content=body)
        if isinstance(body, bytes)
        else post(embedded_gw, embedded_key, body)
    )
    check_error(r, 400, code)
    rec = embedded_gw.record(r.headers["x-request-id"])
    assert rec["status"] == "rejected" and rec["error_code"] == code and rec["user"] == "alice"
    assert rec["prompt_tokens"] is None  # unknown is never recorded as zero


def test_oversized_body_limit_is_configurable(tmp_path):
    gw = GatewayProc(tmp_path / "data", {"server": {"max_body_bytes": 2048}, "models": []}).start()
    try:
        key = gw.create_key()
        r = post(gw, key, {**GOOD, "messages": [{"role": "user", "content": "x" * 5000}]})
        check_error(r, 400, "request_too_large")
        assert gw.record(r.headers["x-request-id"])["status"] == "rejected"
    finally:
        gw.stop()


def test_missing_and_bad_keys_are_401(embedded_gw, embedded_key):
    check_error(post(embedded_gw, None, GOOD), 401, "invalid_api_key")
    check_error(post(embedded_gw, "sk-not-a-real-key", GOOD), 401, "invalid_api_key")
    check_error(post(embedded_gw, None, GOOD, headers={"Authorization": "Basic abc"}), 401, "invalid_api_key")
    r = httpx.get(embedded_gw.base_url + "/models", timeout=10)
    check_error(r, 401, "invalid_api_key")
    with pytest.raises(openai.AuthenticationError):
        embedded_gw.client("sk-wrong").chat.completions.create(**GOOD)


def test_unknown_model_is_404(embedded_gw, embedded_key):
    err = check_error(post(embedded_gw, embedded_key, {**GOOD, "model": "gpt-17"}), 404, "model_not_found")
    assert err["param"] == "model"
    check_error(
        httpx.get(embedded_gw.base_url + "/models/gpt-17", headers={"Authorization": f"Bearer {embedded_key}"}),
        404,
        "model_not_found",
    )
    with pytest.raises(openai.NotFoundError):
        embedded_gw.client(embedded_key).chat.completions.create(**{**GOOD, "model": "gpt-17"})


def test_unknown_route_and_method(embedded_gw, embedded_key):
    check_error(httpx.get(embedded_gw.base_url + "/nothing-here"), 404)
    check_error(httpx.get(embedded_gw.base_url + "/chat/completions"), 405)


def test_server_survives_garbage(embedded_gw, embedded_key):
    for content in (b"\xff\xfe\x00garbage", b"{" * 10000, b'{"model": "' + b"a" * 100000 + b'"}', b"null", b"1e999999"):
        r = post(embedded_gw, embedded_key, content=content)
        assert r.status_code in (400, 404), r.text
    deep = b'{"model":"x","messages":' + b"[" * 5000 + b"]" * 5000 + b"}"
    assert post(embedded_gw, embedded_key, content=deep).status_code == 400
    r = embedded_gw.client(embedded_key).chat.completions.create(**GOOD)
    assert r.usage.total_tokens > 0
