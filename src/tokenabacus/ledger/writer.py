"""The background writer: moves closed spool segments into the database (and the sinks) in
batches. Inserts are idempotent on request_id, so replaying a segment after a crash is safe, and
each batch adds the records it really inserted to the hourly rollups in the same transaction
(UsageRecords.insert), so a replay is not counted twice there either.

A record the database can never take (bad JSON, a value outside its column, a row the database
refuses as data) goes to the dead-letter file and the rest of its segment moves on. A database
that cannot be reached is different: the segment stays and the next cycle tries again.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import orjson
from sqlalchemy import exc

from tokenabacus.ledger.deadletter import DeadLetters
from tokenabacus.ledger.sinks import Sink
from tokenabacus.ledger.spool import Spool, segment_lines
from tokenabacus.ledger.usage import UsageRecords
from tokenabacus.ledger.validate import problem
from tokenabacus.tasks import cancel_and_wait

log = logging.getLogger(__name__)


@dataclass
class Drained:
    moved: int = 0  # records now in the database
    set_aside: int = 0  # records sent to the dead-letter file

    def __iadd__(self, other: Drained) -> Drained:
        self.moved += other.moved
        self.set_aside += other.set_aside
        return self


def refused_as_data(e: BaseException) -> bool:
    """The database (or its driver) refused the values, which retrying cannot change; anything
    else (connection lost, locked, out of disk) may pass and keeps the segment."""
    if isinstance(e, (exc.IntegrityError, exc.DataError)):
        return True
    if isinstance(e, exc.DBAPIError):
        return False
    # The SQLite fast path calls the driver directly, so its errors arrive unwrapped.
    return isinstance(e, (sqlite3.IntegrityError, sqlite3.DataError, OverflowError, TypeError, ValueError))


def _one_line(e: BaseException) -> str:
    text = str(getattr(e, "orig", None) or e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"[:300]


def _insert(usage: UsageRecords, good: list[tuple[dict, bytes]], dead: list[tuple[bytes, str]]) -> list[bytes]:
    """Insert the checked records; returns the lines that reached the database."""
    if not good:
        return []
    try:
        usage.insert([r for r, _ in good])
        return [line for _, line in good]
    except Exception as e:
        if not refused_as_data(e):
            raise
    # Some row was refused: find which, one row per transaction (rare, so slow is fine).
    kept = []
    for record, line in good:
        try:
            usage.insert([record])
        except Exception as e:
            if not refused_as_data(e):
                raise
            dead.append((line, f"the database refused it: {_one_line(e)}"))
        else:
            kept.append(line)
    return kept


def drain_segments(segments: list[Path], usage: UsageRecords, sinks: list[Sink], dead_letters: DeadLetters) -> Drained:
    """Write each segment to the database, set aside what cannot be written, feed the sinks,
    then delete the segment."""
    total = Drained()
    for seg in segments:
        good: list[tuple[dict, bytes]] = []
        dead: list[tuple[bytes, str]] = []
        for line in segment_lines(seg):
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError as e:
                dead.append((line, f"not valid JSON: {e}"))
                continue
            why = problem(record)
            if why:
                dead.append((line, why))
            else:
                good.append((record, line))
        kept = _insert(usage, good, dead)
        dead_letters.add(dead, seg.name)  # durable before the segment goes
        if kept:
            for sink in sinks:
                try:
                    sink.write(kept)
                except Exception:  # a sink failing must not stop the ledger
                    log.exception("sink %s failed", type(sink).__name__)
        seg.unlink()
        total += Drained(len(kept), len(dead))
    return total


def replay_spool(spool_dir: Path, usage: UsageRecords, sinks: list[Sink], dead_letters: DeadLetters) -> Drained:
    """Move every segment left by an earlier run (used at start and by `tokenabacus db replay`).
    The caller holds the spool's lock (ledger/lock.py), so no segment here is still being written."""
    if not spool_dir.is_dir():
        return Drained()
    segments = sorted(spool_dir.glob("seg-*.jsonl"))
    return drain_segments(segments, usage, sinks, dead_letters)


class LedgerWriter:
    def __init__(
        self, spool: Spool, usage: UsageRecords, sinks: list[Sink], dead_letters: DeadLetters, interval_s: float = 0.2
    ) -> None:
        self.spool = spool
        self.usage = usage
        self.sinks = sinks
        self.dead_letters = dead_letters
        self.interval = interval_s
        self._task: asyncio.Task | None = None
        self.moved = 0
        self.last_error: str | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="ledger-writer")

    async def _cycle(self) -> None:
        self.spool.unwritten.mark()
        await self.spool.rotate()
        segments = self.spool.closed_segments()
        if segments:
            done = await asyncio.to_thread(drain_segments, segments, self.usage, self.sinks, self.dead_letters)
            self.moved += done.moved
        self.spool.unwritten.drained()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self._cycle()
                self.last_error = None
            except asyncio.CancelledError:
                raise
            except Exception as e:  # database down: segments stay on disk and are retried
                self.last_error = f"{type(e).__name__}: {e}"
                log.warning("ledger writer: %s (records stay in the spool)", self.last_error)

    async def stop(self) -> None:
        """Final drain on shutdown, after the spool has flushed everything pending."""
        await cancel_and_wait(self._task)
        try:
            await self._cycle()
        except Exception:
            log.exception("final ledger drain failed; records remain in the spool for the next start")
        for sink in self.sinks:
            sink.close()
