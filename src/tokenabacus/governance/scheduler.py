"""Per-model admission: at most ``max_concurrency`` requests run at once, and when the model is
saturated the waiters are served in weighted fair order across groups (projects).

Fairness is start-time fair queueing. Each group has a virtual time; a freed slot goes to the
oldest waiter of the backlogged group with the smallest virtual time, and each grant advances
that group's virtual time by ``1 / weight``. A group that becomes backlogged starts at no less
than the system's virtual time, so idling banks no credit and a flood from one group delays the
others by at most one grant per round.

Slots are handed from ``release`` straight to the chosen waiter through its future, without
passing through a free count, so a waiter that is cancelled after its grant hands the slot on
instead of leaking it, and a slot freed while a waiter is being cancelled skips that waiter.
Everything runs on one event loop thread; nothing here is thread-safe.
"""

from __future__ import annotations

import asyncio
from bisect import bisect_left
from collections import deque
from typing import Any

from tokenabacus.governance.errors import QueueTimeout

WAIT_BUCKETS = (0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Slot:
    """One held unit of concurrency. ``release`` is idempotent, so error paths may call it freely."""

    __slots__ = ("_scheduler", "group", "waited_s", "_released")

    def __init__(self, scheduler: FairScheduler, group: str, waited_s: float) -> None:
        self._scheduler = scheduler
        self.group = group
        self.waited_s = waited_s
        self._released = False

    def release(self) -> None:
        if self._released:
            return
        self._released = True
        self._scheduler._release(self.group)

    @property
    def released(self) -> bool:
        return self._released


class _Waiter:
    __slots__ = ("group", "future", "enqueued_at")

    def __init__(self, group: str, future: asyncio.Future[Slot], enqueued_at: float) -> None:
        self.group = group
        self.future = future
        self.enqueued_at = enqueued_at


class FairScheduler:
    def __init__(
        self,
        max_concurrency: int,
        weights: dict[str, float] | None = None,
        default_weight: float = 1.0,
        queue_timeout_s: float = 30.0,
        name: str = "model",
    ) -> None:
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be at least 1, not {max_concurrency}")
        weights = dict(weights or {})
        for group, weight in [*weights.items(), ("default_weight", default_weight)]:
            if not weight > 0:
                raise ValueError(f"weight for {group!r} must be positive, not {weight}")
        self._max = max_concurrency
        self._weights = weights
        self._default_weight = default_weight
        self._timeout = queue_timeout_s
        self._name = name
        self._running = 0
        self._running_by_group: dict[str, int] = {}
        # Only backlogged groups have a queue; an empty deque is deleted at once, so ``not self._queues``
        # is the hot path's whole test for "nobody waits".
        self._queues: dict[str, deque[_Waiter]] = {}
        self._vtime: dict[str, float] = {}
        self._system_vtime = 0.0  # start tag of the latest grant from the queues
        # Waits of granted slots, for /metrics: a cumulative histogram (WAIT_BUCKETS), count, sum.
        self.granted = 0
        self.waited_s = 0.0
        self.wait_counts = [0] * len(WAIT_BUCKETS)

    async def acquire(self, group: str) -> Slot:
        """A slot for ``group``: at once if one is free and nobody waits, else in fair order.

        Raises ``QueueTimeout`` after ``queue_timeout_s`` of waiting."""
        if self._running < self._max and not self._queues:
            # Hot path: no future, no timer, no suspension.
            self._take(group)
            self._waited(0.0)
            return Slot(self, group, 0.0)

        loop = asyncio.get_running_loop()
        waiter = _Waiter(group, loop.create_future(), loop.time())
        self._enqueue(waiter)
        # A timer rather than asyncio.timeout: expiry then never cancels the task, so the only
        # cancellation seen below is the caller's own.
        timer = loop.call_later(self._timeout, self._expire, waiter)
        try:
            return await waiter.future
        except asyncio.CancelledError:
            fut = waiter.future
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                # Granted in the same loop turn as the cancel: the slot is ours, so pass it on.
                fut.result().release()
            else:
                self._forget(waiter)
            raise
        finally:
            timer.cancel()

    def _waited(self, s: float) -> None:
        self.granted += 1
        self.waited_s += s
        if s <= WAIT_BUCKETS[-1]:  # longer ones are only in the count (the +Inf bucket)
            self.wait_counts[bisect_left(WAIT_BUCKETS, s)] += 1

    def wait_buckets(self) -> list[tuple[float, int]]:
        """Cumulative (upper bound, count) pairs, as Prometheus histograms are."""
        out, seen = [], 0
        for bound, n in zip(WAIT_BUCKETS, self.wait_counts, strict=True):
            seen += n
            out.append((bound, seen))
        return out

    def stats(self) -> dict[str, Any]:
        by_group = {g: {"running": n, "waiting": 0} for g, n in self._running_by_group.items()}
        waiting = 0
        for group, queue in self._queues.items():
            live = sum(1 for w in queue if not w.future.done())
            if live:
                by_group.setdefault(group, {"running": 0, "waiting": 0})["waiting"] = live
                waiting += live
        return {"running": self._running, "waiting": waiting, "max_concurrency": self._max, "by_group": by_group}

    # -- internals -------------------------------------------------------------------------------

    def _weight(self, group: str) -> float:
        return self._weights.get(group, self._default_weight)

    def _take(self, group: str) -> None:
        self._running += 1
        self._running_by_group[group] = self._running_by_group.get(group, 0) + 1

    def _enqueue(self, waiter: _Waiter) -> None:
        queue = self._queues.get(waiter.group)
        if queue is None:
            # Becoming backlogged: catch up to the system so idle time is not banked as credit.
            floor = min((self._vtime[g] for g in self._queues), default=self._system_vtime)
            self._vtime[waiter.group] = max(self._vtime.get(waiter.group, 0.0), floor)
            queue = self._queues[waiter.group] = deque()
        queue.append(waiter)

    def _dequeue(self, waiter: _Waiter) -> None:
        queue = self._queues.get(waiter.group)
        if queue is None:
            return
        try:
            queue.remove(waiter)
        except ValueError:
            return  # already popped by a release that skipped it
        if not queue:
            self._drop_queue(waiter.group)

    def _drop_queue(self, group: str) -> None:
        del self._queues[group]
        if not self._queues:
            # Saturation is over: forget groups that hold no debt, so the table stays bounded by
            # the groups active in one busy spell rather than every group ever seen.
            self._vtime = {g: v for g, v in self._vtime.items() if v > self._system_vtime}

    def _forget(self, waiter: _Waiter) -> None:
        if not waiter.future.done():
            waiter.future.cancel()
        self._dequeue(waiter)

    def _expire(self, waiter: _Waiter) -> None:
        if waiter.future.done():
            return
        self._dequeue(waiter)
        slots = "the only slot" if self._max == 1 else f"one of {self._max} slots"
        waiter.future.set_exception(
            QueueTimeout(f"{self._name} busy: waited {self._timeout:g} s for {slots}; try again later")
        )

    def _release(self, group: str) -> None:
        left = self._running_by_group[group] - 1
        if left:
            self._running_by_group[group] = left
        else:
            del self._running_by_group[group]

        while self._queues:
            chosen = min(self._queues, key=self._vtime.__getitem__)  # ties: the earlier backlogged group
            queue = self._queues[chosen]
            waiter = queue.popleft()
            if waiter.future.done():
                # Cancelled or expired, its handler not yet run: it is owed nothing and is not charged.
                if not queue:
                    self._drop_queue(chosen)
                continue
            start = self._vtime[chosen]
            self._system_vtime = start
            self._vtime[chosen] = start + 1.0 / self._weight(chosen)
            if not queue:
                self._drop_queue(chosen)  # after charging, so the prune there keeps this group's debt
            # The slot moves to the waiter without ever being free, so the running total stays put.
            self._running_by_group[chosen] = self._running_by_group.get(chosen, 0) + 1
            loop = waiter.future.get_loop()
            waited = loop.time() - waiter.enqueued_at
            self._waited(waited)
            waiter.future.set_result(Slot(self, chosen, waited))
            return
        self._running -= 1
