"""What every engine offers the serving layer.

Engines serve and observe; they do not bill. Each fills the call's ``Observed`` (api/call.py)
with the raw figures it saw (its own ids, the upstream's usage claim, the generated text), and one
settle step in ``metering`` turns them into the record's billed figures, for every engine alike.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator

from tokenabacus.api.call import Call


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
