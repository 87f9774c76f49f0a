"""The request value: one call as the serving layer hands it on, and what an engine saw serving it.

Below both engines (which fill ``Observed``) and metering (which settles it into billed figures),
so neither imports the other for it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

CHAT, COMPLETIONS = "chat", "completions"


@dataclass(slots=True)
class Observed:
    """Raw figures an engine saw while serving one request, before anything is billed. Unknown stays None."""

    prompt_ids: int | None = None  # ids the engine evaluated as the prompt (an engine that exposes them)
    completion_ids: int | None = None  # ids it generated, an end-of-generation id excluded
    cached_ids: int | None = None  # prompt ids served from its cache
    upstream_usage: Any = None  # an upstream's usage object, as sent (a claim, validated when settled)
    text_parts: list[str] = field(default_factory=list)  # the generated text
    model_version: str | None = None  # the weights' hash or the model id the upstream reported
    first_token_at: float | None = None  # time.perf_counter() of the first generated token
    finish_reason: str | None = None  # why generation ended ("length": cut at max_tokens)

    @property
    def text(self) -> str:
        return "".join(self.text_parts)


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
