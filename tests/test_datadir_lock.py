"""One process per data dir: a second `serve` or a `db replay` on a live data dir refuses in
one line before touching anything, a busy port fails before the data dir is touched, and the
running gateway loses nothing to either."""

from __future__ import annotations

import socket
import subprocess
import threading

import httpx

from conftest import BIN, GatewayProc, upstream_models
from procs import wait_for


def attempt(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run a command that must refuse; a command that starts serving instead is killed."""
    proc = subprocess.Popen([str(BIN), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def refused(r: subprocess.CompletedProcess, message: str) -> None:
    assert r.returncode == 2, (r.returncode, r.stdout[-2000:], r.stderr[-2000:])
    assert r.stderr.strip().splitlines() == [f"error: {message}"], r.stderr


def test_second_serve_and_replay_refuse_while_the_first_runs_under_load(tmp_path, llama_upstream):
    data = tmp_path / "data"
    # Records sit in the spool for a while, so a second process would have segments to take.
    config = {"models": upstream_models(llama_upstream.base_url), "ledger": {"writer_interval_ms": 1000}}
    gw = GatewayProc(data, config).start()
    key = gw.create_key(user="load", project="lock", department="ops")
    receipts: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def worker(i: int) -> None:
        with httpx.Client(base_url=gw.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as c:
            n = 0
            while not stop.is_set():
                n += 1
                body = {
                    "model": "smol-bare",
                    "messages": [{"role": "user", "content": f"w{i} r{n}"}],
                    "max_tokens": 2,
                    "stream": n % 2 == 0,
                }
                r = c.post("/chat/completions", json=body)
                if r.status_code == 200:
                    with lock:
                        receipts.append(r.headers["x-request-id"])

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: len(receipts) >= 30, 120, "30 answered requests under load")
        in_use = f"data dir {data} is in use by another tokenabacus process (pid {gw.proc.pid})"
        second = GatewayProc(data, config)  # same data dir, another port
        refused(attempt("serve", "--port", str(second.port), *second.common()), in_use)
        refused(attempt("db", "replay", *gw.common()), in_use)
        # A mistaken restart on the busy port fails on the port before it looks at the data dir.
        refused(
            attempt("serve", "--port", str(gw.port), *gw.common()),
            f"cannot listen on 127.0.0.1:{gw.port}: address already in use",
        )
        # More load after the refusals: answered requests whose records must reach the ledger too.
        after = len(receipts)
        wait_for(lambda: len(receipts) >= max(after + 20, 61), 60, "20 more answered requests after the refusals")
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert httpx.get(f"http://127.0.0.1:{gw.port}/health").json()["ledger"]["ok"]
    gw.stop()
    store = gw.store()
    try:
        ids = store.usage.request_ids()
    finally:
        store.close()
    missing = [r for r in receipts if r not in ids]
    assert len(receipts) > 60 and not missing, f"{len(missing)} of {len(receipts)} responses have no ledger record"
    # The first gateway is gone: the data dir is free again.
    r = attempt("db", "replay", *gw.common())
    assert r.returncode == 0 and r.stdout.startswith("replayed 0 records"), r.stderr


def test_busy_port_fails_without_touching_the_data_dir(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        data = tmp_path / "fresh"
        r = attempt("serve", "--port", str(port), "--data-dir", str(data))
        refused(r, f"cannot listen on 127.0.0.1:{port}: address already in use")
    assert not data.exists()


def test_a_shared_spool_dir_is_locked_across_data_dirs(tmp_path):
    """ledger.spool_dir outside the data dir: the spool is what is locked, whatever the data dir."""
    spool = tmp_path / "shared-spool"
    nowhere = [{"name": "m", "engine": "upstream", "base_url": "http://127.0.0.1:9/v1"}]
    a = GatewayProc(tmp_path / "a", {"models": nowhere, "ledger": {"spool_dir": str(spool)}}).start()
    try:
        b = GatewayProc(tmp_path / "b", {"models": nowhere, "ledger": {"spool_dir": str(spool)}})
        refused(
            attempt("serve", "--port", str(b.port), *b.common()),
            f"spool dir {spool} is in use by another tokenabacus process (pid {a.proc.pid})",
        )
        assert not (tmp_path / "b").exists()  # refused before the ledger was opened
        assert (spool / "tokenabacus.lock").read_text().strip() == str(a.proc.pid)
    finally:
        a.stop()
    # Free again after a clean stop; a SIGKILL frees it too (tests/test_durability.py restarts on it).
    b.start()
    b.stop()


def test_two_instances_cannot_share_one_jsonl_file(tmp_path):
    sink = tmp_path / "logs" / "usage.jsonl"
    nowhere = [{"name": "m", "engine": "upstream", "base_url": "http://127.0.0.1:9/v1"}]
    cfg = {"models": nowhere, "sinks": {"jsonl": {"path": str(sink)}}}
    a = GatewayProc(tmp_path / "a", cfg).start()
    try:
        b = GatewayProc(tmp_path / "b", cfg)
        refused(
            attempt("serve", "--port", str(b.port), *b.common()),
            f"JSONL file {sink} is in use by another tokenabacus process (pid {a.proc.pid})",
        )
        # db replay feeds the same JSONL file, so it refuses too.
        r = attempt("db", "replay", "--data-dir", str(tmp_path / "b"), "--config", str(b.config_path))
        refused(r, f"JSONL file {sink} is in use by another tokenabacus process (pid {a.proc.pid})")
    finally:
        a.stop()
