"""SIGTERM while requests run: after the grace period the server cancels them, and every one
still leaves exactly one record (status cancelled, error_code server_shutdown, the tokens that
ran); the embedded model is stopped before it is freed, so the process exits cleanly."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import httpx
import pytest

from conftest import EMBEDDED, GatewayProc, gguf_path
from procs import wait_for

LONG = [{"role": "user", "content": "Count from 1 to 500, one number per line, no other text."}]
NO_END = {"0": -100, "1": -100, "2": -100}  # SmolLM2's end-of-text ids: generation runs to max_tokens


def start(tmp_path: Path, rogue_upstream: str) -> tuple[GatewayProc, str]:
    config = {
        "server": {"shutdown_grace_s": 1},
        "models": [
            {"name": EMBEDDED, "engine": "embedded", "n_ctx": 4096},
            {
                "name": "slow",
                "engine": "upstream",
                "base_url": rogue_upstream,
                "upstream_model": "slow",
                "tokenizer": {"type": "gguf", "path": str(gguf_path())},
            },
        ],
    }
    gw = GatewayProc(tmp_path / "data", config).start()
    return gw, gw.create_key(user="night-batch", project="reports", department="finance")


def running(gw: GatewayProc, model: str) -> int:
    """Requests running on a model now (its queue's figures in the admin view of /health)."""
    detail = httpx.get(
        gw.base_url.removesuffix("/v1") + "/health", headers={"Authorization": f"Bearer {gw.admin_key}"}
    ).json()
    return detail["governance"]["queues"][model]["running"]


def stop_and_read(gw: GatewayProc, request_id: str) -> dict:
    assert gw.proc is not None
    # uvicorn ends by re-raising the SIGTERM it handled: -15 is a clean exit; a crash is -11 (139)
    assert gw.proc.wait(30) in (0, -signal.SIGTERM), gw.log.read_text()[-3000:]
    store = gw.store()
    try:
        rows = [r for r in store.usage.latest(limit=1000) if r["request_id"] == request_id]
    finally:
        store.close()
    assert len(rows) == 1, f"{len(rows)} records for {request_id}"
    return rows[0]


@pytest.mark.parametrize("model", [EMBEDDED, "slow"])
def test_sigterm_mid_stream_records_what_ran(tmp_path, rogue_upstream, model):
    gw, key = start(tmp_path, rogue_upstream)
    seen = 0
    body = {"model": model, "messages": LONG, "max_tokens": 500, "stream": True, "temperature": 0, "logit_bias": NO_END}
    with httpx.stream(
        "POST", f"{gw.base_url}/chat/completions", json=body, timeout=60, headers={"Authorization": f"Bearer {key}"}
    ) as r:
        request_id = r.headers["x-request-id"]
        try:
            for line in r.iter_lines():
                if line.startswith("data: "):
                    seen += 1
                    if seen == 8:
                        gw.proc.send_signal(signal.SIGTERM)  # and keep reading until the server ends it
        except httpx.HTTPError:
            pass  # the server cut the stream when it cancelled the request
    rec = stop_and_read(gw, request_id)
    assert rec["status"] == "cancelled" and rec["error_code"] == "server_shutdown", rec
    assert rec["prompt_tokens"] > 0 and seen - 1 <= rec["completion_tokens"] < 500
    assert rec["total_tokens"] == rec["prompt_tokens"] + rec["completion_tokens"]


def test_sigterm_during_embedded_generation_exits_cleanly(tmp_path, rogue_upstream):
    """Non-streamed generation in the engine's worker thread when the server stops."""
    gw, key = start(tmp_path, rogue_upstream)
    result: dict = {}

    def call() -> None:
        try:
            r = httpx.post(
                f"{gw.base_url}/chat/completions",
                headers={"Authorization": f"Bearer {key}"},
                timeout=60,
                json={"model": EMBEDDED, "messages": LONG, "max_tokens": 3500, "temperature": 0, "logit_bias": NO_END},
            )
            result["id"] = r.headers.get("x-request-id")
        except httpx.HTTPError as e:
            result["error"] = e

    t = threading.Thread(target=call)
    t.start()
    # Generating: the request holds the embedded engine's only slot (the shutdown grace, 1 s, then
    # lets it generate before the server cancels it).
    wait_for(lambda: running(gw, EMBEDDED), 30, "the request running on the embedded engine")
    gw.proc.send_signal(signal.SIGTERM)
    t.join(60)
    assert gw.proc.wait(30) in (0, -signal.SIGTERM), gw.log.read_text()[-3000:]
    store = gw.store()
    try:
        rows = [r for r in store.usage.latest(limit=1000) if r["model"] == EMBEDDED and r["status"] != "rejected"]
    finally:
        store.close()
    assert len(rows) == 1, rows
    rec = rows[0]
    assert rec["status"] == "cancelled" and rec["error_code"] == "server_shutdown"
    assert 0 < rec["completion_tokens"] < 3500 and rec["prompt_tokens"] > 0
