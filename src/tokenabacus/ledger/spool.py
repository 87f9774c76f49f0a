"""The spool: an append-only local file a record reaches before its response's last byte.

Appends are grouped: records arriving while a write is under way share the next write + fsync,
done on a dedicated thread so the event loop never blocks on the disk. When other requests are
still being served, the flusher waits up to ``group_commit_ms`` for their records too (like
PostgreSQL's commit_delay/commit_siblings): under load one fsync then covers several responses,
while a lone request is synced at once. The background writer rotates the current segment and
moves closed segments into the database.
"""

from __future__ import annotations

import asyncio
import io
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import orjson

from tokenabacus.ledger.record import UsageRecord
from tokenabacus.ledger.unwritten import Unwritten

_PREFIX, _SUFFIX = "seg-", ".jsonl"


# fdatasync skips the inode times but still persists the appended data and the new file size.
_sync = getattr(os, "fdatasync", os.fsync)


def _seq(path: Path) -> int:
    return int(path.name[len(_PREFIX) : -len(_SUFFIX)])


class Spool:
    def __init__(self, directory: Path, flush_interval_ms: float = 0.0, group_commit_ms: float = 1.0) -> None:
        self.dir = directory
        self.flush_interval = flush_interval_ms / 1000
        self.group_commit = group_commit_ms / 1000
        # Requests being served that will append a record; the server keeps this count.
        self.active = 0
        self._group_full: asyncio.Event | None = None
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spool")
        self._pending: list[tuple[bytes, asyncio.Future[None]]] = []
        self._wake: asyncio.Event | None = None
        self._closing = False
        self._task: asyncio.Task | None = None
        self._fh: io.FileIO | None = None
        self._seq = 0
        self._bytes = 0  # bytes in the current segment
        self.unwritten = Unwritten()  # what the database may not hold yet (quota seeds read it)

    # Lifecycle -----------------------------------------------------------------------------
    def open(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        existing = self.closed_segments()
        self._seq = (_seq(existing[-1]) + 1) if existing else 1
        self._open_segment()

    def _open_segment(self) -> None:
        path = self.dir / f"{_PREFIX}{self._seq:012d}{_SUFFIX}"
        self._fh = open(path, "ab", buffering=0)
        self._bytes = 0
        # Make the new file's directory entry durable too.
        dfd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    async def start(self) -> None:
        self._wake = asyncio.Event()
        self._group_full = asyncio.Event()
        self._task = asyncio.create_task(self._flusher(), name="spool-flusher")

    async def close(self) -> None:
        """Flush what is pending (its futures resolve), then close the segment."""
        if self._task is not None:
            assert self._wake is not None
            self._closing = True
            self._wake.set()
            assert self._group_full is not None
            self._group_full.set()
            await self._task  # the flusher ends after one last flush; never cancel it mid-write
            self._task = None
        await asyncio.get_running_loop().run_in_executor(self._io, self._close_fh)
        self._io.shutdown(wait=True)

    def _close_fh(self) -> None:
        if self._fh:
            self._fh.close()
            self._fh = None

    # Appending -----------------------------------------------------------------------------
    def append(self, record: UsageRecord) -> asyncio.Future[None]:
        """Queue a record; the returned future resolves once it is fsynced."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((orjson.dumps(record.to_dict()) + b"\n", fut))
        self.unwritten.add(record)
        assert self._wake is not None and self._group_full is not None, "spool not started"
        self._wake.set()
        if self.active <= len(self._pending):  # nobody else is coming: stop gathering
            self._group_full.set()
        return fut

    async def _flusher(self) -> None:
        assert self._wake is not None
        while not self._closing:
            await self._wake.wait()
            self._wake.clear()
            if self.flush_interval and not self._closing:
                await asyncio.sleep(self.flush_interval)  # let a group gather
            elif self.group_commit and not self._closing and self.active > len(self._pending):
                await self._gather()
            await self._flush_pending()
        await self._flush_pending()

    async def _gather(self) -> None:
        """Wait until every request being served has appended, or group_commit has passed."""
        assert self._group_full is not None
        self._group_full.clear()
        timer = asyncio.get_running_loop().call_later(self.group_commit, self._group_full.set)
        try:
            await self._group_full.wait()
        finally:
            timer.cancel()

    async def _flush_pending(self) -> None:
        batch, self._pending = self._pending, []
        if not batch:
            return
        try:
            await asyncio.get_running_loop().run_in_executor(self._io, self._write, [b for b, _ in batch])
        except Exception as e:  # disk full, I/O error: the requests fail, nothing is faked
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(e)
            return
        for _, fut in batch:
            if not fut.done():
                fut.set_result(None)

    def _write(self, lines: list[bytes]) -> None:
        data = b"".join(lines)
        assert self._fh is not None
        self._fh.write(data)
        _sync(self._fh.fileno())
        self._bytes += len(data)

    # Rotation (used by the writer) ----------------------------------------------------------
    async def rotate(self) -> None:
        """Close the current segment if it holds anything, so the writer can take it."""
        await asyncio.get_running_loop().run_in_executor(self._io, self._rotate)

    def _rotate(self) -> None:
        if self._bytes == 0:
            return
        self._close_fh()
        self._seq += 1
        self._open_segment()

    def closed_segments(self) -> list[Path]:
        """Segments no longer written to, oldest first."""
        current = self._fh.name if self._fh else None
        segs = sorted(
            (p for p in self.dir.glob(f"{_PREFIX}*{_SUFFIX}") if str(p) != current),
            key=_seq,
        )
        return segs


def segment_lines(path: Path) -> list[bytes]:
    """A segment's complete lines. A torn last line (a crash mid-write, never acknowledged to a
    client) is left out."""
    with open(path, "rb") as fh:
        return [line for line in fh if line.endswith(b"\n")]


def read_segment(path: Path) -> tuple[list[dict], list[bytes]]:
    """The records of a segment that parse as JSON, and their lines."""
    records: list[dict] = []
    lines: list[bytes] = []
    for line in segment_lines(path):
        try:
            records.append(orjson.loads(line))
        except orjson.JSONDecodeError:
            continue
        lines.append(line)
    return records, lines
