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
        shown = repr(v) if isinstance(v, float) else type(v).__name__
        raise bad_request(f"'{name}' must be an integer, got {shown}.", name, "invalid_type")
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
        raise bad_request(
            "'model' is required and must be a non-empty string.",
            "model",
            "invalid_type" if model is not None else "missing_required_parameter",
        )
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
            raise bad_request(
                "'stream_options' is only allowed when 'stream' is true.", "stream_options", "invalid_value"
            )
        iu = so.get("include_usage")
        if iu is not None and not isinstance(iu, bool):
            raise bad_request(
                "'stream_options.include_usage' must be a boolean.", "stream_options.include_usage", "invalid_type"
            )
    stop = body.get("stop")
    if stop is not None and not isinstance(stop, str):
        if not isinstance(stop, list) or len(stop) > 4 or not all(isinstance(s, str) for s in stop):
            raise bad_request("'stop' must be a string or a list of up to 4 strings.", "stop", "invalid_value")


_RESPONSE_FORMATS = ("text", "json_object", "json_schema")
_TOOL_CHOICES = ("none", "auto", "required")


def _response_format(body: dict) -> None:
    rf = body.get("response_format")
    if rf is None:
        return
    if not isinstance(rf, dict) or rf.get("type") not in _RESPONSE_FORMATS:
        raise bad_request(
            f"'response_format' must be an object whose type is one of {', '.join(_RESPONSE_FORMATS)}.",
            "response_format",
            "invalid_value",
        )
    if rf["type"] == "json_schema" and not isinstance(rf.get("json_schema"), dict):
        raise bad_request(
            "'response_format.json_schema' must be an object.", "response_format.json_schema", "invalid_type"
        )


def _logit_bias(body: dict) -> None:
    lb = body.get("logit_bias")
    if lb is None:
        return
    if not isinstance(lb, dict):
        raise bad_request("'logit_bias' must be an object mapping token ids to a bias.", "logit_bias", "invalid_type")
    for k, v in lb.items():
        if not k.isdigit() or isinstance(v, bool) or not isinstance(v, (int, float)) or not -100 <= v <= 100:
            raise bad_request(
                f"'logit_bias' maps token ids (integers as strings) to numbers from -100 to 100; got {k!r}: {v!r}.",
                "logit_bias",
                "invalid_value",
            )


def _tools(body: dict) -> None:
    tools = body.get("tools")
    names: set[str] = set()
    if tools is not None:
        if not isinstance(tools, list):
            raise bad_request("'tools' must be an array.", "tools", "invalid_type")
        for i, t in enumerate(tools):
            fn = t.get("function") if isinstance(t, dict) else None
            if (
                not isinstance(t, dict)
                or t.get("type") != "function"
                or not isinstance(fn, dict)
                or not isinstance(fn.get("name"), str)
                or not fn["name"]
            ):
                raise bad_request(
                    f'tools[{i}] must be {{"type": "function", "function": {{"name": ...}}}}.',
                    f"tools[{i}]",
                    "invalid_value",
                )
            if fn.get("parameters") is not None and not isinstance(fn["parameters"], dict):
                raise bad_request(
                    f"tools[{i}].function.parameters must be an object.",
                    f"tools[{i}].function.parameters",
                    "invalid_type",
                )
            names.add(fn["name"])
    choice = body.get("tool_choice")
    if choice is None:
        return
    if isinstance(choice, str):
        if choice not in _TOOL_CHOICES:
            raise bad_request(
                f"'tool_choice' must be one of {', '.join(_TOOL_CHOICES)} or a named function.",
                "tool_choice",
                "invalid_value",
            )
        if choice == "required" and not names:
            raise bad_request("'tool_choice' is 'required' but no tools are given.", "tool_choice", "invalid_value")
        return
    fn = choice.get("function") if isinstance(choice, dict) else None
    if not isinstance(fn, dict) or choice.get("type") != "function" or not isinstance(fn.get("name"), str):
        raise bad_request(
            '\'tool_choice\' must be a string or {"type": "function", "function": {"name": ...}}.',
            "tool_choice",
            "invalid_value",
        )
    if fn["name"] not in names:
        raise bad_request(
            f"'tool_choice' names the function {fn['name']!r}, which is not among 'tools'.",
            "tool_choice",
            "invalid_value",
        )


def _content_ok(content: Any) -> bool:
    if content is None or isinstance(content, str):
        return True
    if isinstance(content, list):
        return all(
            isinstance(p, dict)
            and isinstance(p.get("type"), str)
            and (p["type"] != "text" or isinstance(p.get("text"), str))
            for p in content
        )
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
            raise bad_request(
                f"messages[{i}].role must be one of {sorted(_ROLES)}.", f"messages[{i}].role", "invalid_value"
            )
        if not _content_ok(m.get("content")):
            raise bad_request(
                f"messages[{i}].content must be a string or an array of content parts.",
                f"messages[{i}].content",
                "invalid_type",
            )
        if m.get("content") is None and role != "assistant":
            raise bad_request(
                f"messages[{i}].content is required.", f"messages[{i}].content", "missing_required_parameter"
            )
        calls = m.get("tool_calls")
        if calls is not None and not (isinstance(calls, list) and all(isinstance(c, dict) for c in calls)):
            raise bad_request(
                f"messages[{i}].tool_calls must be an array of objects.", f"messages[{i}].tool_calls", "invalid_type"
            )
    _tools(body)
    _response_format(body)
    _logit_bias(body)


def validate_completion(body: Any, max_tokens_limit: int) -> None:
    _common(body, max_tokens_limit)
    prompt = body.get("prompt")
    if prompt is None:
        raise bad_request("'prompt' is required.", "prompt", "missing_required_parameter")
    if not isinstance(prompt, str):
        # Batched prompts would need one record per prompt; refuse plainly instead of misbilling.
        raise bad_request("'prompt' must be a string.", "prompt", "invalid_type")
    _logit_bias(body)
