"""Reconciliation with the real vLLM's own counters: the gateway scrapes the engine's /metrics
(``metrics_url``), and `tokenabacus models status` shows its token counters' growth beside the
ledger's, with the engine's occupancy. Traffic that bypasses the gateway shows up as drift."""

from __future__ import annotations

import json
import time

import httpx

from conftest import GatewayProc
from test_real_engines import _built, real


def test_vllm_counters_are_reconciled_and_shown_by_models_status(tmp_path):
    model = _built("weights")
    _built("vllm-venv")
    engine = next(e for e in real.engines(model) if e.name == "vllm")
    port, log = real.free_port(), tmp_path / "vllm.log"
    proc = real.start(engine, port, log)
    try:
        real.wait_ready(proc, port, log)
        entry = {
            "name": "smol",
            "engine": "upstream",
            "base_url": f"http://127.0.0.1:{port}/v1",
            "upstream_model": real.SERVED_NAME,
            "tokenizer": {"type": "hf", "path": str(model)},
            "metrics_url": f"http://127.0.0.1:{port}/metrics",
            "metrics_interval_s": 0.5,
        }
        gw = GatewayProc(tmp_path / "data", {"models": [entry]}).start()
        try:
            key = gw.create_key(user="ops", project="vllm")
            recs = []
            for i, text in enumerate(["我爱北京天安门", "Hello there", "def f(x): return x * 2"]):
                body = {"model": "smol", "messages": [{"role": "user", "content": text}], "max_tokens": 6}
                body.update({"temperature": 0, "stream": i % 2 == 1})
                r = httpx.post(
                    f"{gw.base_url}/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=60
                )
                assert r.status_code == 200
                recs.append(gw.record(r.headers["x-request-id"]))
            prompt = sum(r["prompt_tokens"] for r in recs)
            completion = sum(r["completion_tokens"] for r in recs)

            def since() -> dict:
                out = gw.cli("models", "status", "--url", f"http://127.0.0.1:{gw.port}", "--format", "json")
                return json.loads(out.stdout)["smol"]["reconcile"]

            status = _wait(lambda: (s := since()).get("since_start", {}).get("ledger_prompt_tokens") == prompt and s)
            got = status["since_start"]
            assert got["engine_prompt_tokens"] == got["ledger_prompt_tokens"] == prompt
            assert got["engine_generation_tokens"] == got["ledger_completion_tokens"] == completion
            assert got["prompt_drift"] == 0 and got["generation_drift"] == 0
            occ = status["occupancy"]
            assert occ["running"] == 0 and occ["waiting"] == 0 and 0 <= occ["kv_cache_usage"] <= 1
            # Someone using the engine directly: the engine counts it, the ledger cannot.
            direct = httpx.post(
                f"http://127.0.0.1:{port}/v1/chat/completions",
                json={"model": real.SERVED_NAME, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3},
                timeout=60,
            ).json()["usage"]
            # The engine counts generated tokens step by step: wait until both counters have it all.
            drifted = _wait(
                lambda: (
                    (s := since()["since_start"])["prompt_drift"] >= direct["prompt_tokens"]
                    and s["generation_drift"] >= direct["completion_tokens"]
                    and s
                )
            )
            assert drifted["prompt_drift"] == direct["prompt_tokens"]
            assert drifted["generation_drift"] == direct["completion_tokens"]
            table = gw.cli("models", "status", "--url", f"http://127.0.0.1:{gw.port}").stdout
            assert "smol" in table and "ok" in table
        finally:
            gw.stop()
    finally:
        real.stop(proc, port)


def test_models_status_needs_an_admin_key(tmp_path):
    gw = GatewayProc(tmp_path / "d", {}).start()
    try:
        env_free = gw.cli(
            "models", "status", "--url", f"http://127.0.0.1:{gw.port}", "--admin-key", "sk-nope", check=False
        )
        assert env_free.returncode == 2 and "401" in env_free.stderr and "Traceback" not in env_free.stderr
        ok = gw.cli("models", "status", "--url", f"http://127.0.0.1:{gw.port}", "--format", "json")
        status = json.loads(ok.stdout)
        (name,) = status
        assert status[name]["engine"] == "embedded" and status[name]["queue"]["max_concurrency"] == 1
    finally:
        gw.stop()


def _wait(fn, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = fn()
        if out:
            return out
        time.sleep(0.3)
    raise AssertionError("not reconciled in time")
