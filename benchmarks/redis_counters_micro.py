#!/usr/bin/env python3
"""What does one admission cost the counters? reserve + settle per request, as the gateway calls
them (four asks: three token quotas and a request rate), with limits far above the run so every
request is admitted. For MemoryCounters and RedisCounters, at concurrency 1 and 32 (asyncio
tasks on one event loop, uvloop when installed, as the gateway runs), it prints requests/s and
the CPU this process spent per request (time.process_time: the event loop's cost; Redis's own
CPU is another process and not counted).

    python benchmarks/redis_counters_micro.py
    python benchmarks/redis_counters_micro.py --redis-url redis://127.0.0.1:6379/0 --seconds 3
    python benchmarks/redis_counters_micro.py --module /tmp/old/redis_counters.py   # compare a copy
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import itertools
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from tokenabacus.calendar import now_ms
from tokenabacus.governance.counters import Ask, Commit, Counters, MemoryCounters  # noqa: E402
from tokenabacus.governance.errors import CountersUnavailable  # noqa: E402

BIG = 10**15
ASKS = 4


@dataclass
class Result:
    backend: str
    concurrency: int
    requests: int
    wall_s: float
    cpu_s: float
    sys_s: float

    @property
    def rps(self) -> float:
        return self.requests / self.wall_s

    @property
    def cpu_us(self) -> float:
        return self.cpu_s / self.requests * 1e6

    @property
    def sys_us(self) -> float:
        return self.sys_s / self.requests * 1e6


def redis_class(module_path: str | None) -> Any:
    """RedisCounters from the project, or from a copy of the module (to measure a before/after)."""
    if module_path is None:
        from tokenabacus.governance.redis_counters import RedisCounters

        return RedisCounters
    spec = importlib.util.spec_from_file_location("redis_counters_under_test", module_path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.RedisCounters


async def run(counters: Counters, concurrency: int, seconds: float) -> tuple[int, float, float, float]:
    """Workers loop reserve → settle until the time is up; (requests, wall s, CPU s, of it in the kernel)."""
    expire = now_ms() + 3_600_000
    keys = [f"bench:{os.urandom(4).hex()}:{i}" for i in range(ASKS)]
    asks = [Ask(k, 1000, BIG, expire) for k in keys]
    commits = [Commit(k, 900, expire) for k in keys]
    ids = itertools.count()
    done = 0
    stop_at = time.monotonic() + seconds

    async def worker() -> None:
        nonlocal done
        while time.monotonic() < stop_at:
            rid = f"req-{next(ids)}"
            refusal = await counters.reserve(rid, asks)
            assert refusal is None, refusal
            await counters.settle(rid, commits)
            done += 1

    await worker_warmup(counters, asks, commits)
    wall0, cpu0, sys0 = time.perf_counter(), time.process_time(), os.times().system
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done, time.perf_counter() - wall0, time.process_time() - cpu0, os.times().system - sys0


async def worker_warmup(counters: Counters, asks: list[Ask], commits: list[Commit]) -> None:
    """Connections opened and scripts loaded before the clock starts."""
    for i in range(32):
        await asyncio.gather(*(counters.reserve(f"warm-{i}-{j}", asks) for j in range(8)))
        await asyncio.gather(*(counters.settle(f"warm-{i}-{j}", commits) for j in range(8)))


def measure(name: str, make: Callable[[], Counters], concurrency: int, seconds: float) -> Result:
    async def main() -> tuple[int, float, float, float]:
        counters = make()
        try:
            return await run(counters, concurrency, seconds)
        finally:
            await counters.close()

    try:
        import uvloop

        return Result(name, concurrency, *uvloop.run(main()))
    except ImportError:
        return Result(name, concurrency, *asyncio.run(main()))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    ap.add_argument("--seconds", type=float, default=3.0, help="per measurement")
    ap.add_argument("--module", help="path of a redis_counters.py to measure instead of the project's")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 32])
    args = ap.parse_args()

    rc = redis_class(args.module)
    prefix = f"bench-micro-{os.urandom(4).hex()}:"
    backends: list[tuple[str, Callable[[], Counters]]] = [
        ("memory", MemoryCounters),
        ("redis", lambda: rc(args.redis_url, prefix=prefix)),
    ]
    try:
        import hiredis  # noqa: F401

        parser = "hiredis"
    except ImportError:
        parser = "python"
    print(f"redis-py parser: {parser}; {ASKS} asks per request; {args.seconds:g} s per run")
    print(f"{'backend':<8} {'conc':>5} {'requests':>9} {'req/s':>9} {'CPU µs/req':>11} {'of it kernel':>13}")
    try:
        for name, make in backends:
            for c in args.concurrency:
                try:
                    print(row(measure(name, make, c, args.seconds)), flush=True)
                except CountersUnavailable as e:  # a request timed out: Redis starved on a busy machine?
                    print(f"{name:<8} {c:>5}  no result: {e.message}", flush=True)
    finally:
        cleanup(args.redis_url, prefix)
    return 0


def row(r: Result) -> str:
    return f"{r.backend:<8} {r.concurrency:>5} {r.requests:>9} {r.rps:>9.0f} {r.cpu_us:>11.1f} {r.sys_us:>13.1f}"


def cleanup(url: str, prefix: str) -> None:
    import redis

    r = redis.Redis.from_url(url)
    try:
        keys = list(r.scan_iter(match=f"{prefix}*", count=1000))
        for i in range(0, len(keys), 1000):
            r.delete(*keys[i : i + 1000])
    finally:
        r.close()


if __name__ == "__main__":
    sys.exit(main())
