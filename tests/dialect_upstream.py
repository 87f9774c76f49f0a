"""Sits in front of a real llama.cpp server and re-emits its streams in another engine's usage
dialect, so the gateway can be tested against all three: `final` (vLLM/OpenAI: one usage chunk
at the end when include_usage is asked), `running` (ms-swift: usage in every chunk), `none`
(llama.cpp server as it is). The usage it reports is appended to --log for the test to compare."""

from __future__ import annotations

import argparse
import json

import aiohttp
from aiohttp import web


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--upstream", required=True)
    ap.add_argument("--style", choices=["final", "running", "none"], required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--log", required=True)
    args = ap.parse_args()

    async def tokens_of(session: aiohttp.ClientSession, text: str) -> int:
        async with session.post(
            args.upstream.removesuffix("/v1") + "/extras/tokenize/count", json={"input": text}
        ) as r:
            return (await r.json())["count"]

    async def chat(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        session: aiohttp.ClientSession = request.app["session"]
        if not body.get("stream"):
            async with session.post(args.upstream + "/chat/completions", json=body) as r:
                return web.Response(body=await r.read(), status=r.status, content_type="application/json")
        include_usage = bool((body.pop("stream_options", None) or {}).get("include_usage"))
        prompt = await tokens_of(session, "".join(m.get("content") or "" for m in body["messages"]))
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        completion = 0
        last = None
        async with session.post(args.upstream + "/chat/completions", json=body) as r:
            async for line in r.content:
                if not line.startswith(b"data: "):
                    continue
                data = line[6:].strip()
                if data == b"[DONE]":
                    break
                chunk = json.loads(data)
                last = chunk
                if chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                    completion += 1
                if args.style == "running":
                    chunk["usage"] = {
                        "prompt_tokens": prompt,
                        "completion_tokens": completion,
                        "total_tokens": prompt + completion,
                    }
                await resp.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
        usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
        if args.style == "final" and include_usage:
            await resp.write(b"data: " + json.dumps({**last, "choices": [], "usage": usage}).encode() + b"\n\n")
        await resp.write(b"data: [DONE]\n\n")
        with open(args.log, "a") as fh:
            fh.write(json.dumps({"style": args.style, "include_usage": include_usage, "usage": usage}) + "\n")
        return resp

    async def models(request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": []})

    async def startup(app: web.Application) -> None:
        app["session"] = aiohttp.ClientSession()

    async def cleanup(app: web.Application) -> None:
        await app["session"].close()

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/v1/models", models)
    app.on_startup.append(startup)
    app.on_cleanup.append(cleanup)
    web.run_app(app, host="127.0.0.1", port=args.port, print=None)


if __name__ == "__main__":
    main()
