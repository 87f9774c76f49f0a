"""The /v1 routes as plain ASGI handlers: the hot path stays lean (no per-request pydantic,
orjson throughout) and every started request writes exactly one ledger record, whatever ends it.

A request goes identify → read and check the body → resolve the model (admission) → engine →
settle (``metering.settle``) → spool → respond. Endpoints differ only by the row of the table
below, so a new one (embeddings) is a row, not a branch.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
from starlette.types import Receive, Scope, Send

from tokenabacus.api.call import CHAT, COMPLETIONS, Call
from tokenabacus.api.errors import APIError, bad_request, internal_error, model_not_found, unauthorized
from tokenabacus.api.validation import validate_chat, validate_completion
from tokenabacus.engines.base import Engine
from tokenabacus.governance.access import check_key_ip
from tokenabacus.governance.admission import Ticket
from tokenabacus.governance.errors import Forbidden, Refused
from tokenabacus.governance.keys import Identity
from tokenabacus.ledger.record import CANCELLED, ERROR, OK, REJECTED, UsageRecord, clear_usage, start_record
from tokenabacus.metering.settle import Meter
from tokenabacus.server.asgi import (
    SSE_HEADERS,
    BodyTooLarge,
    auth_and_agent,
    header,
    read_body,
    send_json,
    watch_disconnect,
)
from tokenabacus.server.auth_guard import key_refusal
from tokenabacus.server.cost import INCLUDE_COST_HEADER, asks_cost, cost_headers
from tokenabacus.server.refusals import from_refusal
from tokenabacus.server.usage import usage_chunk, usage_dict

if TYPE_CHECKING:
    from tokenabacus.server.state import Gateway

log = logging.getLogger(__name__)

# What a request may make the ledger store of its own choosing.
MAX_AGENT, MAX_MODEL = 200, 200


@dataclass(frozen=True, slots=True)
class Endpoint:
    name: str  # what engines are told (CHAT, COMPLETIONS)
    path: str  # the route, and the record's `endpoint`
    validate: Callable[[Any, int], None]
    chunk_object: str  # the `object` of a streamed chunk


ENDPOINTS = {
    CHAT: Endpoint(CHAT, "/v1/chat/completions", validate_chat, "chat.completion.chunk"),
    COMPLETIONS: Endpoint(COMPLETIONS, "/v1/completions", validate_completion, "text_completion"),
}


@dataclass(slots=True)
class Exchange:
    """One admitted request on its way through the engine: settled once, recorded once."""

    ep: Endpoint
    rec: UsageRecord
    call: Call
    engine: Engine
    meter: Meter
    counting: asyncio.Future | None = None
    ticket: Ticket | None = None  # what admission took (reservations, a scheduler slot)
    settled: bool = False
    include_cost: bool = False  # a stream's usage chunk tells the cost (server/cost.py)

    async def count_prompt(self) -> int | None:
        """The prompt count, for admission: started here, reused when settling."""
        if self.counting is None:
            self.counting = self.meter.start(self.call)
        if self.counting is None:
            return None
        try:
            return await asyncio.shield(self.counting)
        except Exception:
            return None

    async def settle(self) -> None:
        if not self.settled:
            await self.meter.settle(self.rec, self.call, self.counting)
            self.settled = True  # after: a cancellation mid-way leaves settle_now to do it

    def settle_now(self) -> None:
        if not self.settled:
            self.settled = True
            self.meter.settle_now(self.rec, self.call, self.counting)

    def forget(self) -> None:
        """Nothing will be billed: let a prompt count still running end quietly."""
        self.settled = True
        if self.counting is not None:
            self.counting.add_done_callback(lambda f: f.cancelled() or f.exception())


class V1:
    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.limit = gw.settings.server.max_body_bytes
        self.max_tokens_limit = gw.settings.server.max_tokens_limit

    # Routes ------------------------------------------------------------------------------------
    async def chat(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._serve(ENDPOINTS[CHAT], scope, receive, send)

    async def completions(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._serve(ENDPOINTS[COMPLETIONS], scope, receive, send)

    async def models(self, scope: Scope, receive: Receive, send: Send) -> None:
        ip = self.gw.caller_ip(scope)
        try:
            ident = await self._identify(header(scope, b"authorization"), ip)
            check_key_ip(ident, ip)  # the key's own allowlist, as admission applies it to chat
        except Forbidden as e:
            refused = from_refusal(e, "")
            return await send_json(send, refused.status, refused.body())
        except APIError as e:
            return await send_json(send, e.status, e.body(), extra=e.headers)
        visible = self.gw.governance.admission.visible
        aliases = self.gw.aliases
        path_model = scope.get("path_params", {}).get("model")
        if path_model is not None:
            name = aliases.get(path_model, path_model)
            if name not in self.gw.engines or not visible(ident, name):
                missing = model_not_found(path_model)
                return await send_json(send, missing.status, missing.body())
            return await send_json(send, 200, orjson.dumps(self.gw.model_object(path_model)))
        # Only the models this caller may use, each under its name and its aliases.
        data = [self.gw.model_object(name) for name in self.gw.engines if visible(ident, name)]
        data += [self.gw.model_object(alias) for alias, name in aliases.items() if visible(ident, name)]
        await send_json(send, 200, orjson.dumps({"object": "list", "data": data}))

    # Recording ---------------------------------------------------------------------------------
    def _spool(self, rec: UsageRecord, ex: Exchange | None = None) -> Awaitable[Any]:
        """Queue the request's one record and settle what admission took (the settle seam: one
        place for every outcome). Queued is enough for shutdown (the spool flushes what is
        pending when it closes); a response waits for the returned awaitable (fsync, and the
        shared counters when they need I/O)."""
        rec.finish()
        self.gw.enrich(rec)  # the enrich seam: price (cost_micros, price_version, currency)
        durable = self.gw.spool.append(rec)
        if self.gw.watches and rec.total_tokens is not None:
            watch = self.gw.watches.get(rec.model or "")
            if watch is not None:  # what we billed, beside the engine's own counters
                watch.tally.add(rec.prompt_tokens, rec.completion_tokens)
        settling = self.gw.governance.admission.settle(rec, ex.ticket if ex is not None else None)
        if settling is not None:
            return asyncio.gather(durable, settling)
        return durable

    async def _failed(self, ex: Exchange, e: BaseException, output_sent: bool) -> APIError:
        """Record a failure. A request the engine refused (4xx) is `rejected`; a failure before
        any output bills nothing; one mid-stream bills what was generated."""
        rec = ex.rec
        err = e if isinstance(e, APIError) else internal_error()
        if not isinstance(e, APIError):
            log.error("engine failure on %s", rec.request_id, exc_info=e)
        rec.status, rec.error_code = (REJECTED if err.status < 500 else ERROR), err.error_code
        if output_sent:
            await ex.settle()
        else:
            ex.forget()
            clear_usage(rec)
        await self._spool(rec, ex)
        return err

    # The request -------------------------------------------------------------------------------
    async def _serve(self, ep: Endpoint, scope: Scope, receive: Receive, send: Send) -> None:
        # The spool's count of requests that will append a record lets a group fsync wait for them.
        self.gw.spool.active += 1
        try:
            await self._handle(ep, scope, receive, send)
        except asyncio.CancelledError:
            # Only a stopping server cancels a request; it is recorded, and the task ends here
            # rather than as a traceback in uvicorn's log.
            log.warning("request cancelled by server shutdown (recorded as cancelled)")
        finally:
            self.gw.spool.active -= 1

    async def _handle(self, ep: Endpoint, scope: Scope, receive: Receive, send: Send) -> None:
        client = scope.get("client")
        auth, agent = auth_and_agent(scope)
        rec = start_record(
            endpoint=ep.path,
            client_ip=self.gw.client_ip(scope, client[0] if client else None),
            user_agent=agent[:MAX_AGENT] if agent else None,
        )
        ex: Exchange | None = None
        try:
            try:
                ex = await self._admit(ep, auth, receive, rec, header(scope, INCLUDE_COST_HEADER))
            except APIError as e:
                rec.status, rec.error_code = REJECTED, e.error_code
                queued = self._spool(rec)
                if rec.key_id is not None:
                    # Nobody we know does not get to hold a connection open for an fsync of its choosing.
                    await queued
                return await send_json(send, e.status, e.body(), rec.request_id, e.headers)
            except ConnectionResetError:
                rec.status, rec.error_code = CANCELLED, "client_disconnected"
                await self._spool(rec)
                return
            if ex.counting is None:
                ex.counting = ex.meter.start(ex.call)  # overlaps the engine's work
            if rec.stream:
                await self._stream(ex, receive, send)
            else:
                await self._complete(ex, send)
        except asyncio.CancelledError:
            if rec.duration_ms is None:  # not recorded yet: finish() stamps the duration
                if ex is not None:
                    ex.settle_now()
                rec.status, rec.error_code = CANCELLED, "server_shutdown"
                self._spool(rec, ex)
            raise
        except Exception:
            if rec.duration_ms is None:  # a gateway bug: still exactly one record, then a plain 500
                if ex is not None:
                    ex.forget()
                clear_usage(rec)
                rec.status, rec.error_code = ERROR, "internal_error"
                self._spool(rec, ex)
            raise

    async def _identify(self, auth: str | None, ip: str | None, rec: UsageRecord | None = None) -> Identity:
        if not auth or not auth[:7].lower() == "bearer ":
            raise unauthorized("Missing API key. Pass it as 'Authorization: Bearer sk-...'.")
        key = auth[7:].strip()
        locked = self.gw.auth.refusal("v1", ip, key)  # before the key is looked up: a guesser learns nothing
        if locked is not None:
            raise locked
        ident = await self.gw.keys.identify(key)
        if ident is None:
            revoked = self.gw.keys.revoked_key_id(key)  # who is still using a revoked key
            if rec is not None:
                rec.key_id = revoked
            if revoked is None:  # a key nobody holds: a guess, or a typo
                self.gw.auth.failed("v1", ip, key)
            raise key_refusal(self.gw.keys, key, self.gw.settings.governance.timezone)
        return ident

    async def _admit(
        self, ep: Endpoint, auth: str | None, receive: Receive, rec: UsageRecord, include_cost: str | None
    ) -> Exchange:
        """Identify the caller, read and check the body, resolve the model (an alias to its
        model's name), and pass admission."""
        ident = await self._identify(auth, rec.client_ip, rec)
        rec.key_id, rec.user, rec.project, rec.department = ident.key_id, ident.user, ident.project, ident.department
        try:
            raw = await read_body(receive, self.limit)
        except BodyTooLarge:
            raise bad_request(
                f"The request body is larger than the limit of {self.limit} bytes.", None, "request_too_large"
            ) from None
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as e:
            raise bad_request(
                f"The request body is not valid JSON: {e.msg} (line {e.lineno}, column {e.colno}).",
                None,
                "invalid_json",
            ) from None
        if isinstance(body, dict) and isinstance(body.get("model"), str):
            # Named even when the rest of the body is refused; an alias is billed under its model.
            rec.model, rec.model_alias = self._resolve(body["model"])
        ep.validate(body, self.max_tokens_limit)
        rec.stream = bool(body.get("stream"))
        asked = body["model"]
        name = self.gw.aliases.get(asked, asked)
        engine = self.gw.engines.get(name)
        if engine is None:
            raise model_not_found(asked)
        body["model"] = name  # engines, admission and the price book know the model by its name
        wants_cost = rec.stream and asks_cost(include_cost, body)
        rec.engine, rec.model_version = engine.kind, engine.model_version
        ex = Exchange(ep, rec, Call(endpoint=ep.name, body=body, stream=rec.stream), engine, self.gw.meters[name])
        ex.include_cost = wants_cost
        try:
            ex.ticket = await self.gw.governance.admission.admit(
                rec.request_id, ident, name, rec.client_ip, ex.call, ex.count_prompt
            )
        except Refused as e:
            ex.forget()
            raise from_refusal(e, asked) from None
        if ex.ticket is not None and ex.ticket.max_tokens is not None:
            # Admission holds a body without max_tokens to the default: the engine is told so.
            body["max_tokens"] = ex.ticket.max_tokens
        return ex

    def _resolve(self, asked: str) -> tuple[str, str | None]:
        """(the model's name, the alias asked for or None), as the record stores them."""
        name = self.gw.aliases.get(asked)
        return (asked[:MAX_MODEL], None) if name is None else (name, asked)

    async def _complete(self, ex: Exchange, send: Send) -> None:
        rec = ex.rec
        try:
            out = await ex.engine.complete(ex.call)
        except Exception as e:
            err = await self._failed(ex, e, output_sent=False)
            return await send_json(send, err.status, err.body(), rec.request_id)
        await ex.settle()
        out["model"] = rec.model
        for choice in out.get("choices") or ():
            msg = choice.get("message") if isinstance(choice, dict) else None
            if isinstance(msg, dict):  # fields OpenAI's schema requires and some engines omit
                msg.setdefault("refusal", None)
                choice.setdefault("logprobs", None)
        rec.status = OK
        done = self._spool(rec, ex)
        out["usage"] = usage_dict(rec)
        body = orjson.dumps(out)
        await done
        await send_json(send, 200, body, rec.request_id, cost_headers(rec))  # priced by _spool's enrich

    async def _stream(self, ex: Exchange, receive: Receive, send: Send) -> None:
        rec, call = ex.rec, ex.call
        # Asking for the cost asks for the usage chunk that carries it.
        include_usage = bool((call.body.get("stream_options") or {}).get("include_usage")) or ex.include_cost
        watcher = asyncio.create_task(watch_disconnect(receive, call.cancelled))
        chunks: AsyncGenerator[dict, None] = ex.engine.stream(call)
        started = False
        last: dict | None = None
        try:
            try:
                async for chunk in chunks:
                    if call.cancelled.is_set():
                        break
                    if not started:
                        rec.ttft_ms = rec.ttft_ms or rec.elapsed_ms()
                        headers = [*SSE_HEADERS, (b"x-request-id", rec.request_id.encode())]
                        await send({"type": "http.response.start", "status": 200, "headers": headers})
                        started = True
                    chunk["model"] = rec.model
                    last = chunk
                    await send(
                        {
                            "type": "http.response.body",
                            "body": b"data: " + orjson.dumps(chunk) + b"\n\n",
                            "more_body": True,
                        }
                    )
            finally:
                await chunks.aclose()  # on cancel this stops the engine
        except Exception as e:
            err = await self._failed(ex, e, output_sent=started)
            if not started:
                return await send_json(send, err.status, err.body(), rec.request_id)
            # Headers are gone: tell the client in-band, as OpenAI does, then end the stream.
            await send({"type": "http.response.body", "body": b"data: " + err.body() + b"\n\n", "more_body": False})
            return
        finally:
            watcher.cancel()
        await ex.settle()
        if call.cancelled.is_set():
            rec.status, rec.error_code = CANCELLED, "client_disconnected"
            await self._spool(rec, ex)
            return
        rec.status = OK
        done = self._spool(rec, ex)
        tail = b""
        if include_usage:
            chunk = usage_chunk(rec, last, ex.ep.chunk_object, ex.include_cost)
            tail += b"data: " + orjson.dumps(chunk) + b"\n\n"
        await done  # durable before the final bytes
        if not started:
            headers = [*SSE_HEADERS, (b"x-request-id", rec.request_id.encode())]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": tail + b"data: [DONE]\n\n", "more_body": False})
