"""The background writer: moves closed spool segments into the database (and the sinks) in
batches. Inserts are idempotent on request_id, so replaying a segment after a crash is safe."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from tokenabacus.ledger.sinks import Sink
from tokenabacus.ledger.spool import Spool, read_segment
from tokenabacus.ledger.store import Store
from tokenabacus.tasks import cancel_and_wait

log = logging.getLogger(__name__)


def drain_segments(segments: list[Path], store: Store, sinks: list[Sink]) -> int:
    """Write each segment to the database, then the sinks, then delete it. Returns records moved."""
    moved = 0
    for seg in segments:
        records, lines = read_segment(seg)
        if records:
            store.insert_records(records)
            for sink in sinks:
                try:
                    sink.write(lines)
                except Exception:  # a sink failing must not stop the ledger
                    log.exception("sink %s failed", type(sink).__name__)
        seg.unlink()
        moved += len(records)
    return moved


def replay_spool(spool_dir: Path, store: Store, sinks: list[Sink]) -> int:
    """Move every segment left by an earlier run (used at start and by `tokenabacus db replay`)."""
    if not spool_dir.is_dir():
        return 0
    segments = sorted(spool_dir.glob("seg-*.jsonl"))
    return drain_segments(segments, store, sinks)


class LedgerWriter:
    def __init__(self, spool: Spool, store: Store, sinks: list[Sink], interval_s: float = 0.2) -> None:
        self.spool = spool
        self.store = store
        self.sinks = sinks
        self.interval = interval_s
        self._task: asyncio.Task | None = None
        self.moved = 0
        self.last_error: str | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="ledger-writer")

    async def _cycle(self) -> None:
        await self.spool.rotate()
        segments = self.spool.closed_segments()
        if segments:
            self.moved += await asyncio.to_thread(drain_segments, segments, self.store, self.sinks)

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
