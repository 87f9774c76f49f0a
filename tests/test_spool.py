"""Group commit in the spool: records from concurrent requests share one fsync, a lone request
is synced at once, and nothing waits longer than group_commit_ms."""

from __future__ import annotations

import asyncio
import time

import orjson

from tokenabacus.ledger.record import start_record
from tokenabacus.ledger.spool import Spool, read_segment


class CountingSpool(Spool):
    """The real spool; it also remembers how many records each write + fsync carried."""

    def __init__(self, *a, **kw) -> None:
        super().__init__(*a, **kw)
        self.writes: list[int] = []

    def _write(self, lines: list[bytes]) -> None:
        super()._write(lines)
        self.writes.append(len(lines))


def record():
    return start_record(endpoint="/v1/chat/completions", client_ip="127.0.0.1", user_agent="test")


async def _run(spool: CountingSpool, scenario) -> float:
    spool.open()
    await spool.start()
    try:
        t0 = time.perf_counter()
        await scenario(spool)
        return time.perf_counter() - t0
    finally:
        await spool.close()


def test_lone_request_is_synced_without_waiting(tmp_path):
    spool = CountingSpool(tmp_path, group_commit_ms=2000)

    async def scenario(s: Spool):
        s.active = 1
        await s.append(record())

    assert asyncio.run(_run(spool, scenario)) < 1.0
    assert spool.writes == [1]


def test_concurrent_requests_share_one_fsync(tmp_path):
    spool = CountingSpool(tmp_path, group_commit_ms=2000)
    recs = [record() for _ in range(3)]

    async def scenario(s: Spool):
        s.active = 3
        first = s.append(recs[0])
        await asyncio.sleep(0.01)
        second = s.append(recs[1])
        await asyncio.sleep(0.01)
        third = s.append(recs[2])  # the last request being served: the group is complete
        await asyncio.gather(first, second, third)

    assert asyncio.run(_run(spool, scenario)) < 1.0  # did not sit out the 2 s window
    assert spool.writes == [3]
    seg = sorted(tmp_path.glob("seg-*.jsonl"))[-1]
    _, lines = read_segment(seg)
    assert [orjson.loads(x)["request_id"] for x in lines] == [r.request_id for r in recs]


def test_group_wait_is_bounded(tmp_path):
    spool = CountingSpool(tmp_path, group_commit_ms=50)

    async def scenario(s: Spool):
        s.active = 5  # four other requests are slow: the first record must not wait for them
        await s.append(record())

    elapsed = asyncio.run(_run(spool, scenario))
    assert 0.04 <= elapsed < 1.0
    assert spool.writes == [1]


def test_group_commit_off_syncs_each_record_at_once(tmp_path):
    spool = CountingSpool(tmp_path, group_commit_ms=0)

    async def scenario(s: Spool):
        s.active = 5
        await s.append(record())
        await s.append(record())

    assert asyncio.run(_run(spool, scenario)) < 1.0
    assert spool.writes == [1, 1]
