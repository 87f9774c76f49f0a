"""Small ASGI helpers for the plain handlers of the hot path (no Request objects, no middleware)."""

from __future__ import annotations

import asyncio

from starlette.types import Receive, Scope, Send

JSON_HEADERS = [(b"content-type", b"application/json")]
SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


class BodyTooLarge(Exception):
    pass


def header(scope: Scope, name: bytes) -> str | None:
    for k, v in scope["headers"]:
        if k == name:
            return v.decode("latin-1")
    return None


def auth_and_agent(scope: Scope) -> tuple[str | None, str | None]:
    """The two headers the hot path reads, in one pass."""
    auth = agent = None
    for k, v in scope["headers"]:
        if k == b"authorization":
            auth = v.decode("latin-1")
        elif k == b"user-agent":
            agent = v.decode("latin-1")
    return auth, agent


async def send_json(
    send: Send, status: int, body: bytes, request_id: str | None = None, extra: dict[str, str] | None = None
) -> None:
    headers = list(JSON_HEADERS)
    if request_id:
        headers.append((b"x-request-id", request_id.encode()))
    if extra:
        headers.extend((k.encode(), v.encode()) for k, v in extra.items())
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def read_body(receive: Receive, limit: int) -> bytes:
    """The whole request body; BodyTooLarge past ``limit`` bytes, ConnectionResetError if the
    client leaves while sending it."""
    chunks: list[bytes] = []
    size = 0
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            raise ConnectionResetError("client went away while sending the body")
        chunk = msg.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
        if not msg.get("more_body"):
            return b"".join(chunks)


async def watch_disconnect(receive: Receive, disconnected: asyncio.Event) -> None:
    """Set ``disconnected`` when the client goes away (run as a task beside a streamed response)."""
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            disconnected.set()
            return
