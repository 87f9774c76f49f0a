"""The upstream engine: any OpenAI-compatible server (vLLM, SGLang, ms-swift, LMDeploy,
llama.cpp server, Ollama, OpenAI, DeepSeek, DashScope) behind a pooled aiohttp session.

The engine forwards and observes: the upstream's usage claim, the generated text and the model id
it reports go into the call's ``Observed``; counting and billing are the settle step's
(``metering.settle``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncGenerator
from urllib.parse import urlsplit

import aiohttp
import orjson
from aiohttp.http_exceptions import HttpProcessingError

from tokenabacus.api.call import CHAT, Call
from tokenabacus.api.errors import APIError, upstream_error, upstream_timeout
from tokenabacus.config import UpstreamModel
from tokenabacus.engines.base import Engine
from tokenabacus.metering.stream import (
    MalformedUpstream,
    StreamAccountant,
    drop_null_fields,
    message_text,
    parse_json,
    sse_events,
)
from tokenabacus.tasks import cancel_and_wait

log = logging.getLogger(__name__)


class UpstreamEngine(Engine):
    kind = "upstream"

    def __init__(self, cfg: UpstreamModel) -> None:
        self.cfg = cfg
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
        self._timeout = aiohttp.ClientTimeout(
            total=t.total, connect=t.connect, sock_connect=t.connect, sock_read=t.read
        )

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=self.cfg.max_connections, ttl_dns_cache=300, keepalive_timeout=30)
        self.session = aiohttp.ClientSession(
            connector=connector,
            timeout=self._timeout,
            headers=self._headers,
            json_serialize=lambda o: orjson.dumps(o).decode(),
            auto_decompress=True,
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
        """Ready means something accepts connections at the upstream's address. A TCP connect, not
        an HTTP request: llama.cpp's server interrupts the stream it is serving when any request
        that takes its model lock arrives (``/v1/models`` does), so an HTTP probe would cut
        clients' replies short."""
        url = urlsplit(self.cfg.base_url)
        port = url.port or (443 if url.scheme == "https" else 80)
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(url.hostname, port), timeout)
        except (TimeoutError, OSError):
            return False
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True

    async def _probe_loop(self) -> None:
        while True:
            await asyncio.sleep(5 if self._reachable else 1)
            ok = await self._probe()
            if ok != self._reachable:
                (log.info if ok else log.warning)(
                    "upstream %s at %s is %s", self.cfg.name, self.cfg.base_url, "reachable" if ok else "not reachable"
                )
            self._reachable = ok

    def health(self) -> dict:
        return {
            "engine": self.kind,
            "ready": self._reachable,
            "base_url": self.cfg.base_url,
            "tokenizer": self.cfg.tokenizer.type if self.cfg.tokenizer else None,
        }

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
        except TimeoutError:
            raise upstream_timeout() from None
        except aiohttp.ClientError as e:
            raise upstream_error(
                f"Cannot reach the upstream model server: {type(e).__name__}.", "upstream_unreachable"
            ) from None
        if resp.status >= 400:
            try:
                raw = await resp.read()
            except (TimeoutError, aiohttp.ClientError):
                raw = b""
            finally:
                resp.release()
            raise self._refusal(resp.status, raw)
        return resp

    def _refusal(self, status: int, raw: bytes) -> APIError:
        err = _map_upstream_status(status, raw, self.upstream_model, self.cfg.name)
        if err.code == "upstream_model_not_found":  # the operator's to fix: say so in the log, with the details
            log.error(
                "upstream %s at %s does not serve upstream_model %r; check the model entry (HTTP %d: %s)",
                self.cfg.name,
                self.cfg.base_url,
                self.upstream_model,
                status,
                raw[:300].decode("utf-8", "replace"),
            )
        return err

    async def complete(self, call: Call) -> dict:
        resp = await self._post(call)
        try:
            raw = await resp.read()
        except TimeoutError:
            raise upstream_timeout() from None
        except aiohttp.ClientError:
            raise upstream_error("The upstream closed the connection mid-response.") from None
        finally:
            resp.release()
        body = parse_json(raw)
        if body is None or not isinstance(body.get("choices"), list):
            raise upstream_error(
                "The upstream answered with something that is not a completion.", "upstream_bad_response"
            )
        obs = call.observed
        obs.upstream_usage = body.pop("usage", None)
        try:
            obs.text_parts.append(message_text(body))
        except MalformedUpstream as e:
            raise upstream_error(
                f"The upstream answered with a malformed completion: {e}.", "upstream_bad_response"
            ) from None
        if isinstance(body.get("model"), str):
            obs.model_version = body["model"]
        for choice in body["choices"]:
            if isinstance(choice, dict):
                drop_null_fields(choice)
        first = body["choices"][0] if body["choices"] and isinstance(body["choices"][0], dict) else {}
        if isinstance(first.get("finish_reason"), str):
            obs.finish_reason = first["finish_reason"]
        return body

    async def stream(self, call: Call) -> AsyncGenerator[dict, None]:
        acct = StreamAccountant(call.observed)
        chunk_object = "chat.completion.chunk" if call.endpoint == CHAT else "text_completion"
        completed = False
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
                    if "choices" in out:  # ms-swift names completions chunks "text_completion.chunk"
                        out["object"] = chunk_object
                    yield out
                if acct.error is not None:
                    raise upstream_error(str(acct.error.get("message") or "upstream error"), "upstream_stream_error")
            completed = True
        except TimeoutError:
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


# ms-swift's refusal of a model it does not serve (SwiftDeploy._check_model), answered with HTTP 400:
# "`no-such-model` is not in the model_list: `['smollm2-135m-instruct']`."
_SWIFT_UNKNOWN_MODEL = re.compile(r"`(?P<model>[^`]*)` is not in the model_list: `")


def _map_upstream_status(status: int, raw: bytes, upstream_model: str, name: str) -> APIError:
    """OpenAI's error JSON for an upstream's error answer, in any of the shapes engines use: OpenAI's
    ``{"error": {...}}`` (vLLM, SGLang), ms-swift's ``{"message": ..., "object": "error"}``,
    FastAPI's ``{"detail": ...}``, or plain text."""
    body = parse_json(raw) or {}
    err: dict = body["error"] if isinstance(body.get("error"), dict) else {}
    message = err.get("message") or body.get("detail") or body.get("message") or raw[:300].decode("utf-8", "replace")
    if not isinstance(message, str):
        message = orjson.dumps(message).decode()
    swift = _SWIFT_UNKNOWN_MODEL.match(message)
    if status == 404 or (status == 400 and swift is not None and swift["model"] == upstream_model):
        # The upstream does not serve the model the gateway asks it for (vLLM, SGLang and OpenAI answer
        # 404, as for a wrong base_url path; ms-swift 400 with the message above): a misconfiguration
        # of the gateway, not the client's fault. Internal names stay out of the client's message.
        return upstream_error(
            f"The model server behind '{name}' does not serve the model the gateway is configured to ask for "
            f"(HTTP {status}). This is a gateway configuration error: the operator should check "
            f"`upstream_model` (and `base_url`) of the model entry '{name}'.",
            "upstream_model_not_found",
        )
    if status in (400, 413, 422):
        # The client's request was refused by the engine (context length, bad parameter): theirs to fix.
        return APIError(
            400,
            f"The model server refused the request: {message}",
            "invalid_request_error",
            err.get("param") if isinstance(err.get("param"), str) else None,
            err.get("code") if isinstance(err.get("code"), str) else "upstream_rejected",
        )
    if status == 429:
        return APIError(
            429, f"The model server is overloaded: {message}", "rate_limit_error", None, "upstream_rate_limited"
        )
    if status in (401, 403):
        return upstream_error("The gateway's credentials for the model server were refused.", "upstream_auth")
    if status == 504:
        return upstream_timeout()
    return upstream_error(f"The model server failed with HTTP {status}.", "upstream_error")
