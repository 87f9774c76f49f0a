"""What every engine offers the serving layer.

Engines serve and observe; they do not bill. Each fills the call's ``Observed`` with the raw
figures it saw (its own ids, the upstream's usage claim, the generated text), and one settle step
in ``metering`` turns them into the record's billed figures, for every engine alike.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field

from tokenabacus.metering.observed import Observed

CHAT, COMPLETIONS = "chat", "completions"


@dataclass(slots=True)
class Call:
    """One request as the engine sees it."""

    endpoint: str  # CHAT or COMPLETIONS
    body: dict  # the validated client body; body["model"] is the public name
    stream: bool = False
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    observed: Observed = field(default_factory=Observed)

    @property
    def max_tokens(self) -> int | None:
        return self.body.get("max_completion_tokens") or self.body.get("max_tokens")


class Engine(ABC):
    kind: str = ""
    model_version: str | None = None

    async def start(self) -> None:  # noqa: B027 - optional hook
        pass

    async def close(self) -> None:  # noqa: B027 - optional hook
        pass

    @abstractmethod
    async def complete(self, call: Call) -> dict:
        """Return the full OpenAI response body (without usage; the server adds ours)."""

    @abstractmethod
    def stream(self, call: Call) -> AsyncGenerator[dict, None]:
        """Yield OpenAI chunk objects without usage. Closing the iterator early cancels."""

    def health(self) -> dict:
        return {"engine": self.kind, "ready": True}
