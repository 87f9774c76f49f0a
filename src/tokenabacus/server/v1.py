"""The /v1 routes as plain ASGI handlers: the hot path stays lean (no per-request pydantic,
orjson throughout) and every exit writes exactly one ledger record before the last byte."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import orjson

from tokenabacus.api.errors import APIError, bad_request, internal_error, model_not_found, unauthorized
from tokenabacus.api.validation import validate_chat, validate_completion
from tokenabacus.engines.base import CHAT, COMPLETIONS, Call, Engine
from tokenabacus.governance.keys import Identity
from tokenabacus.ledger.record import CANCELLED, ERROR, OK, REJECTED, UsageRecord, clear_usage, start_record

if TYPE_CHECKING:
    from tokenabacus.server.state import Gateway

log = logging.getLogger(__name__)

_JSON = [(b"content-type", b"application/json")]
_SSE = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache"), (b"x-accel-buffering", b"no")]
ADMIN_IDENTITY = Identity("admin", "admin", None, None, admin=True)
# What a request may make the ledger store of its own choosing.
MAX_AGENT, MAX_MODEL = 200, 200


def _header(scope: dict, name: bytes) -> str | None:
    for k, v in scope["headers"]:
        if k == name:
            return v.decode("latin-1")
    return None


def _auth_and_agent(scope: dict) -> tuple[str | None, str | None]:
    """The two headers the hot path reads, in one pass."""
    auth = agent = None
    for k, v in scope["headers"]:
        if k == b"authorization":
            auth = v.decode("latin-1")
        elif k == b"user-agent":
            agent = v.decode("latin-1")
    return auth, agent


async def send_json(send, status: int, body: bytes, request_id: str | None = None) -> None:
    headers = list(_JSON)
    if request_id:
        headers.append((b"x-request-id", request_id.encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def usage_dict(rec: UsageRecord) -> dict:
    """The usage a 200 response shows: the record's own figures (known on every success)."""
    p, c = rec.prompt_tokens or 0, rec.completion_tokens or 0
    u: dict = {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}
    if rec.cached_tokens is not None:
        u["prompt_tokens_details"] = {"cached_tokens": rec.cached_tokens}
    return u


class _BodyTooLarge(Exception):
    pass


async def read_body(receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            raise ConnectionResetError("client went away while sending the body")
        chunk = msg.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _BodyTooLarge
        chunks.append(chunk)
        if not msg.get("more_body"):
            return b"".join(chunks)


class V1:
    def __init__(self, gw: "Gateway") -> None:
        self.gw = gw
        self.limit = gw.settings.server.max_body_bytes
        self.max_tokens_limit = gw.settings.server.max_tokens_limit

    # Shared steps --------------------------------------------------------------------------
    async def _identify(self, auth: str | None, rec: UsageRecord | None = None) -> Identity:
        if not auth or not auth[:7].lower() == "bearer ":
            raise unauthorized("Missing API key. Pass it as 'Authorization: Bearer sk-...'.")
        key = auth[7:].strip()
        if self.gw.keys.is_admin(key):
            return ADMIN_IDENTITY
        ident = await self.gw.keys.resolve(key)
        if ident is None:
            if rec is not None:
                rec.key_id = self.gw.keys.revoked_key_id(key)  # who is still using a revoked key
            raise unauthorized()
        return ident

    def _spool(self, rec: UsageRecord) -> asyncio.Future[None]:
        """Queue the request's one record. Queued is enough for shutdown (the spool flushes what
        is pending when it closes); a response waits for the returned future (fsync)."""
        rec.finish()
        return self.gw.spool.append(rec)

    async def _record(self, rec: UsageRecord) -> None:
        await self._spool(rec)

    async def _failed(self, rec: UsageRecord, e: BaseException, output_sent: bool) -> APIError:
        """Record a failure. A request the engine refused (4xx) is `rejected`; a failure before
        any output bills nothing; one mid-stream bills what was generated."""
        err = e if isinstance(e, APIError) else internal_error()
        if not isinstance(e, APIError):
            log.error("engine failure on %s", rec.request_id, exc_info=e)
        rec.status, rec.error_code = (REJECTED if err.status < 500 else ERROR), err.error_code
        if not output_sent:
            clear_usage(rec)
        await self._record(rec)
        return err

    def _interrupted(self, rec: UsageRecord) -> None:
        """The server is stopping and cancelled this request: record what ran, without awaiting."""
        if rec.duration_ms is None:  # not recorded yet: finish() stamps the duration
            rec.status, rec.error_code = CANCELLED, "server_shutdown"
            self._spool(rec)

    # Models ------------------------------------------------------------------------------------
    async def models(self, scope, receive, send) -> None:
        try:
            await self._identify(_header(scope, b"authorization"))
        except APIError as e:
            return await send_json(send, e.status, e.body())
        path_model = scope.get("path_params", {}).get("model")
        if path_model is not None:
            if path_model not in self.gw.engines:
                e = model_not_found(path_model)
                return await send_json(send, e.status, e.body())
            return await send_json(send, 200, orjson.dumps(self.gw.model_object(path_model)))
        data = [self.gw.model_object(name) for name in self.gw.engines]
        await send_json(send, 200, orjson.dumps({"object": "list", "data": data}))

    # Completions -------------------------------------------------------------------------------
    async def chat(self, scope, receive, send) -> None:
        await self._serve(CHAT, scope, receive, send)

    async def completions(self, scope, receive, send) -> None:
        await self._serve(COMPLETIONS, scope, receive, send)

    async def _serve(self, endpoint: str, scope, receive, send) -> None:
        # The spool's count of requests that will append a record lets a group fsync wait for them.
        self.gw.spool.active += 1
        try:
            await self._handle(endpoint, scope, receive, send)
        except asyncio.CancelledError:
            # Only a stopping server cancels a request; it is recorded, and the task ends here
            # rather than as a traceback in uvicorn's log.
            log.warning("request cancelled by server shutdown (recorded as cancelled)")
        finally:
            self.gw.spool.active -= 1

    async def _handle(self, endpoint: str, scope, receive, send) -> None:
        client = scope.get("client")
        auth, agent = _auth_and_agent(scope)
        rec = start_record(endpoint="/v1/chat/completions" if endpoint == CHAT else "/v1/completions",
                           client_ip=self.gw.client_ip(scope, client[0] if client else None),
                           user_agent=agent[:MAX_AGENT] if agent else None)
        try:
            try:
                body, engine = await self._admit(endpoint, auth, receive, rec)
            except APIError as e:
                rec.status, rec.error_code = REJECTED, e.error_code
                if rec.key_id is None:
                    # Nobody we know: the refusal is recorded, but the caller does not get to
                    # hold a connection open for an fsync of its choosing.
                    self._spool(rec)
                else:
                    await self._record(rec)
                return await send_json(send, e.status, e.body(), rec.request_id)
            except ConnectionResetError:
                rec.status, rec.error_code = CANCELLED, "client_disconnected"
                await self._record(rec)
                return
            call = Call(endpoint=endpoint, body=body, record=rec, stream=rec.stream)
            if rec.stream:
                await self._stream(engine, call, receive, send)
            else:
                await self._complete(engine, call, send)
        except asyncio.CancelledError:
            self._interrupted(rec)
            raise
        except Exception:
            if rec.duration_ms is None:  # a gateway bug: still exactly one record, then a plain 500
                rec.status, rec.error_code = ERROR, "internal_error"
                self._spool(rec)
            raise

    async def _admit(self, endpoint: str, auth: str | None, receive, rec: UsageRecord) -> tuple[dict, Engine]:
        """Identify the caller, read and check the body, resolve the model."""
        ident = await self._identify(auth, rec)
        rec.key_id, rec.user, rec.project, rec.department = ident.key_id, ident.user, ident.project, ident.department
        try:
            raw = await read_body(receive, self.limit)
        except _BodyTooLarge:
            raise bad_request(f"The request body is larger than the limit of {self.limit} bytes.", None, "request_too_large") from None
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as e:
            raise bad_request(f"The request body is not valid JSON: {e.msg} (line {e.lineno}, column {e.colno}).", None, "invalid_json") from None
        if isinstance(body, dict) and isinstance(body.get("model"), str):
            rec.model = body["model"][:MAX_MODEL]  # named even when the rest of the body is refused
        (validate_chat if endpoint == CHAT else validate_completion)(body, self.max_tokens_limit)
        rec.stream = bool(body.get("stream"))
        engine = self.gw.engines.get(body["model"])
        if engine is None:
            raise model_not_found(body["model"])
        rec.engine = engine.kind
        rec.model_version = engine.model_version
        return body, engine

    async def _complete(self, engine: Engine, call: Call, send) -> None:
        rec = call.record
        try:
            out = await engine.complete(call)
        except Exception as e:
            err = await self._failed(rec, e, output_sent=False)
            return await send_json(send, err.status, err.body(), rec.request_id)
        out["model"] = rec.model
        if call.endpoint == CHAT:
            for choice in out.get("choices") or ():
                msg = choice.get("message") if isinstance(choice, dict) else None
                if isinstance(msg, dict):  # fields OpenAI's schema requires and some engines omit
                    msg.setdefault("refusal", None)
                    choice.setdefault("logprobs", None)
        rec.status = OK
        done = self._spool(rec)
        out["usage"] = usage_dict(rec)
        body = orjson.dumps(out)
        await done
        await send_json(send, 200, body, rec.request_id)

    async def _stream(self, engine: Engine, call: Call, receive, send) -> None:
        rec = call.record
        include_usage = bool((call.body.get("stream_options") or {}).get("include_usage"))
        watcher = asyncio.create_task(_watch_disconnect(receive, call.cancelled))
        chunks: AsyncIterator[dict] = engine.stream(call)
        started = False
        last: dict | None = None
        try:
            try:
                async for chunk in chunks:
                    if call.cancelled.is_set():
                        break
                    if not started:
                        rec.ttft_ms = rec.ttft_ms or int((time.perf_counter() - rec._t0) * 1000)
                        headers = list(_SSE) + [(b"x-request-id", rec.request_id.encode())]
                        await send({"type": "http.response.start", "status": 200, "headers": headers})
                        started = True
                    chunk["model"] = rec.model
                    last = chunk
                    await send({"type": "http.response.body", "body": b"data: " + orjson.dumps(chunk) + b"\n\n", "more_body": True})
            finally:
                await chunks.aclose()  # on cancel this stops the engine and meters what ran
        except Exception as e:
            err = await self._failed(rec, e, output_sent=started)
            if not started:
                return await send_json(send, err.status, err.body(), rec.request_id)
            # Headers are gone: tell the client in-band, as OpenAI does, then end the stream.
            await send({"type": "http.response.body", "body": b"data: " + err.body() + b"\n\n", "more_body": False})
            return
        finally:
            watcher.cancel()
        if call.cancelled.is_set():
            rec.status, rec.error_code = CANCELLED, "client_disconnected"
            await self._record(rec)
            return
        rec.status = OK
        done = self._spool(rec)
        tail = b""
        if include_usage:
            base = last or {"id": "chatcmpl-" + rec.request_id[4:], "created": int(time.time())}
            obj = base.get("object") or ("chat.completion.chunk" if call.endpoint == CHAT else "text_completion")
            usage_chunk = {"id": base.get("id"), "object": obj, "created": base.get("created"), "model": rec.model,
                           "choices": [], "usage": usage_dict(rec)}
            if "system_fingerprint" in base:
                usage_chunk["system_fingerprint"] = base["system_fingerprint"]
            tail += b"data: " + orjson.dumps(usage_chunk) + b"\n\n"
        await done  # durable before the final bytes
        if not started:
            headers = list(_SSE) + [(b"x-request-id", rec.request_id.encode())]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": tail + b"data: [DONE]\n\n", "more_body": False})


async def _watch_disconnect(receive, cancelled: asyncio.Event) -> None:
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            cancelled.set()
            return
