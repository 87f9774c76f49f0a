"""Records this process has spooled that the database may not hold yet.

Quota counters are seeded and checked against the ledger; the ledger lags the spool by a writer
cycle (longer while the database is down), so a seed needs the records still on their way. The
spool adds each record here; the writer marks a new generation before it rotates a segment and
drops old generations after a drain succeeded. A generation is dropped only two drains after its
mark: a record queued in memory while a segment was rotated lands in the next segment, which the
next drain moves. Records that reached the database may still be listed: readers check which
of them the database holds. Everything happens on the event loop's thread.
"""

from __future__ import annotations

import logging
from collections import deque

from tokenabacus.ledger.record import UsageRecord

log = logging.getLogger(__name__)

KEEP_GENERATIONS = 3
CAP = 200_000  # records kept while the database is away; beyond it the oldest are forgotten


class Unwritten:
    def __init__(self, cap: int = CAP) -> None:
        self.cap = cap
        self._gens: deque[list[UsageRecord]] = deque([[]])
        self._size = 0
        self._warned = False

    def add(self, rec: UsageRecord) -> None:
        self._gens[-1].append(rec)
        self._size += 1
        if self._size > self.cap:
            self._forget_oldest()

    def mark(self) -> None:
        """The writer is about to rotate: what was added so far goes to the database next."""
        if self._gens[-1]:
            self._gens.append([])

    def drained(self) -> None:
        """The writer moved every closed segment into the database."""
        while len(self._gens) > KEEP_GENERATIONS:
            self._size -= len(self._gens.popleft())

    def _forget_oldest(self) -> None:
        if not self._warned:
            log.warning("over %d records not yet in the ledger database: quota seeds may miss the oldest", self.cap)
            self._warned = True
        while self._size > self.cap and len(self._gens) > 1:
            self._size -= len(self._gens.popleft())
        if self._size > self.cap:  # one generation holds them all: cut it
            self._gens[0] = self._gens[0][self._size - self.cap :]
            self._size = self.cap

    def records(self) -> list[UsageRecord]:
        return [r for g in self._gens for r in g]

    def __len__(self) -> int:
        return self._size
