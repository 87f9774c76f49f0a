"""The cost of a request told to its caller (issue 20 item 15), through a real gateway, a real
llama.cpp upstream and the openai SDK: a priced non-streamed response carries
``x-tokenabacus-cost`` and ``x-tokenabacus-price-version`` equal to its ledger record; a stream
tells the cost in its usage chunk only when asked; an unpriced model says nothing (never 0)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from conftest import GatewayProc, gguf_path
from openapi_schema import validate

SAY = [{"role": "user", "content": "Say hi"}]
PRICED, UNPRICED, STRICT = "smol-priced", "smol-unpriced", "strict"
ASK = {"x-tokenabacus-include-cost": "true"}


def amount(micros: int) -> str:
    units, frac = divmod(micros, 1_000_000)
    return f"{units}.{frac:06d}"


class StrictUpstream:
    """An upstream that refuses any field of stream_options it does not know (as strict OpenAI
    clones do) and keeps the bodies it was sent."""

    def __init__(self) -> None:
        self.bodies: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                outer.bodies.append(body)
                if set(body.get("stream_options") or {}) - {"include_usage"}:
                    out = json.dumps({"error": {"message": "unknown field in stream_options"}}).encode()
                    self.send_response(400)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(out)))
                    self.end_headers()
                    self.wfile.write(out)
                    return
                base = {"id": "chatcmpl-x", "object": "chat.completion.chunk", "created": 1, "model": "m"}
                hi = {"index": 0, "delta": {"role": "assistant", "content": "Hi"}, "finish_reason": None}
                events = [
                    {**base, "choices": [hi]},
                    {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
                    {**base, "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 1, "total_tokens": 10}},
                ]
                payload = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events) + b"data: [DONE]\n\n"
                self.send_response(200)
                self.send_header("content-type", "text/event-stream")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()


@pytest.fixture(scope="module")
def strict():
    s = StrictUpstream()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def gw(tmp_path_factory, llama_upstream, strict):
    tok = {"type": "gguf", "path": str(gguf_path())}
    up = {"engine": "upstream", "base_url": llama_upstream.base_url, "upstream_model": "smol", "tokenizer": tok}
    cfg = {
        "models": [
            {"name": PRICED, **up},
            {"name": UNPRICED, **up},
            {"name": STRICT, "engine": "upstream", "base_url": strict.base_url, "bill": "upstream"},
        ],
        "prices": [
            {"model": PRICED, "input": "0.8", "output": "2.4", "per": "1k", "currency": "CNY"},
            {"model": STRICT, "input": "1.5", "output": "2", "per": "1M", "currency": "USD"},
        ],
    }
    g = GatewayProc(tmp_path_factory.mktemp("cost") / "data", cfg).start()
    yield g
    g.stop()


@pytest.fixture(scope="module")
def key(gw):
    return gw.create_key(user="han.meimei", project="search", department="rnd")


def stream(gw: GatewayProc, key: str, model: str, headers: dict | None = None, **options) -> tuple[str, list[dict]]:
    """A streamed chat through the SDK: the request id and the chunks as sent (extra fields kept)."""
    raw = gw.client(key).chat.completions.with_raw_response.create(
        model=model,
        messages=SAY,
        max_tokens=4,
        temperature=0,
        stream=True,
        stream_options=options or None,  # type: ignore[arg-type]
        extra_headers=headers,
    )
    chunks = [c.to_dict() for c in raw.parse()]
    for c in chunks:
        validate(c, "CreateChatCompletionStreamResponse")
    return raw.headers["x-request-id"], chunks


def test_priced_chat_carries_the_records_cost(gw, key):
    raw = gw.client(key).chat.completions.with_raw_response.create(
        model=PRICED, messages=SAY, max_tokens=4, temperature=0
    )
    validate(json.loads(raw.text), "CreateChatCompletionResponse")
    rec = gw.record(raw.headers["x-request-id"])
    assert rec["cost_micros"] > 0 and rec["currency"] == "CNY"
    assert raw.headers["x-tokenabacus-cost"] == f"{amount(rec['cost_micros'])} CNY"
    assert raw.headers["x-tokenabacus-price-version"] == rec["price_version"]


def test_priced_completion_carries_the_records_cost(gw, key):
    raw = gw.client(key).completions.with_raw_response.create(
        model=PRICED, prompt="Once upon a time", max_tokens=4, temperature=0
    )
    validate(json.loads(raw.text), "CreateCompletionResponse")
    rec = gw.record(raw.headers["x-request-id"])
    assert raw.headers["x-tokenabacus-cost"] == f"{amount(rec['cost_micros'])} {rec['currency']}"
    assert raw.headers["x-tokenabacus-price-version"] == rec["price_version"]


def test_unpriced_model_has_no_cost_header(gw, key):
    raw = gw.client(key).chat.completions.with_raw_response.create(
        model=UNPRICED, messages=SAY, max_tokens=4, temperature=0
    )
    rec = gw.record(raw.headers["x-request-id"])
    assert rec["cost_micros"] is None
    assert "x-tokenabacus-cost" not in raw.headers and "x-tokenabacus-price-version" not in raw.headers


def test_stream_tells_no_cost_unless_asked(gw, key):
    _, chunks = stream(gw, key, PRICED, include_usage=True)
    assert chunks[-1]["usage"] and all("tokenabacus" not in c for c in chunks)
    _, plain = stream(gw, key, PRICED)
    assert all("tokenabacus" not in c and c.get("usage") is None for c in plain)


def test_stream_asked_by_header_tells_the_records_cost(gw, key):
    request_id, chunks = stream(gw, key, PRICED, ASK, include_usage=True)
    rec = gw.record(request_id)
    assert [c for c in chunks if "tokenabacus" in c] == [chunks[-1]]
    assert chunks[-1]["usage"]["completion_tokens"] == rec["completion_tokens"]
    assert chunks[-1]["tokenabacus"] == {
        "cost": amount(rec["cost_micros"]),
        "currency": "CNY",
        "price_version": rec["price_version"],
    }


def test_stream_asked_in_stream_options_is_not_forwarded(gw, key, strict):
    """include_cost (without include_usage) brings the usage chunk and its cost; the strict
    upstream never sees the field, so it serves the request."""
    strict.bodies.clear()
    request_id, chunks = stream(gw, key, STRICT, include_cost=True)
    rec = gw.record(request_id)
    assert rec["status"] == "ok" and rec["cost_micros"] is not None and rec["currency"] == "USD"
    assert chunks[-1]["usage"]["total_tokens"] == rec["total_tokens"]
    assert chunks[-1]["tokenabacus"] == {
        "cost": amount(rec["cost_micros"]),
        "currency": "USD",
        "price_version": rec["price_version"],
    }
    assert strict.bodies and all("include_cost" not in (b.get("stream_options") or {}) for b in strict.bodies)


def test_stream_of_unpriced_model_asked_tells_nothing(gw, key):
    request_id, chunks = stream(gw, key, UNPRICED, ASK, include_usage=True)
    assert gw.record(request_id)["cost_micros"] is None
    assert chunks[-1]["usage"] and all("tokenabacus" not in c for c in chunks)


def test_include_cost_must_be_a_boolean(gw, key):
    body = {"model": PRICED, "messages": SAY, "stream": True, "stream_options": {"include_cost": "yes"}}
    r = httpx.post(f"{gw.base_url}/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "stream_options.include_cost"
    validate(r.json(), "ErrorResponse")
