"""A client that disconnects mid-stream is billed for what was generated, with status=cancelled."""

from __future__ import annotations

import time

import pytest

from conftest import EMBEDDED

LONG = [{"role": "user", "content": "Count from 1 to 300, one number per line, no other text."}]


@pytest.mark.parametrize("which", ["embedded", "upstream"])
def test_disconnect_mid_stream_records_cancelled(request, which):
    if which == "embedded":
        gw, key, model = request.getfixturevalue("embedded_gw"), request.getfixturevalue("embedded_key"), EMBEDDED
    else:
        gw, key, model = request.getfixturevalue("upstream_gw"), request.getfixturevalue("upstream_key"), "smol-gguf"
    # End-of-text ids banned: the reply cannot end before the client leaves, whatever the KV cache holds.
    body = {
        "model": model,
        "messages": LONG,
        "max_tokens": 400,
        "stream": True,
        "temperature": 0,
        "logit_bias": {"0": -100, "1": -100, "2": -100},
    }
    rec = gw.record(gw.stream_and_leave(key, body, events=6))
    assert rec["status"] == "cancelled" and rec["error_code"] == "client_disconnected"
    assert rec["prompt_tokens"] > 0
    # Billed for what was generated: at least what we saw, and it stopped well before max_tokens.
    assert 5 <= rec["completion_tokens"] < 400
    assert rec["total_tokens"] == rec["prompt_tokens"] + rec["completion_tokens"]
    # The engine is free again: a following request completes normally.
    time.sleep(0.2)
    r2 = gw.client(key).chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=3)
    assert r2.usage.completion_tokens > 0


def test_concurrent_embedded_requests_are_queued_not_cancelled(embedded_gw, embedded_key):
    """Requests to one embedded model wait their turn; none cancels another."""
    import concurrent.futures

    client = embedded_gw.client(embedded_key)

    def one(i):
        return client.chat.completions.create(
            model=EMBEDDED, messages=[{"role": "user", "content": f"Say the number {i}"}], max_tokens=12, temperature=0
        )

    with concurrent.futures.ThreadPoolExecutor(6) as ex:
        results = list(ex.map(one, range(6)))
    for r in results:
        assert r.choices[0].finish_reason in ("stop", "length") and r.usage.completion_tokens > 0
