"""The dead-letter file: spooled records the ledger cannot take, set aside so the ones behind
them still move.

A record lands here when it is not a JSON object, fails the schema check (``validate``), or is
refused by the database as data (an integrity or data error); never because the database is
down, in which case the segment waits. Each line keeps the spooled line as it was, with the
reason, so an operator can mend it and put it back in the spool as a new segment.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import orjson

from tokenabacus.calendar import now_ms

log = logging.getLogger(__name__)
FILE_NAME = "dead-letter.jsonl"


def _count_lines(path: Path) -> int:
    try:
        with open(path, "rb") as fh:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 20), b""))
    except FileNotFoundError:
        return 0


class DeadLetters:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.count = _count_lines(path)  # what waits in the file, set aside by any run

    def add(self, entries: list[tuple[bytes, str]], segment: str) -> None:
        """Append (spooled line, reason) pairs durably; logged at ERROR, one line each."""
        if not entries:
            return
        at = now_ms()
        out = []
        for line, reason in entries:
            text = line.rstrip(b"\n").decode("utf-8", "backslashreplace")
            out.append(orjson.dumps({"at": at, "segment": segment, "reason": reason, "line": text}) + b"\n")
        new = not self.path.exists()
        with open(self.path, "ab") as fh:
            fh.write(b"".join(out))
            fh.flush()
            os.fsync(fh.fileno())
        if new:  # the file's directory entry must outlast the segment we are about to delete
            dfd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        self.count += len(entries)
        for line, reason in entries:
            log.error(
                "ledger: a record from %s was set aside in %s: %s: %s",
                segment,
                self.path,
                reason,
                line[:300].decode("utf-8", "backslashreplace").rstrip(),
            )
