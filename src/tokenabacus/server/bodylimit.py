"""One request body limit (``server.max_body_bytes``) for every route that does not enforce it
itself: the /admin API, the console, and whatever is added later.

A declared Content-Length over the limit is refused before a byte of the body is read; a body
without one (chunked) is refused as soon as it passes the limit. Either way the client gets 413
with OpenAI's error JSON, the route is told the client left (so it stops reading), and whatever
the route answers after that goes nowhere. Nothing past the limit is buffered: the server discards
the rest of an upload it has already answered.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tokenabacus.api.errors import APIError
from tokenabacus.server.asgi import header, send_json


def too_large(limit: int) -> APIError:
    return APIError(
        413, f"The request body is larger than the limit of {limit} bytes.", "invalid_request_error", None,
        "request_too_large",
    )  # fmt: skip


class BodyLimit:
    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = header(scope, b"content-length")
        if declared is not None and declared.strip().isdigit() and int(declared) > self.limit:
            return await send_json(send, 413, too_large(self.limit).body())
        received = 0
        started = refused = False

        async def limited() -> Message:
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            msg = await receive()
            if msg["type"] == "http.request":
                received += len(msg.get("body", b""))
                if received > self.limit:
                    refused = True
                    if not started:
                        await send_json(send, 413, too_large(self.limit).body())
                    return {"type": "http.disconnect"}
            return msg

        async def guarded(msg: Message) -> None:
            nonlocal started
            if refused and not started:
                return  # the 413 is out: the route's own answer to a "disconnect" goes nowhere
            started = started or msg["type"] == "http.response.start"
            await send(msg)

        try:
            await self.app(scope, limited, guarded)
        except Exception:
            if not refused:
                raise  # a route that fails on the "disconnect" after a 413 has nothing left to say
