"""Checks for /v1 request bodies, hand-written to stay off the per-request pydantic path.

Only what the gateway relies on is checked strictly (types it reads, bounds it enforces);
other OpenAI parameters pass through to the engine untouched.
"""

from __future__ import annotations

from typing import Any

from tokenabacus.api.errors import bad_request

_ROLES = {"system", "developer", "user", "assistant", "tool", "function"}
_MAX_N = 1  # the embedded engine and the ledger contract bill one choice per request


def _int_field(body: dict, name: str, lo: int, hi: int) -> None:
    v = body.get(name)
    if v is None:
        return
    if isinstance(v, bool) or not isinstance(v, int):
        raise bad_request(f"'{name}' must be an integer, got {type(v).__name__}.", name, "invalid_type")
    if v < lo or v > hi:
        raise bad_request(f"'{name}' must be between {lo} and {hi}, got {v}.", name, "invalid_value")


def _num_field(body: dict, name: str, lo: float, hi: float) -> None:
    v = body.get(name)
    if v is None:
        return
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise bad_request(f"'{name}' must be a number.", name, "invalid_type")
    if not (lo <= v <= hi):
        raise bad_request(f"'{name}' must be between {lo} and {hi}, got {v}.", name, "invalid_value")


def _common(body: Any, max_tokens_limit: int) -> None:
    if not isinstance(body, dict):
        raise bad_request("The request body must be a JSON object.", None, "invalid_body")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request("'model' is required and must be a non-empty string.", "model", "invalid_type" if model is not None else "missing_required_parameter")
    _int_field(body, "max_tokens", 1, max_tokens_limit)
    _int_field(body, "max_completion_tokens", 1, max_tokens_limit)
    _int_field(body, "n", 1, _MAX_N)
    _int_field(body, "seed", -(2**63), 2**63 - 1)
    _num_field(body, "temperature", 0, 2)
    _num_field(body, "top_p", 0, 1)
    _num_field(body, "presence_penalty", -2, 2)
    _num_field(body, "frequency_penalty", -2, 2)
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise bad_request("'stream' must be a boolean.", "stream", "invalid_type")
    so = body.get("stream_options")
    if so is not None:
        if not isinstance(so, dict):
            raise bad_request("'stream_options' must be an object.", "stream_options", "invalid_type")
        if not stream:
            raise bad_request("'stream_options' is only allowed when 'stream' is true.", "stream_options", "invalid_value")
        iu = so.get("include_usage")
        if iu is not None and not isinstance(iu, bool):
            raise bad_request("'stream_options.include_usage' must be a boolean.", "stream_options.include_usage", "invalid_type")
    stop = body.get("stop")
    if stop is not None and not isinstance(stop, str):
        if not isinstance(stop, list) or len(stop) > 4 or not all(isinstance(s, str) for s in stop):
            raise bad_request("'stop' must be a string or a list of up to 4 strings.", "stop", "invalid_value")


def _content_ok(content: Any) -> bool:
    if content is None or isinstance(content, str):
        return True
    if isinstance(content, list):
        return all(isinstance(p, dict) and isinstance(p.get("type"), str) for p in content)
    return False


def validate_chat(body: Any, max_tokens_limit: int) -> None:
    _common(body, max_tokens_limit)
    messages = body.get("messages")
    if messages is None:
        raise bad_request("'messages' is required.", "messages", "missing_required_parameter")
    if not isinstance(messages, list):
        raise bad_request("'messages' must be an array.", "messages", "invalid_type")
    if not messages:
        raise bad_request("'messages' must contain at least one message.", "messages", "empty_array")
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise bad_request(f"messages[{i}] must be an object.", f"messages[{i}]", "invalid_type")
        role = m.get("role")
        if role not in _ROLES:
            raise bad_request(f"messages[{i}].role must be one of {sorted(_ROLES)}.", f"messages[{i}].role", "invalid_value")
        if not _content_ok(m.get("content")):
            raise bad_request(f"messages[{i}].content must be a string or an array of content parts.", f"messages[{i}].content", "invalid_type")
        if m.get("content") is None and role != "assistant":
            raise bad_request(f"messages[{i}].content is required.", f"messages[{i}].content", "missing_required_parameter")
    tools = body.get("tools")
    if tools is not None and not isinstance(tools, list):
        raise bad_request("'tools' must be an array.", "tools", "invalid_type")


def validate_completion(body: Any, max_tokens_limit: int) -> None:
    _common(body, max_tokens_limit)
    prompt = body.get("prompt")
    if prompt is None:
        raise bad_request("'prompt' is required.", "prompt", "missing_required_parameter")
    if not isinstance(prompt, str):
        # Batched prompts would need one record per prompt; refuse plainly instead of misbilling.
        raise bad_request("'prompt' must be a string.", "prompt", "invalid_type")
