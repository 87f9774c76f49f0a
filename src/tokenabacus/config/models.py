"""The ``models:`` a gateway serves: embedded or upstream engines, their tokenizers and who may use them."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from typing import Annotated, Literal

from pydantic import Field, field_validator

from tokenabacus.config.base import _Strict, check_cidrs

DEFAULT_MODEL_NAME = "smollm2-135m-instruct"


class ModelAllow(_Strict):
    """Who may use a model: a caller matching any list is allowed. Absent lists allow nobody
    through them; an absent ``allow`` allows everyone."""

    projects: list[str] = Field(default_factory=list)
    departments: list[str] = Field(default_factory=list)
    users: list[str] = Field(default_factory=list)
    keys: list[str] = Field(default_factory=list)  # key ids


class ModelPolicy(_Strict):
    """Access and scheduling settings every model entry takes."""

    allow: ModelAllow | None = None
    allow_ips: list[str] | None = None  # CIDRs; None: any address
    # At most this many requests run on the model at once; the rest wait in fair order.
    max_concurrency: int | None = Field(None, ge=1)
    # Other names clients may ask for the model by: served, billed, priced and limited under its name.
    aliases: list[Annotated[str, Field(min_length=1, max_length=200)]] = Field(default_factory=list)

    @field_validator("allow_ips")
    @classmethod
    def _ips(cls, v: list[str] | None) -> list[str] | None:
        return None if v is None else check_cidrs(v)


class TimeoutConfig(_Strict):
    connect: float = Field(5.0, gt=0)
    read: float = Field(600.0, gt=0)
    total: float | None = Field(None, gt=0)


class TokenizerConfig(_Strict):
    type: Literal["hf", "gguf", "tiktoken"]
    path: str
    # hf: path to a chat template file; default is tokenizer_config.json's chat_template.
    chat_template: str | None = None
    # tiktoken: count with OpenAI's per-message rule (3 tokens a message + 3 for the reply).
    openai_chat: bool = True
    add_generation_prompt: bool = True
    # The engine renders /v1/completions prompts through the chat template as one user message
    # (ms-swift's `swift deploy` does): count them the way it really sends them.
    completions_as_chat: bool = False
    # hf: count byte-level BPE files (Qwen, Llama 3) with tiktoken's faster BPE after checking it
    # agrees with tokenizers on the file; false always uses tokenizers.
    fast_bpe: bool = True

    @field_validator("path")
    @classmethod
    def _expand(cls, v: str) -> str:
        return os.path.expanduser(v)


class EmbeddedModel(ModelPolicy):
    name: str
    engine: Literal["embedded"]
    gguf: str | None = None  # None: the SmolLM2 file installed with the project
    n_ctx: int = Field(4096, ge=128)
    n_threads: int | None = Field(None, ge=1)
    seed: int | None = None


class UpstreamModel(ModelPolicy):
    name: str
    engine: Literal["upstream"]
    base_url: str
    upstream_model: str | None = None
    api_key: str | None = None
    api_key_env: str | None = None
    timeout: TimeoutConfig = TimeoutConfig()
    max_connections: int = Field(256, ge=1)
    tokenizer: TokenizerConfig | None = None
    # Ask the upstream for usage in streams (stream_options.include_usage).
    stream_usage: bool = True
    # Which figures a record bills when both exist.
    bill: Literal["tokenizer", "upstream"] = "tokenizer"
    # The engine's Prometheus endpoint (vLLM: http://host:8000/metrics): scraped to reconcile its
    # token counters with the ledger and to show its occupancy (running, waiting, KV cache).
    metrics_url: str | None = None
    metrics_interval_s: float = Field(15.0, gt=0)

    @field_validator("base_url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not re.match(r"^https?://[^/\s]+", v):
            raise ValueError("must be an http(s) URL such as http://gpu-node-1:8000/v1")
        return v.rstrip("/")

    def resolved_api_key(self) -> str | None:
        if self.api_key_env:
            return os.environ.get(self.api_key_env)
        return self.api_key


ModelConfig = Annotated[EmbeddedModel | UpstreamModel, Field(discriminator="engine")]


def check_names(models: Sequence[EmbeddedModel | UpstreamModel]) -> None:
    """Every name a request may ask for (a model's name or one of its aliases) means one model:
    a ValueError naming the first clash."""
    owner: dict[str, str] = {}
    for m in models:
        if m.name in owner:
            raise ValueError(f"model name {m.name!r} is declared twice")
        owner[m.name] = m.name
    for m in models:
        for alias in m.aliases:
            if alias in owner:
                other = owner[alias]
                what = f"the name of model {other!r}" if other == alias else f"already an alias of model {other!r}"
                raise ValueError(f"model {m.name!r}: alias {alias!r} is {what}")
            owner[alias] = m.name


def alias_map(models: Sequence[EmbeddedModel | UpstreamModel]) -> dict[str, str]:
    """Alias -> the model's name (check_names has made each alias mean one model)."""
    return {alias: m.name for m in models for alias in m.aliases}
