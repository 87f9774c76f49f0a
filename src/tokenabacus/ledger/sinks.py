"""What the ledger writer calls after records reach the database: the ``Sink`` protocol. The sinks
themselves (JSONL, Kafka) and which of them a process uses live above the ledger, in observe/."""

from __future__ import annotations

from typing import Protocol


class Sink(Protocol):
    def write(self, lines: list[bytes]) -> None:
        """Take records as the spool holds them: JSON lines with the contract's names."""
        ...

    def close(self) -> None: ...
