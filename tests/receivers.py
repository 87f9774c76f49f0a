"""Local stand-ins for the alert platforms: an HTTP receiver answering as WeCom, DingTalk and
Feishu do, and an SMTP server (aiosmtpd), each on its own thread and port."""

from __future__ import annotations

import asyncio
import email
import json
import threading
import time
from email.message import Message

from aiohttp import web

from procs import free_port


class Receiver:
    """Records every POST (path, query, JSON body, headers, arrival time on the monotonic clock);
    answers {"errcode": 0} (WeCom, DingTalk), {"code": 0} (Feishu) or "ok". ``delays``: seconds to
    sleep before answering, by path prefix (a slow platform)."""

    def __init__(self, port: int | None = None, delays: dict[str, float] | None = None) -> None:
        self.port = port or free_port()
        self.delays = delays or {}
        self.received: list[dict] = []
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        self._ready.wait(10)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def handle(request: web.Request) -> web.Response:
            body = await request.read()
            self.received.append(
                {"path": request.path, "query": dict(request.query), "json": json.loads(body or b"null"),
                 "headers": dict(request.headers), "at": time.monotonic()}
            )  # fmt: skip
            delay = next((s for prefix, s in self.delays.items() if request.path.startswith(prefix)), 0.0)
            if delay:
                await asyncio.sleep(delay)
            if request.path.startswith("/feishu"):
                return web.json_response({"code": 0, "msg": "success"})
            if request.path.startswith("/slack"):
                return web.Response(text="ok")
            return web.json_response({"errcode": 0, "errmsg": "ok"})

        app = web.Application()
        app.router.add_post("/{tail:.*}", handle)
        runner = self._runner = web.AppRunner(app, shutdown_timeout=0.5)  # a sleeping reply is cut at close
        self._loop.run_until_complete(runner.setup())
        self._loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
        self._ready.set()
        self._loop.run_forever()

    def on(self, prefix: str) -> list[dict]:
        return [r for r in self.received if r["path"].startswith(prefix)]

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)


class Mailbox:
    """A real SMTP server on localhost; ``messages`` holds what it accepted."""

    def __init__(self) -> None:
        from aiosmtpd.controller import Controller

        self.messages: list[Message] = []
        box = self

        class Handler:
            async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's hook name
                box.messages.append(email.message_from_bytes(envelope.original_content))
                return "250 OK"

        self.port = free_port()
        self._controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)
        self._controller.start()

    def close(self) -> None:
        self._controller.stop()
