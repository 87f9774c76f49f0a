"""What the Gateway starts and stops: anything with ``start`` and ``stop``, started in order
and stopped in reverse (server/state.py lists them). The adapters here give the spool and the
engines that shape."""

from __future__ import annotations

import logging
from typing import Protocol

from tokenabacus.engines.base import Engine
from tokenabacus.ledger.spool import Spool

log = logging.getLogger(__name__)


class Service(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class SpoolService:
    """The spool: its open segment taken at start, flushed and closed at stop."""

    def __init__(self, spool: Spool) -> None:
        self.spool = spool

    async def start(self) -> None:
        self.spool.open()
        await self.spool.start()

    async def stop(self) -> None:
        await self.spool.close()


class ModelService:
    """One model's engine. A failed close is logged, so the other services still stop."""

    def __init__(self, name: str, engine: Engine) -> None:
        self.name = name
        self.engine = engine

    async def start(self) -> None:
        log.info("starting model %s (%s)", self.name, self.engine.kind)
        await self.engine.start()

    async def stop(self) -> None:
        try:
            await self.engine.close()
        except Exception:
            log.exception("closing engine failed")


async def start_all(services: list[Service], running: list[Service]) -> None:
    """Start ``services`` in order, adding each to ``running`` once it has started."""
    for svc in services:
        await svc.start()
        running.append(svc)


async def stop_all(running: list[Service]) -> None:
    """Stop what ``running`` holds, the last started first, emptying it."""
    while running:
        await running.pop().stop()
