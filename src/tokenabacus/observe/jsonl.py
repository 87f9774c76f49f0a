"""The JSONL sink: one object per line with the contract's field names, rotated by size or by UTC
day, ready for Filebeat/ELK. The writer calls it through ledger/sinks.py's ``Sink`` protocol."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path


class JsonlSink:
    def __init__(self, path: Path, rotate_bytes: int, rotate_daily: bool = True, keep: int = 30) -> None:
        self.path = path
        self.rotate_bytes = rotate_bytes
        self.rotate_daily = rotate_daily
        self.keep = keep
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(path, "ab")
        self._day = self._file_day()

    def _file_day(self) -> str:
        try:
            mtime = self.path.stat().st_mtime if self.path.stat().st_size else datetime.now(UTC).timestamp()
        except FileNotFoundError:
            mtime = datetime.now(UTC).timestamp()
        return datetime.fromtimestamp(mtime, UTC).strftime("%Y-%m-%d")

    def _rotate_if_needed(self) -> None:
        today = datetime.now(UTC).strftime("%Y-%m-%d")
        size = self._fh.tell()
        if size == 0:
            self._day = today
            return
        if size < self.rotate_bytes and not (self.rotate_daily and today != self._day):
            return
        self._fh.close()
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
        self.path.rename(self.path.with_name(f"{self.path.stem}-{self._day}-{stamp}{self.path.suffix}"))
        self._fh = open(self.path, "ab")
        self._day = today
        self._prune()

    def _prune(self) -> None:
        rotated = sorted(
            self.path.parent.glob(f"{self.path.stem}-*{self.path.suffix}"), key=lambda p: p.stat().st_mtime
        )
        for old in rotated[: max(0, len(rotated) - self.keep)]:
            old.unlink(missing_ok=True)

    def write(self, lines: list[bytes]) -> None:
        self._rotate_if_needed()
        self._fh.write(b"".join(lines))
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        self._fh.close()
