"""FairScheduler: concurrency limit, weighted fair order across groups, timeouts and cancellation.

Ordering tests run with one slot and a test-driven release: waiters keep their slot, and each
``step`` frees the oldest held slot, so the recorded order is exactly the scheduler's grant order.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Coroutine
from typing import Any

import pytest

from tokenabacus.governance.errors import QueueTimeout
from tokenabacus.governance.scheduler import FairScheduler, Slot


def acquire_now(sched: FairScheduler, group: str) -> Slot:
    """Run acquire without ever yielding to the loop; fails if it would have to wait."""
    coro = sched.acquire(group)
    try:
        coro.send(None)
    except StopIteration as done:
        slot: Slot = done.value
        return slot
    coro.close()
    raise AssertionError("acquire suspended instead of returning at once")


def queued(sched: FairScheduler) -> int:
    """Entries really in the queues, including any the stats would not count as waiting."""
    return sum(len(q) for q in sched._queues.values())


async def settle(turns: int = 3) -> None:
    for _ in range(turns):
        await asyncio.sleep(0)


class Recorder:
    """Waiters that record the order they are granted in and keep their slot until ``step``."""

    def __init__(self, sched: FairScheduler) -> None:
        self.sched = sched
        self.order: list[str] = []
        self.held: list[Slot] = []
        self.tasks: list[asyncio.Task[None]] = []

    async def _wait(self, group: str, label: str) -> None:
        slot = await self.sched.acquire(group)
        self.order.append(label)
        self.held.append(slot)

    async def enqueue(self, group: str, n: int, label: str | None = None) -> None:
        for i in range(n):
            name = group if label is None else f"{label}{i}"
            self.tasks.append(asyncio.create_task(self._wait(group, name)))
        await settle()  # every new task runs up to its await, so queue order is creation order

    async def step(self, n: int = 1) -> None:
        for _ in range(n):
            self.held.pop(0).release()
            await settle()


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(coro)


def test_fast_path_under_the_limit() -> None:
    async def main() -> None:
        sched = FairScheduler(max_concurrency=3)
        slots = [acquire_now(sched, g) for g in ("a", "a", "b")]
        assert all(s.waited_s == 0.0 for s in slots)
        assert sched.stats() == {
            "running": 3,
            "waiting": 0,
            "max_concurrency": 3,
            "by_group": {"a": {"running": 2, "waiting": 0}, "b": {"running": 1, "waiting": 0}},
        }
        for s in slots:
            s.release()
            s.release()  # idempotent
        assert sched.stats()["running"] == 0
        assert sched.stats()["by_group"] == {}
        acquire_now(sched, "c").release()

    run(main())


def test_never_more_than_max_concurrency() -> None:
    async def main() -> None:
        sched = FairScheduler(max_concurrency=3)
        rng = random.Random(1)
        held = 0
        peak = 0

        async def work(group: str) -> None:
            nonlocal held, peak
            slot = await sched.acquire(group)
            try:
                held += 1
                peak = max(peak, held)
                assert sched.stats()["running"] <= 3
                await asyncio.sleep(rng.uniform(0, 0.003))
            finally:
                held -= 1
                slot.release()

        await asyncio.gather(*(work(rng.choice("abc")) for _ in range(60)))
        assert peak == 3
        stats = sched.stats()
        assert (stats["running"], stats["waiting"], stats["by_group"]) == (0, 0, {})

    run(main())


def test_waiter_is_granted_and_measures_its_wait() -> None:
    async def main() -> None:
        sched = FairScheduler(max_concurrency=1)
        holder = acquire_now(sched, "a")
        task = asyncio.create_task(sched.acquire("b"))
        await asyncio.sleep(0.02)
        assert sched.stats()["waiting"] == 1
        assert sched.stats()["by_group"]["b"] == {"running": 0, "waiting": 1}
        holder.release()
        slot = await task
        assert slot.waited_s >= 0.015
        assert sched.stats()["by_group"] == {"b": {"running": 1, "waiting": 0}}
        slot.release()
        assert sched.stats()["running"] == 0

    run(main())


def test_fifo_within_a_group() -> None:
    async def main() -> None:
        sched = FairScheduler(max_concurrency=1)
        rec = Recorder(sched)
        rec.held.append(acquire_now(sched, "a"))
        await rec.enqueue("a", 10, label="a")
        await rec.step(10)
        assert rec.order == [f"a{i}" for i in range(10)]

    run(main())


def test_flooding_group_does_not_starve_another() -> None:
    async def main() -> None:
        sched = FairScheduler(max_concurrency=1)
        rec = Recorder(sched)
        rec.held.append(acquire_now(sched, "a"))
        await rec.enqueue("a", 40)
        await rec.enqueue("b", 4)
        await rec.step(44)
        first8 = rec.order[:8]
        assert first8.count("b") == 4, rec.order
        assert rec.order[:8] == ["a", "b"] * 4  # equal weights alternate

    run(main())


def test_flood_while_already_draining() -> None:
    async def main() -> None:
        sched = FairScheduler(max_concurrency=2)
        rec = Recorder(sched)
        rec.held += [acquire_now(sched, "a"), acquire_now(sched, "a")]
        await rec.enqueue("a", 40)
        await rec.step(10)  # a alone: its virtual time runs ahead
        await rec.enqueue("b", 4)
        await rec.step(8)
        assert rec.order[10:18].count("b") == 4, rec.order

    run(main())


def test_weights_split_slots_in_proportion() -> None:
    async def main() -> None:
        sched = FairScheduler(max_concurrency=1, weights={"heavy": 3.0}, default_weight=1.0)
        rec = Recorder(sched)
        rec.held.append(acquire_now(sched, "x"))
        await rec.enqueue("light", 200)
        await rec.enqueue("heavy", 200)
        await rec.step(200)  # both stay backlogged throughout
        share = Counter(rec.order)["heavy"] / 200
        assert abs(share - 0.75) <= 0.03, share
        for i in range(0, 200, 20):  # and it holds in every stretch, not only on average
            assert 13 <= rec.order[i : i + 20].count("heavy") <= 17, rec.order[i : i + 20]
        for t in rec.tasks:
            t.cancel()
        await asyncio.gather(*rec.tasks, return_exceptions=True)
        for s in rec.held:
            s.release()
        assert sched.stats()["running"] == 0

    run(main())


def test_idle_group_does_not_bank_credit() -> None:
    async def main() -> None:
        sched = FairScheduler(max_concurrency=1)
        rec = Recorder(sched)
        rec.held.append(acquire_now(sched, "a"))
        await rec.enqueue("a", 100)
        await rec.enqueue("b", 2)
        await rec.step(4)
        assert rec.order == ["a", "b", "a", "b"]
        await rec.step(40)  # b idle, a served alone
        await rec.enqueue("b", 10)
        await rec.step(10)
        back = rec.order[44:54]
        assert 4 <= back.count("b") <= 6, back  # shares again, no burst of ten
        for t in rec.tasks:
            t.cancel()
        await asyncio.gather(*rec.tasks, return_exceptions=True)

    run(main())


def test_queue_timeout() -> None:
    async def main() -> None:
        sched = FairScheduler(max_concurrency=1, queue_timeout_s=0.05, name="llama-8b")
        holder = acquire_now(sched, "a")
        patient = asyncio.create_task(sched.acquire("b"))
        await asyncio.sleep(0.01)
        with pytest.raises(QueueTimeout) as err:
            await sched.acquire("a")
        assert err.value.code == "queue_timeout"
        assert "llama-8b busy" in err.value.message
        assert "0.05 s" in err.value.message and "the only slot" in err.value.message
        # The earlier waiter times out too; nothing stays queued and the holder still counts.
        with pytest.raises(QueueTimeout):
            await patient
        stats = sched.stats()
        assert (stats["running"], stats["waiting"], queued(sched)) == (1, 0, 0)
        holder.release()
        assert sched.stats()["running"] == 0
        acquire_now(sched, "a").release()

    run(main())


def test_queue_timeout_message_names_slot_count() -> None:
    async def main() -> None:
        sched = FairScheduler(max_concurrency=4, queue_timeout_s=0.01)
        held = [acquire_now(sched, "a") for _ in range(4)]
        with pytest.raises(QueueTimeout, match=r"model busy: waited 0\.01 s for one of 4 slots; try again later"):
            await sched.acquire("a")
        for s in held:
            s.release()
        assert sched.stats()["running"] == 0

    run(main())


def test_timed_out_waiter_is_skipped_by_later_release() -> None:
    async def main() -> None:
        sched = FairScheduler(max_concurrency=1, queue_timeout_s=0.03)
        holder = acquire_now(sched, "a")
        early = asyncio.create_task(sched.acquire("a"))
        await asyncio.sleep(0.02)
        late = asyncio.create_task(sched.acquire("a"))
        with pytest.raises(QueueTimeout):
            await early
        assert queued(sched) == 1
        holder.release()
        slot = await late
        assert sched.stats()["running"] == 1
        slot.release()
        assert sched.stats() == {"running": 0, "waiting": 0, "max_concurrency": 1, "by_group": {}}

    run(main())


def test_cancelled_waiter_leaves_queue() -> None:
    async def main() -> None:
        sched = FairScheduler(max_concurrency=1, queue_timeout_s=2.0)
        holder = acquire_now(sched, "a")
        tasks = [asyncio.create_task(sched.acquire(g)) for g in ("a", "b", "a", "b")]
        await settle()
        assert sched.stats()["waiting"] == 4
        tasks[0].cancel()
        tasks[1].cancel()
        await asyncio.gather(tasks[0], tasks[1], return_exceptions=True)
        assert sched.stats()["waiting"] == queued(sched) == 2
        holder.release()
        slot = await tasks[2]  # the cancelled ones are skipped
        assert sched.stats()["waiting"] == 1
        slot.release()
        (await tasks[3]).release()
        assert sched.stats() == {"running": 0, "waiting": 0, "max_concurrency": 1, "by_group": {}}
        acquire_now(sched, "a").release()

    run(main())


def test_cancel_right_after_grant_passes_the_slot_on() -> None:
    async def main() -> None:
        sched = FairScheduler(max_concurrency=1, queue_timeout_s=2.0)
        holder = acquire_now(sched, "a")
        first = asyncio.create_task(sched.acquire("a"))
        second = asyncio.create_task(sched.acquire("b"))
        await settle()
        holder.release()  # grants to first ...
        first.cancel()  # ... which is cancelled before it can resume
        with pytest.raises(asyncio.CancelledError):
            await first
        slot = await second
        assert sched.stats()["by_group"] == {"b": {"running": 1, "waiting": 0}}
        slot.release()
        assert sched.stats()["running"] == 0

    run(main())


def test_cancel_just_before_release_skips_the_waiter() -> None:
    async def main() -> None:
        sched = FairScheduler(max_concurrency=1, queue_timeout_s=2.0)
        holder = acquire_now(sched, "a")
        first = asyncio.create_task(sched.acquire("a"))
        second = asyncio.create_task(sched.acquire("b"))
        await settle()
        first.cancel()  # its handler has not run yet when the slot frees
        holder.release()
        with pytest.raises(asyncio.CancelledError):
            await first
        slot = await second
        slot.release()
        assert sched.stats() == {"running": 0, "waiting": 0, "max_concurrency": 1, "by_group": {}}

    run(main())


def test_cancel_granted_last_waiter_frees_the_slot() -> None:
    async def main() -> None:
        sched = FairScheduler(max_concurrency=1, queue_timeout_s=2.0)
        holder = acquire_now(sched, "a")
        only = asyncio.create_task(sched.acquire("a"))
        await settle()
        holder.release()
        only.cancel()
        with pytest.raises(asyncio.CancelledError):
            await only
        assert sched.stats()["running"] == 0
        acquire_now(sched, "a").release()

    run(main())


def test_randomised_cancellation_never_leaks() -> None:
    async def one_round(rng: random.Random) -> None:
        limit = rng.randint(1, 3)
        sched = FairScheduler(
            max_concurrency=limit,
            weights={"a": 2.0},
            queue_timeout_s=rng.choice([10.0, 10.0, 0.002]),
        )
        held = 0
        tasks: list[asyncio.Task[None]] = []

        async def work(group: str) -> None:
            nonlocal held
            slot = await sched.acquire(group)
            held += 1
            assert held <= limit
            try:
                if rng.random() < 0.5:
                    await asyncio.sleep(rng.choice([0, 0, 0.0005]))
            finally:
                held -= 1
                slot.release()
                if rng.random() < 0.3:
                    rng.choice(tasks).cancel()  # same turn as the grant that release just made

        for _ in range(rng.randint(2, 15)):
            tasks.append(asyncio.create_task(work(rng.choice("abc"))))
        for _ in range(rng.randint(0, 5)):
            await asyncio.sleep(rng.choice([0, 0, 0.0003]))
            rng.choice(tasks).cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for r in results:
            assert r is None or isinstance(r, asyncio.CancelledError | QueueTimeout), r
        stats = sched.stats()
        assert (stats["running"], stats["waiting"], stats["by_group"]) == (0, 0, {}), stats
        assert not sched._queues
        slots = [acquire_now(sched, "z") for _ in range(limit)]
        for s in slots:
            s.release()

    async def main() -> None:
        rng = random.Random(20240611)
        for _ in range(400):
            await one_round(rng)

    run(main())


def test_rejects_bad_config() -> None:
    with pytest.raises(ValueError):
        FairScheduler(max_concurrency=0)
    with pytest.raises(ValueError):
        FairScheduler(max_concurrency=1, weights={"a": 0.0})
    with pytest.raises(ValueError):
        FairScheduler(max_concurrency=1, default_weight=-1.0)
