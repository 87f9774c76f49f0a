"""Killing the gateway with SIGKILL under load loses no record of a response that completed."""

from __future__ import annotations

import threading
import time

import httpx

from conftest import GatewayProc, upstream_models


def test_sigkill_under_load_loses_no_completed_record(tmp_path, llama_upstream):
    # A long writer interval keeps most records only in the spool when the process dies,
    # so the test exercises the replay path, not just the database.
    config = {"models": upstream_models(llama_upstream.base_url), "ledger": {"writer_interval_ms": 60000}}
    gw = GatewayProc(tmp_path / "data", config).start()
    key = gw.create_key(user="load", project="durability", department="ops")
    receipts: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()
    deadline = time.monotonic() + 60

    def worker(i: int) -> None:
        with httpx.Client(base_url=gw.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as c:
            n = 0
            while not stop.is_set() and time.monotonic() < deadline:
                n += 1
                body = {
                    "model": "smol-gguf",
                    "messages": [{"role": "user", "content": f"worker {i} request {n}"}],
                    "max_tokens": 2,
                    "stream": n % 2 == 0,
                }
                try:
                    r = c.post("/chat/completions", json=body)
                    text = r.text  # the whole response, [DONE] included for streams
                except httpx.HTTPError:
                    continue  # cut off by the kill: no receipt
                if r.status_code == 200 and (not body["stream"] or text.rstrip().endswith("data: [DONE]")):
                    with lock:
                        receipts.append(r.headers["x-request-id"])

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    while len(receipts) < 60 and time.monotonic() < deadline:
        time.sleep(0.05)
    gw.kill()  # SIGKILL while requests are in flight
    stop.set()
    for t in threads:
        t.join()
    assert len(receipts) >= 60, "the load did not get going"
    assert len(list((tmp_path / "data" / "spool").glob("seg-*.jsonl"))) >= 1

    gw.start()  # same data dir: the spool is replayed at start
    try:
        store = gw.store()
        ids = store.usage.request_ids()
        missing = [r for r in receipts if r not in ids]
        assert not missing, f"{len(missing)} of {len(receipts)} completed responses have no ledger record"
        # Replays are idempotent: no request id twice, and every receipt is an ok record.
        rows = store.usage.latest(limit=100000)
        assert len(rows) == len({r["request_id"] for r in rows})
        by_id = {r["request_id"]: r for r in rows}
        assert all(by_id[r]["status"] == "ok" and by_id[r]["total_tokens"] > 0 for r in receipts)
        store.close()
    finally:
        gw.stop()
