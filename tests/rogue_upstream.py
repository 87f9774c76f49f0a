"""An OpenAI-compatible upstream that misbehaves on purpose; the model name picks the misdeed.

- ``usage-huge`` / ``usage-negative`` / ``usage-bool`` / ``usage-float``: a normal reply whose
  usage figures lie (2**62, negative numbers, booleans, floats).
- ``toolcalls-5``: ``tool_calls`` is a number instead of a list.
- ``sse-1mb``: a stream whose second event is one 1 MB line.
- ``refuse``: 400 with a context-length error, as vLLM answers.
- ``fail``: 500 before any byte.
- ``slow``: a stream of one word every 100 ms, ``max_tokens`` words (default 300).
- ``inflate-10``: streams ``max_tokens`` words (16 without it), cut at the limit, and claims ten
  times everything: ten tokens per byte of the prompt's messages, ten per word it sent.
- ``claims``: replies ``metadata.text`` with ``metadata.finish`` as finish_reason and
  ``metadata.completion_tokens`` as its completion count (an engine whose ids the text may not
  spell back exactly).
- anything else: a plain, honest reply.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from aiohttp import web

WORDS = ["Hello", " world", ",", " how", " are", " you", "?"]
LIES = {
    "usage-huge": {"prompt_tokens": 2**62, "completion_tokens": 5, "total_tokens": 2**62 + 5},
    "usage-negative": {"prompt_tokens": -2000, "completion_tokens": -10, "total_tokens": -2010},
    "usage-bool": {"prompt_tokens": True, "completion_tokens": True, "total_tokens": 2},
    "usage-float": {"prompt_tokens": 3.5, "completion_tokens": 1e30, "total_tokens": 1e30},
}


def honest_usage(n: int) -> dict:
    return {"prompt_tokens": 12, "completion_tokens": n, "total_tokens": 12 + n}


def chunk(model: str, delta: dict, finish: str | None = None) -> bytes:
    body = {
        "id": "chatcmpl-rogue",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return b"data: " + json.dumps(body).encode() + b"\n\n"


async def chat(request: web.Request) -> web.StreamResponse:
    body = await request.json()
    model = body.get("model", "")
    if model == "refuse":
        err = {
            "error": {
                "message": "This model's maximum context length is 2048 tokens.",
                "type": "BadRequestError",
                "param": None,
                "code": 400,
            }
        }
        return web.json_response(err, status=400)
    if model == "fail":
        return web.json_response({"error": {"message": "boom"}}, status=500)
    usage = LIES.get(model, honest_usage(len(WORDS)))
    words, finish = WORDS, "stop"
    if model == "inflate-10":
        limit = body.get("max_completion_tokens") or body.get("max_tokens") or 16
        words, finish = [" the"] * int(limit), "length"
        size = len(json.dumps(body["messages"], ensure_ascii=False, separators=(",", ":")).encode())
        usage = {"prompt_tokens": 10 * size, "completion_tokens": 10 * len(words), "total_tokens": 10 * (size + limit)}
    if model == "claims":
        meta = body.get("metadata") or {}
        words, finish = [meta["text"]], meta["finish"]
        usage = {**honest_usage(0), "completion_tokens": int(meta["completion_tokens"])}
    if not body.get("stream"):
        message: dict = {"role": "assistant", "content": "".join(words)}
        if model == "toolcalls-5":
            message["tool_calls"] = 5
        out = {
            "id": "chatcmpl-rogue",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": usage,
        }
        return web.json_response(out)
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    await resp.write(chunk(model, {"role": "assistant", "content": ""}))
    if model == "sse-1mb":
        await resp.write(chunk(model, {"content": "x" * (1 << 20)}))
    elif model == "toolcalls-5":
        await resp.write(chunk(model, {"tool_calls": 5}))
    elif model == "slow":
        for i in range(int(body.get("max_tokens") or 300)):
            await resp.write(chunk(model, {"content": f" w{i}"}))
            await asyncio.sleep(0.1)
    else:
        for w in words:
            await resp.write(chunk(model, {"content": w}))
    await resp.write(chunk(model, {}, finish))
    if (body.get("stream_options") or {}).get("include_usage"):
        tail = {
            "id": "chatcmpl-rogue",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
            "choices": [],
            "usage": usage,
        }
        await resp.write(b"data: " + json.dumps(tail).encode() + b"\n\n")
    await resp.write(b"data: [DONE]\n\n")
    return resp


async def models(request: web.Request) -> web.Response:
    return web.json_response({"object": "list", "data": []})


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    args = ap.parse_args()
    app = web.Application(client_max_size=1 << 24)
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/v1/models", models)
    web.run_app(app, host="127.0.0.1", port=args.port, print=None)


if __name__ == "__main__":
    main()
