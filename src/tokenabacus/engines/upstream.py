"""The upstream engine: any OpenAI-compatible server (vLLM, SGLang, ms-swift, LMDeploy,
llama.cpp server, Ollama, OpenAI, DeepSeek, DashScope) behind a pooled aiohttp session.

Prompt tokens are counted locally with the model's tokenizer while the upstream works, so
counting adds no latency; completion tokens are the tokenizer over the generated text. The
upstream's own figures are kept beside ours.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterator

import aiohttp
import orjson
from aiohttp.http_exceptions import HttpProcessingError

from tokenabacus.api.errors import APIError, upstream_error, upstream_timeout
from tokenabacus.config import UpstreamModel
from tokenabacus.engines.base import CHAT, Call, Engine
from tokenabacus.ledger.record import SOURCE_ESTIMATED, SOURCE_TOKENIZER, SOURCE_UPSTREAM
from tokenabacus.metering.figures import upstream_figures
from tokenabacus.metering.stream import MalformedUpstream, StreamAccountant, message_text, parse_json, sse_events
from tokenabacus.metering.tokenizers import Counter, build_counter, has_uncountable_parts
from tokenabacus.tasks import cancel_and_wait

log = logging.getLogger(__name__)

# Inputs shorter than this are counted inline; longer ones on a worker thread.
INLINE_COUNT_CHARS = 2000


def _estimate(text: str) -> int:
    # Only when no tokenizer is configured and the upstream reported nothing; marked "estimated".
    return max(1, math.ceil(len(text.encode("utf-8")) / 4)) if text else 0


class UpstreamEngine(Engine):
    kind = "upstream"

    def __init__(self, cfg: UpstreamModel) -> None:
        self.cfg = cfg
        self.counter: Counter | None = build_counter(cfg.tokenizer) if cfg.tokenizer else None
        self.upstream_model = cfg.upstream_model or cfg.name
        self.model_version = cfg.upstream_model or None
        self.session: aiohttp.ClientSession | None = None
        self._reachable = False  # kept by a background probe of the upstream's /models
        self._probe_task: asyncio.Task | None = None
        headers = {"Content-Type": "application/json"}
        key = cfg.resolved_api_key()
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self._headers = headers
        t = cfg.timeout
        self._timeout = aiohttp.ClientTimeout(total=t.total, connect=t.connect, sock_connect=t.connect, sock_read=t.read)

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=self.cfg.max_connections, ttl_dns_cache=300, keepalive_timeout=30)
        self.session = aiohttp.ClientSession(
            connector=connector, timeout=self._timeout, headers=self._headers,
            json_serialize=lambda o: orjson.dumps(o).decode(), auto_decompress=True,
        )
        self._reachable = await self._probe(timeout=1)
        if not self._reachable:
            log.warning("upstream %s at %s is not reachable (yet)", self.cfg.name, self.cfg.base_url)
        self._probe_task = asyncio.create_task(self._probe_loop(), name=f"probe-{self.cfg.name}")

    async def close(self) -> None:
        await cancel_and_wait(self._probe_task)
        if self.session:
            await self.session.close()

    async def _probe(self, timeout: float = 3) -> bool:
        """Ready means the upstream answers HTTP at all (any status below 500 on /models)."""
        assert self.session is not None
        try:
            async with self.session.get(f"{self.cfg.base_url}/models", timeout=aiohttp.ClientTimeout(total=timeout)) as r:
                return r.status < 500
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
            return False

    async def _probe_loop(self) -> None:
        while True:
            await asyncio.sleep(5 if self._reachable else 1)
            ok = await self._probe()
            if ok != self._reachable:
                (log.info if ok else log.warning)("upstream %s at %s is %s", self.cfg.name, self.cfg.base_url,
                                                  "reachable" if ok else "not reachable")
            self._reachable = ok

    def health(self) -> dict:
        return {"engine": self.kind, "ready": self._reachable, "base_url": self.cfg.base_url,
                "tokenizer": self.cfg.tokenizer.type if self.cfg.tokenizer else None,
                "counted_by": self.counter.engine if self.counter else None}

    # Counting ----------------------------------------------------------------------------------
    def _count_prompt_sync(self, call: Call) -> int:
        assert self.counter is not None
        if call.endpoint == CHAT:
            kwargs = call.body.get("chat_template_kwargs")
            return self.counter.count_chat(call.body["messages"], call.body.get("tools"),
                                           kwargs if isinstance(kwargs, dict) else None)
        return self.counter.count_text(call.body["prompt"])

    def _prompt_chars(self, call: Call) -> int:
        if call.endpoint == CHAT:
            return sum(len(str(m.get("content") or "")) for m in call.body["messages"])
        return len(call.body["prompt"])

    def _start_prompt_count(self, call: Call) -> asyncio.Future | None:
        if self.counter is None:
            return None
        if self._prompt_chars(call) < INLINE_COUNT_CHARS:
            fut = asyncio.get_running_loop().create_future()
            try:
                fut.set_result(self._count_prompt_sync(call))
            except Exception as e:
                fut.set_exception(e)
            return fut
        return asyncio.ensure_future(asyncio.to_thread(self._count_prompt_sync, call))

    def _count_text_sync(self, text: str) -> int:
        assert self.counter is not None
        return self.counter.count_text(text)

    async def _count_text(self, text: str) -> int:
        if len(text) < INLINE_COUNT_CHARS:
            return self._count_text_sync(text)
        return await asyncio.to_thread(self._count_text_sync, text)

    def _settle(self, call: Call, prompt: int | None, completion: int | None, upstream: dict | None,
                fallback_text: str = "", reported_model: str | None = None) -> None:
        """Decide the record's figures: ours, the upstream's, or (lacking both) an estimate."""
        rec = call.record
        rec.model_version = (reported_model or self.model_version or "")[:200] or None
        up_p, up_c, cached, lied = upstream_figures(upstream)
        if lied:
            log.warning("%s: upstream %s reported unusable usage figures %s; they are ignored",
                        rec.request_id, self.cfg.name, orjson.dumps(upstream).decode()[:300])
        rec.upstream_prompt_tokens, rec.upstream_completion_tokens, rec.cached_tokens = up_p, up_c, cached
        if prompt is not None and call.endpoint == CHAT and has_uncountable_parts(call.body["messages"]):
            # Our count covers the text only; the upstream's covers the image tokens too.
            log.warning("%s: the prompt has parts the local tokenizer cannot count (images, audio); billing %s",
                        rec.request_id, "the upstream's prompt count" if up_p is not None else "an estimate")
            if up_p is not None and up_c is not None:
                rec.prompt_tokens, rec.completion_tokens, rec.usage_source = up_p, up_c, SOURCE_UPSTREAM
            else:
                rec.prompt_tokens, rec.completion_tokens, rec.usage_source = prompt, completion, SOURCE_ESTIMATED
            return
        use_upstream = (self.cfg.bill == "upstream" or prompt is None) and up_p is not None and up_c is not None
        if use_upstream:
            rec.prompt_tokens, rec.completion_tokens, rec.usage_source = up_p, up_c, SOURCE_UPSTREAM
        elif prompt is not None and completion is not None:
            rec.prompt_tokens, rec.completion_tokens, rec.usage_source = prompt, completion, SOURCE_TOKENIZER
        else:
            prompt_text = orjson.dumps(call.body.get("messages") or call.body.get("prompt")).decode()
            rec.prompt_tokens = prompt if prompt is not None else (up_p if up_p is not None else _estimate(prompt_text))
            rec.completion_tokens = completion if completion is not None else (up_c if up_c is not None else _estimate(fallback_text))
            rec.usage_source = SOURCE_ESTIMATED

    # Requests ----------------------------------------------------------------------------------
    def _url(self, call: Call) -> str:
        return f"{self.cfg.base_url}/{'chat/completions' if call.endpoint == CHAT else 'completions'}"

    def _payload(self, call: Call) -> dict:
        body = dict(call.body)
        body["model"] = self.upstream_model
        if call.stream and self.cfg.stream_usage:
            body["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
        return body

    async def _post(self, call: Call) -> aiohttp.ClientResponse:
        assert self.session is not None, "engine not started"
        try:
            resp = await self.session.post(self._url(call), data=orjson.dumps(self._payload(call)))
        except asyncio.TimeoutError:
            raise upstream_timeout() from None
        except aiohttp.ClientError as e:
            raise upstream_error(f"Cannot reach the upstream model server: {type(e).__name__}.", "upstream_unreachable") from None
        if resp.status >= 400:
            try:
                raw = await resp.read()
            except (aiohttp.ClientError, asyncio.TimeoutError):
                raw = b""
            finally:
                resp.release()
            raise _map_upstream_status(resp.status, raw)
        return resp

    async def complete(self, call: Call) -> dict:
        counting = self._start_prompt_count(call)
        try:
            resp = await self._post(call)
            try:
                raw = await resp.read()
            except asyncio.TimeoutError:
                raise upstream_timeout() from None
            except aiohttp.ClientError:
                raise upstream_error("The upstream closed the connection mid-response.") from None
            finally:
                resp.release()
            body = parse_json(raw)
            if body is None or not isinstance(body.get("choices"), list):
                raise upstream_error("The upstream answered with something that is not a completion.", "upstream_bad_response")
        finally:
            prompt = await _result(counting)
            call.record.prompt_tokens = prompt  # kept even when the request fails
        upstream_usage = body.pop("usage", None)
        try:
            text = message_text(body)
        except MalformedUpstream as e:
            raise upstream_error(f"The upstream answered with a malformed completion: {e}.", "upstream_bad_response") from None
        completion = await self._count_text(text) if self.counter else None
        reported = body.get("model") if isinstance(body.get("model"), str) else None
        self._settle(call, prompt, completion, upstream_usage, text, reported)
        return body

    async def stream(self, call: Call) -> AsyncIterator[dict]:
        counting = self._start_prompt_count(call)
        acct = StreamAccountant()
        completed = settled = False
        resp: aiohttp.ClientResponse | None = None
        try:
            resp = await self._post(call)
            async for data in sse_events(resp.content):
                if data.strip() == b"[DONE]":
                    break
                chunk = parse_json(data)
                if chunk is None:
                    continue
                out = acct.feed(chunk)
                if out is not None:
                    yield out
                if acct.error is not None:
                    raise upstream_error(str(acct.error.get("message") or "upstream error"), "upstream_stream_error")
            completed = True
            prompt = await _result(counting)
            completion = await self._count_text(acct.text) if self.counter else None
            self._settle(call, prompt, completion, acct.upstream_usage, acct.text, acct.model)
            settled = True
        except asyncio.TimeoutError:
            raise upstream_timeout() from None
        except aiohttp.ClientError:
            raise upstream_error("The upstream closed the stream early.", "upstream_stream_broken") from None
        except (ValueError, HttpProcessingError) as e:  # a malformed chunk, an SSE line over aiohttp's limit
            reason = "a line over the size limit" if isinstance(e, HttpProcessingError) else str(e)
            raise upstream_error(f"The upstream sent a malformed stream: {reason}.", "upstream_bad_response") from None
        finally:
            if resp is not None:
                # Closing (not releasing) an unfinished response drops the connection, which is how
                # an OpenAI-compatible server learns to stop generating.
                resp.release() if completed else resp.close()
            if not settled:  # cancelled or failed: bill what was generated, without awaiting
                prompt = _result_nowait(counting, self, call)
                completion = self._count_text_sync(acct.text) if self.counter else None
                self._settle(call, prompt, completion, acct.upstream_usage, acct.text, acct.model)


def _map_upstream_status(status: int, raw: bytes) -> APIError:
    body = parse_json(raw) or {}
    err = body.get("error") if isinstance(body.get("error"), dict) else {}
    message = err.get("message") or body.get("detail") or body.get("message") or raw[:300].decode("utf-8", "replace")
    if not isinstance(message, str):
        message = orjson.dumps(message).decode()
    if status in (400, 404, 413, 422):
        # The client's request was refused by the engine (context length, bad parameter): theirs to fix.
        return APIError(400, f"The model server refused the request: {message}", "invalid_request_error",
                        err.get("param") if isinstance(err.get("param"), str) else None, err.get("code") if isinstance(err.get("code"), str) else "upstream_rejected")
    if status == 429:
        return APIError(429, f"The model server is overloaded: {message}", "rate_limit_error", None, "upstream_rate_limited")
    if status in (401, 403):
        return upstream_error("The gateway's credentials for the model server were refused.", "upstream_auth")
    if status == 504:
        return upstream_timeout()
    return upstream_error(f"The model server failed with HTTP {status}.", "upstream_error")


async def _result(fut: asyncio.Future | None) -> int | None:
    if fut is None:
        return None
    try:
        return await fut
    except Exception as e:
        log.warning("counting the prompt failed (%s: %s); the record falls back to the upstream's figures",
                    type(e).__name__, str(e)[:200])
        return None


def _result_nowait(fut: asyncio.Future | None, engine: UpstreamEngine, call: Call) -> int | None:
    """The prompt count in a finally block that may run during cancellation (cannot await)."""
    if fut is None:
        return None
    if fut.done():
        return None if fut.cancelled() or fut.exception() else fut.result()
    try:
        return engine._count_prompt_sync(call)
    except Exception as e:
        log.warning("counting the prompt failed (%s: %s)", type(e).__name__, str(e)[:200])
        return None
