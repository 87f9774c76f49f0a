"""Reconciliation with an engine's own counters: a model entry's ``metrics_url`` (vLLM's
Prometheus endpoint) is scraped periodically, and the growth of its prompt and generation token
counters is compared with what this gateway billed for the model over the same time.

The engine may serve other clients too, so a difference is reported, never corrected: engine
minus ours, per interval and since the watch started. The same scrape gives the engine's
occupancy (requests running and waiting, KV-cache use). Nothing here is on the request path:
settling a record adds two integers to the model's tally.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from tokenabacus.tasks import cancel_and_wait

log = logging.getLogger(__name__)

PROMPT, GENERATION = "vllm:prompt_tokens", "vllm:generation_tokens"
RUNNING, WAITING = "vllm:num_requests_running", "vllm:num_requests_waiting"
# Renamed across vLLM releases; the first present wins.
KV_CACHE = ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc", "vllm:cpu_cache_usage_perc")


@dataclass(slots=True)
class Tally:
    """Tokens this gateway billed for one model (records that reached the engine)."""

    prompt: int = 0
    completion: int = 0

    def add(self, prompt: int | None, completion: int | None) -> None:
        self.prompt += prompt or 0
        self.completion += completion or 0


def parse(text: str) -> dict[str, float]:
    """Counter totals and gauges summed over their label sets (one engine may report several)."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            # Counters are exposed as NAME_total; the parser names the family without it.
            if s.name.endswith("_created"):
                continue
            name = s.name[: -len("_total")] if s.name.endswith("_total") else s.name
            out[name] = out.get(name, 0.0) + float(s.value)
    return out


@dataclass(slots=True)
class Reading:
    at: float
    engine_prompt: float
    engine_generation: float
    ours_prompt: int
    ours_completion: int


@dataclass
class EngineWatch:
    model: str
    url: str
    interval_s: float
    tally: Tally = field(default_factory=Tally)
    first: Reading | None = None
    prev: Reading | None = None
    last: Reading | None = None
    occupancy: dict = field(default_factory=dict)
    error: str | None = None
    _task: asyncio.Task | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"metrics-{self.model}")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)

    async def _run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=max(2.0, min(10.0, self.interval_s)))
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                await self.scrape(session)
                await asyncio.sleep(self.interval_s)

    async def scrape(self, session: aiohttp.ClientSession) -> None:
        try:
            async with session.get(self.url) as r:
                r.raise_for_status()
                text = await r.text()
            metrics = await asyncio.to_thread(parse, text)  # a busy engine's page is large
        except Exception as e:
            if self.error is None:
                log.warning("%s: cannot read the engine's metrics at %s: %s", self.model, self.url, e)
            self.error = f"{type(e).__name__}: {e}"[:300]
            return
        if PROMPT not in metrics or GENERATION not in metrics:
            self.error = f"{self.url} has no {PROMPT}_total / {GENERATION}_total counters"
            return
        self.error = None
        reading = Reading(time.time(), metrics[PROMPT], metrics[GENERATION], self.tally.prompt, self.tally.completion)
        if self.first is None or reading.engine_prompt < (self.last.engine_prompt if self.last else 0):
            self.first = reading  # the first scrape, or the engine restarted (its counters reset)
            self.prev = None
        else:
            self.prev = self.last
        self.last = reading
        kv = next((metrics[k] for k in KV_CACHE if k in metrics), None)
        self.occupancy = {"running": metrics.get(RUNNING), "waiting": metrics.get(WAITING), "kv_cache_usage": kv}

    def status(self) -> dict:
        out: dict = {"metrics_url": self.url, "ok": self.error is None and self.last is not None, "error": self.error}
        if self.last is None or self.first is None:
            return out
        out["scraped_at"] = self.last.at
        out["occupancy"] = self.occupancy
        out["since_start"] = _compare(self.first, self.last)
        if self.prev is not None:
            out["last_interval"] = _compare(self.prev, self.last)
        return out


def _compare(a: Reading, b: Reading) -> dict:
    """Engine growth against ours between two readings; drift = engine - ours (other clients of a
    shared engine, requests still running at a boundary, or a counting difference)."""
    ep, eg = int(b.engine_prompt - a.engine_prompt), int(b.engine_generation - a.engine_generation)
    op, oc = b.ours_prompt - a.ours_prompt, b.ours_completion - a.ours_completion
    return {
        "seconds": round(b.at - a.at, 1),
        "engine_prompt_tokens": ep,
        "engine_generation_tokens": eg,
        "ledger_prompt_tokens": op,
        "ledger_completion_tokens": oc,
        "prompt_drift": ep - op,
        "generation_drift": eg - oc,
    }
