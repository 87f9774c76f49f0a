"""RedisCounters against the real Redis on 127.0.0.1:6379: each test under its own random key prefix,
deleted afterwards. Outages are real too: a closed port, or a proxy in front of Redis that is stopped."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
import uuid

import pytest
import redis

from conftest import service_available
from procs import free_port
from tokenabacus.calendar import now_ms
from tokenabacus.governance.batcher import BATCH_CAP
from tokenabacus.governance.counters import SEED, SEEDED, WAIT, Ask, Commit, Missing, Refusal
from tokenabacus.governance.errors import CountersUnavailable
from tokenabacus.governance.redis_counters import RedisCounters

URL = "redis://127.0.0.1:6379/0"
EXPIRE = now_ms() + 3_600_000


# Counters the tests reserve on, ready as if seeded from an empty ledger (a counter that is not ready
# answers Missing: see test_missing_counters_are_seeded_before_anyone_reserves).
READY = ["a", "b", "c", "d", "k", "m", "n", "t", 'k "ü" \\']


@pytest.fixture
def prefix():
    service_available("127.0.0.1", 6379, "Redis")
    p = f"test:{uuid.uuid4().hex}:"
    r = redis.Redis.from_url(URL)
    for key in READY:
        r.hset(f"{p}c:{key}", mapping={"used": 0, "reserved": 0, "s": 1})
        r.pexpireat(f"{p}c:{key}", EXPIRE)
    r.close()
    yield p
    r = redis.Redis.from_url(URL)
    keys = list(r.scan_iter(match=f"{p}*"))
    if keys:
        r.delete(*keys)
    r.close()


def ask(key: str, amount: int, limit: int = 100) -> Ask:
    return Ask(key, amount, limit, EXPIRE)


def commit(key: str, used: int) -> Commit:
    return Commit(key, used, EXPIRE)


def test_reserve_within_limit_then_refusal_with_state(prefix):
    async def main():
        rc = RedisCounters(URL, prefix=prefix)
        try:
            assert await rc.reserve("r1", [ask("a", 60), ask("b", 30)]) is None
            assert await rc.usage(["a", "b", "unknown"]) == [(0, 60), (0, 30), (0, 0)]
            await rc.seed("b", 50, EXPIRE)  # b exists already (it holds a reservation): not seeded
            assert await rc.usage(["b"]) == [(0, 30)]
            await rc.settle("r1", [commit("a", 10), commit("b", 40)])
            assert await rc.reserve("r2", [ask("b", 50)]) is None  # b: used 40 + reserved 50
            # a fits, b does not: the refusal names b (index 1) with its state, and a is unchanged
            assert await rc.reserve("r3", [ask("a", 5), ask("b", 11)]) == Refusal(1, 40, 50)
            assert await rc.usage(["a", "b"]) == [(10, 0), (40, 50)]
            assert await rc.reserve("r4", [ask("a", 5), ask("b", 10)]) is None  # exactly at the limit fits
            assert await rc.usage(["a", "b"]) == [(10, 5), (40, 60)]
        finally:
            await rc.close()

    asyncio.run(main())


def test_settle_releases_every_held_key_and_adds_use(prefix):
    async def main():
        rc = RedisCounters(URL, prefix=prefix)
        try:
            assert await rc.reserve("r1", [ask("a", 70), ask("b", 70)]) is None
            # settle names only a; the reservation on b is released too (as MemoryCounters does)
            await rc.settle("r1", [commit("a", 25)])
            assert await rc.usage(["a", "b"]) == [(25, 0), (0, 0)]
            await rc.settle("unknown", [commit("a", 5)])  # nothing held: only the use is added
            assert await rc.usage(["a"]) == [(30, 0)]
            assert await rc.reserve("r2", [ask("a", 71)]) == Refusal(0, 30, 0)
        finally:
            await rc.close()

    asyncio.run(main())


def test_concurrent_reserves_from_two_clients(prefix):
    async def main():
        one, two = RedisCounters(URL, prefix=prefix), RedisCounters(URL, prefix=prefix)
        try:
            results = await asyncio.gather(
                *((one if i % 2 else two).reserve(f"r{i}", [ask("k", 10, 200)]) for i in range(50))
            )
            assert sum(r is None for r in results) == 20
            assert all(r.index == 0 and r.used + r.reserved == 200 for r in results if r is not None)
            assert await one.usage(["k"]) == [(0, 200)]
        finally:
            await one.close()
            await two.close()

    asyncio.run(main())


def test_lapsed_reservation_frees_room_and_settle_still_counts(prefix):
    """A process that stops renewing (it died) loses its reservations one lease later; the one
    still running keeps its own."""

    async def main():
        dead = RedisCounters(URL, prefix=prefix, reservation_ttl_s=0.3)
        rc = RedisCounters(URL, prefix=prefix, reservation_ttl_s=0.3)
        try:
            assert await dead.reserve("dead", [ask("k", 150, 200)]) is None
            assert await dead.reserve("late", [ask("k", 30, 200)]) is None
            await dead.close()  # no more renewals: as if killed
            assert await rc.reserve("alive", [ask("k", 10, 200)]) is None
            assert await rc.reserve("r", [ask("k", 100, 200)]) == Refusal(0, 0, 190)
            await asyncio.sleep(0.6)  # two leases: renewed for "alive", lapsed for the dead
            assert await rc.usage(["k"]) == [(0, 10)]
            assert await rc.reserve("r", [ask("k", 100, 200)]) is None  # the room "dead" held
            await rc.settle("late", [commit("k", 20)])  # its reservation lapsed: the use still counts
            assert await rc.usage(["k"]) == [(20, 110)]
        finally:
            await rc.close()

    asyncio.run(main())


def test_a_restarted_owner_reclaims_its_reservations_at_once(prefix):
    async def main():
        first = RedisCounters(URL, prefix=prefix, owner="gw-a")
        other = RedisCounters(URL, prefix=prefix, owner="gw-b")
        try:
            assert await first.reserve("r1", [ask("k", 60), ask("m", 5)]) is None
            assert await first.reserve("r2", [ask("k", 30)]) is None
            assert await other.reserve("r3", [ask("k", 5)]) is None
            await first.close()  # killed: nothing settled
            again = RedisCounters(URL, prefix=prefix, owner="gw-a")
            assert await again.reclaim() == 2
            assert await again.usage(["k", "m"]) == [(0, 5), (0, 0)]  # gw-b's reservation stays
            assert await again.reclaim() == 0
            await again.close()
        finally:
            await other.close()

    asyncio.run(main())


def test_missing_counters_are_seeded_before_anyone_reserves(prefix):
    """A counter never seeded, or lost (a flush, an eviction), is not judged from zero: reserve
    answers Missing; one caller seeds it while the others wait, and settles during the seed count."""

    async def main():
        one, two = RedisCounters(URL, prefix=prefix), RedisCounters(URL, prefix=prefix)
        try:
            assert await one.reserve("r1", [ask("k", 10), ask("new", 10)]) == Missing(["new"])
            assert await one.usage(["k"]) == [(0, 0)]  # nothing was reserved
            assert await one.begin_seed("new", EXPIRE) == SEED
            assert await two.begin_seed("new", EXPIRE) == WAIT
            assert await two.reserve("r2", [ask("new", 10)]) == Missing(["new"])
            await two.settle("r0", [commit("new", 7)])  # settled while the seed is read
            await one.finish_seed("new", 80)
            assert await two.begin_seed("new", EXPIRE) == SEEDED
            assert await one.usage(["new"]) == [(87, 0)]
            assert await two.reserve("r2", [ask("new", 13)]) is None
            assert await two.reserve("r3", [ask("new", 1)]) == Refusal(0, 87, 13)
            await one.correct("new", 5)
            assert await one.usage(["new"]) == [(92, 13)]
        finally:
            await one.close()
            await two.close()
        r = redis.Redis.from_url(URL)
        try:
            r.delete(f"{prefix}c:new")  # lost, with a reservation in flight
        finally:
            r.close()
        rc = RedisCounters(URL, prefix=prefix)
        try:
            assert await rc.reserve("r4", [ask("new", 1)]) == Missing(["new"])
            await rc.settle("r2", [commit("new", 13)])  # the request in flight ends: counted once seeded
            assert await rc.begin_seed("new", EXPIRE) == SEED
            await rc.finish_seed("new", 100)
            assert await rc.usage(["new"]) == [(100, 0)]
        finally:
            await rc.close()

    asyncio.run(main())


def test_seed_only_when_absent_and_keys_expire(prefix):
    async def main():
        rc = RedisCounters(URL, prefix=prefix)
        try:
            await rc.seed("s", 40, EXPIRE)
            await rc.seed("s", 99, EXPIRE)
            assert await rc.usage(["s"]) == [(40, 0)]
            assert await rc.reserve("r1", [ask("s", 10), ask("t", 10)]) is None
            await rc.settle("r2", [commit("u", 3)])
        finally:
            await rc.close()

    asyncio.run(main())
    r = redis.Redis.from_url(URL)
    try:
        keys = [k.decode() for k in r.scan_iter(match=f"{prefix}*")]
        assert {f"{prefix}c:s", f"{prefix}c:t", f"{prefix}d:s", f"{prefix}q:r1", f"{prefix}c:u"} <= set(keys)
        for k in keys:
            assert r.pttl(k) > 0, k
        assert 0 < r.pttl(f"{prefix}q:r1") <= 900_000  # the request's keys go when its reservation lapses
        assert abs(r.pttl(f"{prefix}c:s") - (EXPIRE - now_ms())) < 5_000
    finally:
        r.close()


def test_closed_refuses_quickly_when_redis_is_unreachable(prefix, caplog):
    url = f"redis://:s3cret@127.0.0.1:{free_port()}/0"

    async def main():
        rc = RedisCounters(url, prefix=prefix, on_error="closed")
        try:
            t0 = time.monotonic()
            with pytest.raises(CountersUnavailable) as e:
                await rc.reserve("r1", [ask("k", 10)])
            elapsed = time.monotonic() - t0
            assert elapsed < 2.0
            assert "s3cret" not in e.value.message and "127.0.0.1" in e.value.message
            assert "quota counters" in e.value.message
            await rc.settle("r1", [commit("k", 5)])  # never raises
            assert await rc.reserve("r0", []) is None  # nothing limited: nothing needed
            h = rc.health()
            assert h["ok"] is False and h["since"] and h["on_error"] == "closed" and "s3cret" not in h["url"]
            return elapsed
        finally:
            await rc.close()

    with caplog.at_level(logging.WARNING):
        elapsed = asyncio.run(main())
    print(f"closed refusal took {elapsed * 1000:.1f} ms")


def test_closed_refuses_within_the_timeout_when_redis_hangs(prefix):
    """A server that accepts connections and never answers: the timeout bounds the wait."""
    with socket.create_server(("127.0.0.1", 0)) as silent:

        async def main():
            rc = RedisCounters(f"redis://127.0.0.1:{silent.getsockname()[1]}/0", prefix=prefix, timeout_s=0.3)
            try:
                t0 = time.monotonic()
                with pytest.raises(CountersUnavailable):
                    await rc.reserve("r1", [ask("k", 10)])
                elapsed = time.monotonic() - t0
                t0 = time.monotonic()
                await rc.settle("r1", [commit("k", 5)])  # down and not due for a retry: no wait at all
                assert time.monotonic() - t0 < 0.05
                return elapsed
            finally:
                await rc.close()

        elapsed = asyncio.run(main())
    assert elapsed < 2.0
    print(f"hung redis refusal took {elapsed * 1000:.1f} ms")


def test_open_falls_back_to_local_counters(prefix, caplog):
    async def main():
        rc = RedisCounters(f"redis://127.0.0.1:{free_port()}/0", prefix=prefix, on_error="open")
        try:
            assert await rc.reserve("r1", [ask("k", 60)]) == Missing(["k"])  # local counters start from the ledger
            assert await rc.begin_seed("k", EXPIRE) == SEED
            await rc.finish_seed("k", 0)
            assert await rc.reserve("r1", [ask("k", 60)]) is None
            assert await rc.reserve("r2", [ask("k", 60)]) == Refusal(0, 0, 60)  # the limit holds locally
            await rc.settle("r1", [commit("k", 30)])
            assert await rc.usage(["k"]) == [(30, 0)]
            assert await rc.reserve("r3", [ask("k", 71)]) == Refusal(0, 30, 0)
            h = rc.health()
            assert h["backend"] == "redis" and h["ok"] is False and h["since"] and h["on_error"] == "open"
        finally:
            await rc.close()

    with caplog.at_level(logging.WARNING):
        asyncio.run(main())
    warnings = [r for r in caplog.records if "using local counters" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING


class Proxy:
    """A TCP relay to Redis that can be stopped (an outage) and started again on the same port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.server: asyncio.Server | None = None
        self.writers: list[asyncio.StreamWriter] = []

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", self.port, reuse_address=True)

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        for w in self.writers:
            w.close()
        self.writers.clear()
        await self.server.wait_closed()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", 6379)
        self.writers += [writer, up_writer]

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


def test_open_outage_and_recovery(prefix, caplog):
    async def main():
        proxy = Proxy()
        await proxy.start()
        rc = RedisCounters(f"redis://127.0.0.1:{proxy.port}/0", prefix=prefix, on_error="open")
        direct = RedisCounters(URL, prefix=prefix)
        try:
            assert await rc.reserve("in-redis", [ask("k", 10)]) is None
            await proxy.stop()
            assert await rc.reserve("local", [ask("k", 20)]) == Missing(["k"])  # Redis is gone: counted locally,
            await rc.seed("k", 0, EXPIRE)  # from the ledger's figure
            assert await rc.reserve("local", [ask("k", 20)]) is None
            assert rc.health()["ok"] is False
            await proxy.start()
            await rc.settle("local", [commit("k", 15)])  # settles where it was reserved: locally
            await asyncio.sleep(1.1)  # Redis is retried at most once a second
            assert await rc.reserve("again", [ask("k", 5)]) is None
            assert rc.health() == {
                "backend": "redis",
                "ok": True,
                "on_error": "open",
                "url": f"redis://127.0.0.1:{proxy.port}/0",
                "since": None,
            }
            assert await direct.usage(["k"]) == [(0, 15)]  # in-redis and again, nothing from the outage
            await rc.settle("in-redis", [commit("k", 7)])
            assert await direct.usage(["k"]) == [(7, 5)]
        finally:
            await rc.close()
            await direct.close()
            await proxy.stop()

    with caplog.at_level(logging.INFO, logger="tokenabacus.governance.redis_counters"):
        asyncio.run(main())
    assert any("redis is back" in r.getMessage() for r in caplog.records)


def count_script_calls(rc: RedisCounters) -> list[int]:
    """Count the script calls (EVALSHA) one RedisCounters makes: [calls]."""
    calls = [0]
    evalsha = rc._redis.evalsha

    def counting(*args, **kwargs):
        calls[0] += 1
        return evalsha(*args, **kwargs)

    rc._redis.evalsha = counting  # type: ignore[method-assign]
    return calls


def test_burst_of_reserves_is_exact_and_batched(prefix):
    async def main():
        rc = RedisCounters(URL, prefix=prefix)
        calls = count_script_calls(rc)
        try:
            results = await asyncio.gather(
                *(rc.reserve(f"r{i}", [ask("k", 10, 370), ask("n", 1, 10**9)]) for i in range(200))
            )
            admitted = [i for i, r in enumerate(results) if r is None]
            assert admitted == list(range(37))  # in arrival order, each all or nothing
            assert all(r == Refusal(0, 0, 370) for r in results[37:])
            assert await rc.usage(["k", "n"]) == [(0, 370), (0, 37)]  # the refused held nothing on n
            reserve_calls = calls[0]
            assert reserve_calls <= 5, reserve_calls  # 200 reserves, far fewer script calls

            await asyncio.gather(*(rc.settle(f"r{i}", [commit("k", 3), commit("n", 1)]) for i in admitted))
            assert calls[0] - reserve_calls <= 5
            # settle returned once its batch was done: its use is visible at once
            assert await rc.usage(["k", "n"]) == [(37 * 3, 0), (37, 0)]
            again = await asyncio.gather(*(rc.reserve(f"s{i}", [ask("k", 10, 370)]) for i in range(30)))
            assert sum(r is None for r in again) == (370 - 111) // 10
        finally:
            await rc.close()

    asyncio.run(main())


def test_batches_are_capped(prefix):
    async def main():
        rc = RedisCounters(URL, prefix=prefix)
        calls = count_script_calls(rc)
        try:
            results = await asyncio.gather(
                *(rc.reserve(f"r{i}", [ask("k", 1, 1000)]) for i in range(2 * BATCH_CAP + 88))
            )
            assert all(r is None for r in results)
            assert calls[0] == 3  # all queued in one loop turn: two full batches and the rest
            assert await rc.usage(["k"]) == [(0, 2 * BATCH_CAP + 88)]
        finally:
            await rc.close()

    asyncio.run(main())


def test_a_lone_request_is_sent_at_once(prefix):
    async def main():
        rc = RedisCounters(URL, prefix=prefix)
        calls = count_script_calls(rc)
        try:
            for i in range(5):
                t0 = time.monotonic()
                assert await rc.reserve(f"r{i}", [ask("k", 1)]) is None
                await rc.settle(f"r{i}", [commit("k", 1)])
                assert time.monotonic() - t0 < 0.5
            assert calls[0] == 10  # one script call each: nobody waited for company
            assert await rc.usage(["k"]) == [(5, 0)]
        finally:
            await rc.close()

    asyncio.run(main())


def test_batched_results_go_to_their_own_callers(prefix):
    # Each request with the result it would get if sent alone, in this order.
    requests = [
        ("r0", [ask("a", 20, 50)], None),
        ("r1", [ask("a", 20, 50), ask("b", 40, 30)], Refusal(1, 0, 0)),  # b never fits: a is not held
        ("r2", [ask("b", 30, 30)], None),
        ("r3", [ask("a", 31, 50)], Refusal(0, 0, 20)),
        ("r4", [ask("a", 30, 50)], None),  # a is full now
        ("r5", [ask("b", 1, 30), ask("a", 1, 50)], Refusal(0, 0, 30)),
        ("r6", [ask("c", 5, 10)], None),
        ("r7", [ask("a", 0, 50), ask("c", 5, 10), ask("b", 0, 30)], None),  # exactly at each limit
        ("r8", [ask("c", 1, 10)], Refusal(0, 0, 10)),
        ("r9", [ask("a", 1, 51), ask("d", 7, 7)], None),  # a larger limit on a has room
        ('r10 "ü"', [ask('k "ü" \\', 3, 3)], None),  # ids and keys travel as JSON: any text
        ("r11", [ask('k "ü" \\', 1, 3)], Refusal(0, 0, 3)),
    ]

    async def main():
        rc = RedisCounters(URL, prefix=prefix)
        calls = count_script_calls(rc)
        try:
            results = await asyncio.gather(*(rc.reserve(rid, asks) for rid, asks, _ in requests))
            assert calls[0] == 1
            assert results == [want for _, _, want in requests]
            assert await rc.usage(["a", "b", "c", "d", 'k "ü" \\']) == [(0, 51), (0, 30), (0, 10), (0, 7), (0, 3)]
            # settle each admitted request with its own use; the refused ones held nothing
            admitted = [(rid, asks) for rid, asks, want in requests if want is None]
            await asyncio.gather(
                *(rc.settle(rid, [commit(a.key, a.amount // 2) for a in asks]) for rid, asks in admitted)
            )
            assert await rc.usage(["a", "b", "c", "d", 'k "ü" \\']) == [(25, 0), (15, 0), (4, 0), (3, 0), (1, 0)]
        finally:
            await rc.close()

    asyncio.run(main())


def delay_answers(rc: RedisCounters, seconds: float, on_answer=None) -> None:
    """Script calls run in Redis at once; their answers reach the caller ``seconds`` later."""
    evalsha = rc._redis.evalsha

    async def slow(*args, **kwargs):
        result = await evalsha(*args, **kwargs)
        await asyncio.sleep(seconds)
        if on_answer is not None:
            on_answer()
        return result

    rc._redis.evalsha = slow  # type: ignore[method-assign]


def test_reserve_cancelled_in_flight_is_released(prefix):
    async def main():
        rc, direct = RedisCounters(URL, prefix=prefix), RedisCounters(URL, prefix=prefix)
        delay_answers(rc, 0.2)
        try:
            tasks = [asyncio.create_task(rc.reserve(f"r{i}", [ask("k", 10), ask("m", 1)])) for i in range(5)]
            await asyncio.sleep(0.1)  # the batch ran in Redis; its answer is on the way
            assert await direct.usage(["k", "m"]) == [(0, 50), (0, 5)]
            for t in tasks[:3]:
                t.cancel()
            results = await asyncio.gather(*tasks, return_exceptions=True)
            assert [type(r).__name__ for r in results] == ["CancelledError"] * 3 + ["NoneType"] * 2
            await asyncio.sleep(0.5)  # the release goes out once the answer came
            assert await direct.usage(["k", "m"]) == [(0, 20), (0, 2)]
            await asyncio.gather(*(rc.settle(f"r{i}", [commit("k", 4)]) for i in (3, 4)))
            assert await direct.usage(["k", "m"]) == [(8, 0), (0, 0)]
        finally:
            await rc.close()
            await direct.close()

    asyncio.run(main())
    assert_no_request_keys(prefix)


def test_reserve_cancelled_before_it_is_sent_is_not_sent(prefix):
    async def main():
        rc = RedisCounters(URL, prefix=prefix)
        calls = count_script_calls(rc)
        delay_answers(rc, 0.2)
        try:
            first = asyncio.create_task(rc.reserve("first", [ask("k", 10)]))
            await asyncio.sleep(0.05)  # first's batch is in flight: the next ones queue behind it
            queued = [asyncio.create_task(rc.reserve(f"q{i}", [ask("k", 10)])) for i in range(3)]
            await asyncio.sleep(0)
            for t in queued:
                t.cancel()
            assert await first is None
            await asyncio.gather(*queued, return_exceptions=True)
            await rc.settle("first", [commit("k", 1)])
            assert await rc.usage(["k"]) == [(1, 0)]
            assert calls[0] == 3  # first's reserve, its settle, usage: the cancelled ones were dropped
        finally:
            await rc.close()

    asyncio.run(main())
    assert_no_request_keys(prefix)


def test_reserve_cancelled_as_its_answer_arrives_is_released(prefix):
    """The answer (reserved) is in, but the caller is cancelled before it resumes to see it."""

    async def main():
        rc = RedisCounters(URL, prefix=prefix)
        task: asyncio.Task | None = None

        def cancel_soon() -> None:  # runs before the caller's wakeup: it sees the cancel, not the answer
            assert task is not None
            asyncio.get_running_loop().call_soon(task.cancel)

        delay_answers(rc, 0, cancel_soon)
        try:
            task = asyncio.create_task(rc.reserve("r", [ask("k", 10), ask("m", 10)]))
            with pytest.raises(asyncio.CancelledError):
                await task
            await asyncio.sleep(0.2)
            assert await rc.usage(["k", "m"]) == [(0, 0), (0, 0)]
        finally:
            await rc.close()

    asyncio.run(main())
    assert_no_request_keys(prefix)


def assert_no_request_keys(prefix: str) -> None:
    r = redis.Redis.from_url(URL)
    try:
        assert list(r.scan_iter(match=f"{prefix}q:*")) == []
    finally:
        r.close()


def test_a_failed_batch_fails_every_request_in_it(prefix):
    async def main():
        closed = RedisCounters(f"redis://127.0.0.1:{free_port()}/0", prefix=prefix, on_error="closed")
        opened = RedisCounters(f"redis://127.0.0.1:{free_port()}/0", prefix=prefix, on_error="open")
        try:
            t0 = time.monotonic()
            results = await asyncio.gather(
                *(closed.reserve(f"r{i}", [ask("k", 1)]) for i in range(50)), return_exceptions=True
            )
            assert all(isinstance(r, CountersUnavailable) for r in results)
            assert time.monotonic() - t0 < 2.0
            await asyncio.gather(*(closed.settle(f"r{i}", [commit("k", 1)]) for i in range(50)))  # never raises

            # open: the whole batch counts locally (from the ledger's figure), and the limit still holds exactly
            await opened.seed("k", 0, EXPIRE)
            results = await asyncio.gather(*(opened.reserve(f"r{i}", [ask("k", 10, 70)]) for i in range(50)))
            assert sum(r is None for r in results) == 7
            await asyncio.gather(*(opened.settle(f"r{i}", [commit("k", 2)]) for i in range(7)))
            assert await opened.usage(["k"]) == [(14, 0)]
        finally:
            await closed.close()
            await opened.close()

    asyncio.run(main())
