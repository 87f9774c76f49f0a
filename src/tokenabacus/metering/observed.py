"""What an engine saw while serving one request: raw figures, before anything is billed."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class Observed:
    """Raw figures an engine saw while serving one request. Unknown stays None."""

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
