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
from tokenabacus.governance.counters import Ask, Commit, Refusal, now_ms
from tokenabacus.governance.errors import CountersUnavailable
from tokenabacus.governance.redis_counters import RedisCounters

URL = "redis://127.0.0.1:6379/0"
EXPIRE = now_ms() + 3_600_000


@pytest.fixture
def prefix():
    service_available("127.0.0.1", 6379, "Redis")
    p = f"test:{uuid.uuid4().hex}:"
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
    async def main():
        rc = RedisCounters(URL, prefix=prefix, reservation_ttl_s=0.3)
        try:
            assert await rc.reserve("dead", [ask("k", 150, 200)]) is None
            assert await rc.reserve("late", [ask("k", 30, 200)]) is None
            assert await rc.reserve("r", [ask("k", 100, 200)]) == Refusal(0, 0, 180)
            await asyncio.sleep(0.5)
            assert await rc.usage(["k"]) == [(0, 0)]  # both lapsed
            assert await rc.reserve("r", [ask("k", 100, 200)]) is None  # the room "dead" held
            await rc.settle("late", [commit("k", 20)])  # its reservation lapsed: the use still counts
            assert await rc.usage(["k"]) == [(20, 100)]
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
            assert await rc.reserve("local", [ask("k", 20)]) is None  # Redis is gone: counted locally
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
