"""Reading an upstream's SSE stream and keeping the accounts while it passes through.

Upstreams report streamed usage three ways: one final usage chunk (vLLM, OpenAI, SGLang with
``include_usage``), running usage in every chunk (ms-swift), or none (llama.cpp server). The
accountant keeps the last usage it saw and the generated text, and strips usage from what the
client gets: the gateway sends its own usage chunk, and only when the client asked for one.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator

import orjson

from tokenabacus.api.call import Observed


class MalformedUpstream(ValueError):
    """The upstream sent something no OpenAI-compatible server sends (the gateway answers 502)."""


async def sse_events(lines: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
    """Yield the data payload of each server-sent event (multi-line data joined by newlines)."""
    data: list[bytes] = []
    async for raw in lines:
        line = raw.rstrip(b"\r\n")
        if not line:
            if data:
                yield b"\n".join(data)
                data = []
            continue
        if line.startswith(b":"):
            continue  # comment / keep-alive
        field, _, value = line.partition(b":")
        if field == b"data":
            data.append(value[1:] if value.startswith(b" ") else value)
    if data:
        yield b"\n".join(data)


class StreamAccountant:
    """Feeds what a stream says about usage, text and model into the call's ``Observed``."""

    def __init__(self, observed: Observed) -> None:
        self.observed = observed
        self.error: dict | None = None

    def feed(self, chunk: dict) -> dict | None:
        """Account for one chunk; return what to forward (None: drop a usage-only chunk)."""
        obs = self.observed
        if obs.model_version is None and isinstance(chunk.get("model"), str):
            obs.model_version = chunk["model"]
        usage = chunk.pop("usage", None)
        if usage is not None:
            obs.upstream_usage = usage
        if "error" in chunk and "choices" not in chunk:
            self.error = chunk["error"] if isinstance(chunk["error"], dict) else {"message": str(chunk["error"])}
            return chunk
        choices = chunk.get("choices")
        if not choices:
            return None if usage is not None else chunk
        if not isinstance(choices, list):
            raise MalformedUpstream(f"choices is {type(choices).__name__}, not an array")
        for ch in choices:
            if not isinstance(ch, dict):
                continue
            if isinstance(ch.get("finish_reason"), str):
                obs.finish_reason = ch["finish_reason"]
            drop_null_fields(ch)
            delta = ch.get("delta")
            if isinstance(delta, dict):
                obs.text_parts.extend(_delta_texts(delta))
            elif isinstance(ch.get("text"), str):  # /v1/completions chunks
                obs.text_parts.append(ch["text"])
        return chunk


def _delta_texts(delta: dict) -> list[str]:
    out = []
    for key in ("content", "reasoning_content", "reasoning", "refusal"):
        v = delta.get(key)
        if isinstance(v, str):
            out.append(v)
    calls = delta.get("tool_calls")
    if calls is not None and not isinstance(calls, list):
        raise MalformedUpstream(f"tool_calls is {type(calls).__name__}, not an array")
    for tc in calls or ():
        fn = tc.get("function") if isinstance(tc, dict) else None
        if isinstance(fn, dict):
            for key in ("name", "arguments"):
                if isinstance(fn.get(key), str):
                    out.append(fn[key])
    return out


# Message fields OpenAI's schema types as an array or object, never null, which engines send as null:
# ms-swift `tool_calls` (every message and delta), vLLM `annotations` and `function_call`.
_NEVER_NULL = ("tool_calls", "function_call", "annotations")


def drop_null_fields(choice: dict) -> None:
    """Remove those fields from a choice's message or delta when they are null."""
    for key in ("delta", "message"):
        m = choice.get(key)
        if isinstance(m, dict):
            for name in _NEVER_NULL:
                if name in m and m[name] is None:
                    del m[name]


def message_text(body: dict) -> str:
    """The generated text of a non-streamed response (all choices)."""
    parts: list[str] = []
    for ch in body.get("choices") or []:
        if not isinstance(ch, dict):
            continue
        msg = ch.get("message")
        if isinstance(msg, dict):
            parts.extend(_delta_texts(msg))
        elif isinstance(ch.get("text"), str):
            parts.append(ch["text"])
    return "".join(parts)


def parse_json(data: bytes) -> dict | None:
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    return obj if isinstance(obj, dict) else None
