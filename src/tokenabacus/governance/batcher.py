"""Coalescing concurrent calls into batches, one in flight at a time (RedisCounters' reserves and
settles): redis-py's per-command cost is paid once per batch instead of once per request."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

BATCH_CAP = 256  # requests per script call: bounds the time one script holds Redis


class Down(Exception):
    """Redis did not answer (or is known to be down and not due for a retry)."""


T = TypeVar("T")
R = TypeVar("R")


class Batcher(Generic[T, R]):
    """Coalesces concurrent calls into batches with one in flight at a time: what queues while a
    batch is in flight goes out as the next. An idle batcher starts its sender task at once; the
    task's first step runs at the end of the current loop turn, so a lone call waits for no timer
    and calls made in the same turn share its batch.

    ``send`` gets the items in arrival order and returns one result per item, or raises (the
    exception goes to every caller in the batch). A caller that stops waiting is handled by
    ``drop_unsent`` (its item is not sent if still queued) and ``orphan`` (called with the item
    and result when its result arrives after all)."""

    def __init__(
        self,
        send: Callable[[list[T]], Awaitable[list[R]]],
        drop_unsent: bool,
        orphan: Callable[[T, R], None] | None = None,
        cap: int = BATCH_CAP,
    ) -> None:
        self._send = send
        self._drop_unsent = drop_unsent
        self._orphan = orphan
        self._cap = cap
        self._queue: deque[tuple[T, asyncio.Future[R]]] = deque()
        self._sender: asyncio.Task[None] | None = None

    def submit(self, item: T) -> asyncio.Future[R]:
        fut: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append((item, fut))
        if self._sender is None:
            self._sender = asyncio.create_task(self._run())
        return fut

    async def drain(self) -> None:
        """Wait until everything queued so far has been sent and answered."""
        while self._sender is not None:
            await asyncio.shield(self._sender)

    async def _run(self) -> None:
        try:
            while self._queue:
                batch = self._take()
                if batch:
                    await self._flush(batch)
        finally:
            # Normally empty; if this task was cancelled (its loop is closing), nothing else would answer these.
            self._sender = None
            while self._queue:
                _, fut = self._queue.popleft()
                if not fut.done():
                    fut.set_exception(Down())

    def _take(self) -> list[tuple[T, asyncio.Future[R]]]:
        batch: list[tuple[T, asyncio.Future[R]]] = []
        while self._queue and len(batch) < self._cap:
            item, fut = self._queue.popleft()
            if not (self._drop_unsent and fut.done()):  # done before sending: its caller was cancelled
                batch.append((item, fut))
        return batch

    async def _flush(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        try:
            results = await self._send([item for item, _ in batch])
        except BaseException as e:
            # The sender itself cancelled (loop closing) counts as Redis not answering.
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(e if isinstance(e, Exception) else Down())
            if not isinstance(e, Exception):
                raise
            return
        for (item, fut), result in zip(batch, results, strict=True):
            if not fut.done():
                fut.set_result(result)
            elif self._orphan is not None:
                self._orphan(item, result)
