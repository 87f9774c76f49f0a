"""Local stand-ins for the alert platforms: an HTTP receiver answering as WeCom, DingTalk and
Feishu do, and an SMTP server (aiosmtpd), each on its own thread and port."""

from __future__ import annotations

import asyncio
import email
import json
import threading
from email.message import Message

from aiohttp import web

from procs import free_port


class Receiver:
    """Records every POST; answers {"errcode": 0} (WeCom, DingTalk), {"code": 0} (Feishu) or "ok"."""

    def __init__(self) -> None:
        self.port = free_port()
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
                {"path": request.path, "query": dict(request.query), "json": json.loads(body or b"null")}
            )
            if request.path.startswith("/feishu"):
                return web.json_response({"code": 0, "msg": "success"})
            if request.path.startswith("/slack"):
                return web.Response(text="ok")
            return web.json_response({"errcode": 0, "errmsg": "ok"})

        app = web.Application()
        app.router.add_post("/{tail:.*}", handle)
        runner = web.AppRunner(app)
        self._loop.run_until_complete(runner.setup())
        self._loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
        self._ready.set()
        self._loop.run_forever()

    def on(self, prefix: str) -> list[dict]:
        return [r for r in self.received if r["path"].startswith(prefix)]

    def close(self) -> None:
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
