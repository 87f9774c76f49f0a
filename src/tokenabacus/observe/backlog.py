"""The observe seam for consumers that must see every record (a Kafka topic, a webhook): each has
a backlog directory of its own, and a runner that delivers it.

The writer gives a backlog the records that reached the database (it is a ledger sink, wired in
observe/wiring.py): ``Backlog.write`` stores them as one new file, fsynced, before the writer deletes
the spool segment they came from. The runner delivers the files oldest first and deletes each
only once its consumer has taken all of it. So a crash, a restart or a consumer that is down
(a broker restarting) delays delivery but loses nothing: at least once, each consumer at its own
pace, and the request path never waits for any of them. A consumer that can dedupe does so on
``request_id`` (Kafka keys its messages by it).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

log = logging.getLogger(__name__)

SUFFIX = ".jsonl"


class Consumer(Protocol):
    """Takes records (JSON lines with the ledger contract's names); raises when it could not, and
    then gets the same lines again later."""

    name: str

    async def start(self) -> None: ...

    async def deliver(self, lines: Sequence[bytes]) -> None: ...

    async def close(self) -> None: ...


class Backlog:
    """A directory of record files waiting for one consumer (the writer's side)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self._seq = itertools.count()

    def write(self, lines: list[bytes]) -> None:
        """Durably add one file of lines: written, fsynced and renamed into place, so the runner
        never reads half a file. Named by time, so files sort oldest first."""
        if not lines:
            return
        name = f"{time.time_ns():020d}-{os.getpid()}-{next(self._seq):06d}{SUFFIX}"
        tmp = self.root / f".{name}.tmp"
        with open(tmp, "wb") as fh:
            fh.write(b"".join(line if line.endswith(b"\n") else line + b"\n" for line in lines))
            fh.flush()
            os.fsync(fh.fileno())
        os.rename(tmp, self.root / name)
        fd = os.open(self.root, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def close(self) -> None:
        pass

    def files(self) -> list[Path]:
        return sorted(p for p in self.root.iterdir() if p.name.endswith(SUFFIX) and not p.name.startswith("."))

    def oldest_age_s(self) -> float:
        """How long the oldest waiting file has waited (0 when none): the consumer's lag."""
        files = self.files()
        if not files:
            return 0.0
        return max(0.0, time.time() - int(files[0].name.split("-", 1)[0]) / 1e9)


class Runner:
    """Delivers a backlog to its consumer, retrying with backoff while the consumer fails."""

    def __init__(self, consumer: Consumer, backlog: Backlog, batch: int = 500, retry_max_s: float = 30.0) -> None:
        self.consumer = consumer
        self.backlog = backlog
        self.batch = batch
        self.retry_max_s = retry_max_s
        self.delivered = 0
        self.failures = 0
        self.last_error: str | None = None
        self._task: asyncio.Task | None = None
        self._wake = asyncio.Event()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"observer-{self.consumer.name}")

    def poke(self) -> None:
        """New files are waiting (the writer calls this from its loop; polling covers the rest)."""
        self._wake.set()

    async def _run(self) -> None:
        delay = 0.5
        started = False
        while True:
            try:
                if not started:
                    await self.consumer.start()
                    started = True
                files = await asyncio.to_thread(self.backlog.files)
                for f in files:
                    lines = await asyncio.to_thread(_read_lines, f)
                    for i in range(0, len(lines), self.batch):
                        await self.consumer.deliver(lines[i : i + self.batch])
                    await asyncio.to_thread(f.unlink, missing_ok=True)
                    self.delivered += len(lines)
                self.last_error = None
                delay = 0.5
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), 1.0)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # the consumer is down: everything waits on disk, retried later
                self.failures += 1
                self.last_error = f"{type(e).__name__}: {str(e)[:300]}"
                log.warning("observer %s: %s (retrying in %.1f s)", self.consumer.name, self.last_error, delay)
                await asyncio.sleep(delay)
                delay = min(self.retry_max_s, delay * 2)

    async def stop(self, drain_s: float = 5.0) -> None:
        """Give waiting files a moment to go, then stop; what is left goes at the next start."""
        deadline = time.monotonic() + drain_s
        while self._task and not self._task.done() and time.monotonic() < deadline:
            if not await asyncio.to_thread(self.backlog.files) or self.last_error:
                break
            await asyncio.sleep(0.05)
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(Exception):
            await self.consumer.close()


def _read_lines(path: Path) -> list[bytes]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    return [line for line in data.split(b"\n") if line.strip()]
