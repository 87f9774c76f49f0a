"""Upstream engines: the three streaming usage dialects, failures mapped to 502/504, and the
upstream's API key kept server-side."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest

from conftest import GatewayProc, LlamaServer, free_port, gguf_path, wait_http
from openapi_schema import validate

STYLES = ("final", "running", "none")
MESSAGES = [{"role": "user", "content": "List three colours of the rainbow."}]


@pytest.fixture(scope="module")
def dialects(tmp_path_factory, llama_upstream):
    tmp = tmp_path_factory.mktemp("dialects")
    procs, models = [], []
    for style in STYLES:
        port = free_port()
        log = tmp / f"{style}.jsonl"
        p = subprocess.Popen(
            [
                sys.executable,
                str(Path(__file__).parent / "dialect_upstream.py"),
                "--upstream",
                llama_upstream.base_url,
                "--style",
                style,
                "--port",
                str(port),
                "--log",
                str(log),
            ]
        )
        wait_http(f"http://127.0.0.1:{port}/v1/models", p)
        procs.append(p)
        models.append(
            {
                "name": f"style-{style}",
                "engine": "upstream",
                "base_url": f"http://127.0.0.1:{port}/v1",
                "upstream_model": "smol",
                "tokenizer": {"type": "gguf", "path": str(gguf_path())},
            }
        )
    gw = GatewayProc(tmp / "data", {"models": models}).start()
    yield gw, gw.create_key(user="carol", project="dialects", department="qa"), tmp
    gw.stop()
    for p in procs:
        p.terminate()
        p.wait(10)


def sse(gw, key, body):
    with httpx.stream(
        "POST", f"{gw.base_url}/chat/completions", json=body, timeout=120, headers={"Authorization": f"Bearer {key}"}
    ) as r:
        assert r.status_code == 200, r.read()
        events = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
        return r.headers["x-request-id"], events


@pytest.mark.parametrize("include_usage", [True, False])
@pytest.mark.parametrize("style", STYLES)
def test_stream_dialects(dialects, style, include_usage):
    gw, key, tmp = dialects
    # End-of-text banned: the shared llama.cpp server's prompt cache can otherwise make an empty reply.
    body = {
        "model": f"style-{style}",
        "messages": MESSAGES,
        "max_tokens": 16,
        "stream": True,
        "temperature": 0,
        "logit_bias": {"0": -100, "1": -100, "2": -100},
    }
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    request_id, events = sse(gw, key, body)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    for ch in chunks:
        validate(ch, "CreateChatCompletionStreamResponse")
    with_usage = [c for c in chunks if c.get("usage") is not None]
    rec = gw.record(request_id)
    if include_usage:
        assert len(with_usage) == 1 and with_usage[0] is chunks[-1] and chunks[-1]["choices"] == []
        assert chunks[-1]["usage"]["prompt_tokens"] == rec["prompt_tokens"]
        assert chunks[-1]["usage"]["completion_tokens"] == rec["completion_tokens"]
    else:
        assert with_usage == [] and all("usage" not in c for c in chunks)
    assert rec["status"] == "ok" and rec["usage_source"] == "tokenizer"
    assert rec["prompt_tokens"] > 0 and 0 < rec["completion_tokens"] <= 16
    sent = [json.loads(line) for line in (tmp / f"{style}.jsonl").read_text().splitlines()]
    upstream_usage = sent[-1]["usage"]
    assert sent[-1]["include_usage"] is True  # the gateway always asks for usage
    if style == "none":
        assert rec["upstream_prompt_tokens"] is None and rec["upstream_completion_tokens"] is None
    else:
        assert rec["upstream_prompt_tokens"] == upstream_usage["prompt_tokens"]
        assert rec["upstream_completion_tokens"] == upstream_usage["completion_tokens"]


def test_upstream_usage_kept_beside_ours_and_billing_choice(upstream_gw, upstream_key):
    client = upstream_gw.client(upstream_key)
    for model, source in (("smol-gguf", "tokenizer"), ("smol-billed-upstream", "upstream"), ("smol-bare", "upstream")):
        raw = client.chat.completions.with_raw_response.create(model=model, messages=MESSAGES, max_tokens=8)
        usage = raw.parse().usage
        rec = upstream_gw.record(raw.headers["x-request-id"])
        assert rec["usage_source"] == source
        assert rec["model_version"] == "smol"  # the model id the upstream reported
        assert rec["upstream_prompt_tokens"] is not None and rec["upstream_completion_tokens"] is not None
        assert (usage.prompt_tokens, usage.completion_tokens) == (rec["prompt_tokens"], rec["completion_tokens"])
        if source == "upstream":
            assert rec["prompt_tokens"] == rec["upstream_prompt_tokens"]


def test_stream_without_tokenizer_or_upstream_usage_is_estimated(upstream_gw, upstream_key):
    """llama.cpp server reports no usage in streams; with no tokenizer the gateway estimates
    and says so, rather than recording zero."""
    request_id, events = sse(
        upstream_gw, upstream_key, {"model": "smol-bare", "messages": MESSAGES, "max_tokens": 8, "stream": True}
    )
    rec = upstream_gw.record(request_id)
    assert rec["usage_source"] == "estimated" and rec["prompt_tokens"] > 0 and rec["completion_tokens"] > 0


@pytest.fixture(scope="module")
def silent_server():
    """Accepts connections and never answers: an upstream that hangs."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    conns = []
    stop = threading.Event()

    def accept():
        sock.settimeout(0.2)
        while not stop.is_set():
            try:
                conns.append(sock.accept()[0])
            except OSError:
                continue

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    yield sock.getsockname()[1]
    stop.set()
    t.join()
    for c in conns:
        c.close()
    sock.close()


@pytest.fixture(scope="module")
def keyed_llama(tmp_path_factory):
    srv = LlamaServer(tmp_path_factory.mktemp("keyed"), api_key="upstream-secret-123")
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def failing_gw(tmp_path_factory, silent_server, keyed_llama):
    models = [
        {"name": "down", "engine": "upstream", "base_url": f"http://127.0.0.1:{free_port()}/v1"},
        {
            "name": "hangs",
            "engine": "upstream",
            "base_url": f"http://127.0.0.1:{silent_server}/v1",
            "timeout": {"connect": 1, "read": 1},
        },
        {
            "name": "keyed-ok",
            "engine": "upstream",
            "base_url": keyed_llama.base_url,
            "upstream_model": "smol",
            "api_key_env": "KEYED_SECRET",
        },
        {
            "name": "keyed-wrong",
            "engine": "upstream",
            "base_url": keyed_llama.base_url,
            "upstream_model": "smol",
            "api_key": "nope",
        },
    ]
    gw = GatewayProc(
        tmp_path_factory.mktemp("failing") / "data", {"models": models}, env={"KEYED_SECRET": "upstream-secret-123"}
    ).start()
    yield gw, gw.create_key()
    gw.stop()


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(
    "model,status,code",
    [("down", 502, "upstream_unreachable"), ("hangs", 504, "upstream_timeout"), ("keyed-wrong", 502, "upstream_auth")],
)
def test_upstream_failures(failing_gw, model, status, code, stream):
    gw, key = failing_gw
    r = httpx.post(
        f"{gw.base_url}/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
        json={"model": model, "messages": MESSAGES, "max_tokens": 4, "stream": stream},
    )
    assert r.status_code == status, r.text
    validate(r.json(), "ErrorResponse")
    assert r.json()["error"]["code"] == code
    assert "secret" not in r.text and "nope" not in r.text
    rec = gw.record(r.headers["x-request-id"])
    assert rec["status"] == "error" and rec["error_code"] == code


def test_upstream_key_is_server_side(failing_gw):
    gw, key = failing_gw
    r = gw.client(key).chat.completions.create(model="keyed-ok", messages=MESSAGES, max_tokens=4)
    assert r.usage.completion_tokens > 0
    log = gw.log.read_text()
    assert "upstream-secret-123" not in log and key not in log


def test_serve_upstream_flag(tmp_path, llama_upstream):
    gw = GatewayProc(tmp_path / "data", args=["--upstream", f"qwen-7b-chat={llama_upstream.base_url}#smol"]).start()
    try:
        key = gw.create_key()
        client = gw.client(key)
        assert [m.id for m in client.models.list()] == ["qwen-7b-chat"]
        r = client.chat.completions.create(model="qwen-7b-chat", messages=MESSAGES, max_tokens=4)
        assert r.model == "qwen-7b-chat" and r.usage.prompt_tokens > 0
    finally:
        gw.stop()


def test_health_names_the_counting_library(upstream_gw):
    import httpx

    url = upstream_gw.base_url.removesuffix("/v1") + "/health"
    public = httpx.get(url).json()
    # Without the admin key: liveness only, no upstream addresses or paths.
    assert public["models"]["qwen-hf"] == {"ready": True} and public["ledger"] == {"ok": True, "dead_letters": 0}
    assert "127.0.0.1" not in json.dumps(public) and upstream_gw.admin_key not in json.dumps(public)
    assert httpx.get(url, headers={"Authorization": "Bearer sk-wrong"}).json() == public
    models = httpx.get(url, headers={"Authorization": f"Bearer {upstream_gw.admin_key}"}).json()["models"]
    assert models["qwen-hf"]["base_url"].startswith("http://127.0.0.1:")
    assert models["qwen-hf"]["counted_by"] == "tiktoken"  # the fast path passed its self-check
    assert models["smol-gguf"]["counted_by"] == "llama.cpp"
    assert models["gpt-4o-mini"]["counted_by"] == "tiktoken"
