"""The settle step: from what an engine observed to the figures a record bills.

One ``Meter`` per model holds its local counter (if any) and its billing rule (``bill:``). The
serving layer starts the prompt count when the request goes to the engine (so counting overlaps
the upstream's work) and settles once the engine is done, whatever ended it.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from typing import Any

import orjson

from tokenabacus.api.call import CHAT, Call
from tokenabacus.ledger.record import (
    ERROR,
    SOURCE_ENGINE,
    SOURCE_ESTIMATED,
    SOURCE_TOKENIZER,
    SOURCE_UPSTREAM,
    UsageRecord,
    clear_usage,
)
from tokenabacus.metering.bounds import completion_bound, prompt_bound
from tokenabacus.metering.figures import upstream_figures
from tokenabacus.metering.tokenizers import Counter, has_uncountable_parts

log = logging.getLogger(__name__)

# Inputs shorter than this are counted inline; longer ones on a worker thread.
INLINE_COUNT_CHARS = 2000
MAX_VERSION = 200  # model_version column length


def estimate(text: str) -> int:
    # Only when no tokenizer is configured and the upstream reported nothing; marked "estimated".
    return max(1, math.ceil(len(text.encode("utf-8")) / 4)) if text else 0


# A reply cut at max_tokens can end inside a multi-byte character: the text drops the unfinished
# bytes, which a byte-level vocabulary spells with up to 3 ids the engine did generate.
PARTIAL_TAIL_IDS = 3


def engine_completion(ours: int, theirs: int | None, finish_reason: str | None) -> int:
    """The completion ids to bill: the engine's own count when our count of its text makes it
    plausible, else ours.

    Re-tokenizing generated text is not a round trip: a reply cut inside a multi-byte character
    loses its last ids, and an engine may have sampled a spelling the tokenizer would merge. The
    engine's figure is accepted when it is not below ours and exceeds it by no more than a cut
    tail explains, and only for a reply cut at max_tokens: a reply that stopped is whole, and the
    difference there is the end-of-text id, which is never billed (as for the embedded engine)."""
    if theirs is None or finish_reason != "length":
        return ours
    return theirs if ours <= theirs <= ours + PARTIAL_TAIL_IDS else ours


class Meter:
    def __init__(
        self,
        counter: Counter | None = None,
        bill: str = "tokenizer",
        engine_counts: bool = False,
        engine_prompt: Callable[[Call], int] | None = None,
    ) -> None:
        """``engine_counts``: the engine reports its own ids (embedded); they are billed as they are.
        ``engine_prompt``: the engine's own prompt count before it runs, for admission's bound."""
        self.counter = counter
        self.bill = bill
        self.engine_counts = engine_counts
        self.engine_prompt = engine_prompt
        self._capped, self._capped_logged_at = 0, -60.0

    def _over_bound(self, rec: UsageRecord, most: int) -> None:
        """Logged at most once a minute per model: an upstream that always overclaims must not
        flood the log (/metrics counts every capped claim)."""
        self._capped += 1
        now = time.monotonic()
        if now - self._capped_logged_at < 60:
            return
        self._capped_logged_at = now
        log.warning(
            "%s: %d completion tokens (%s) is more than max_tokens x n allows; billing %d"
            " (%d such records since the last warning)",
            rec.request_id,
            rec.completion_tokens,
            rec.usage_source,
            most,
            self._capped,
        )
        self._capped = 0

    def health(self) -> dict:
        return {"counted_by": self.counter.engine if self.counter else None}

    # Counting ----------------------------------------------------------------------------------
    def _count_prompt_sync(self, call: Call) -> int:
        """The ids the engine receives as the prompt: a chat as its template renders it; a
        completions prompt as it is plus the special ids its tokenizer adds (a BOS), or, for an
        engine that wraps it in its chat template as one user message (``completions_as_chat``:
        ms-swift's `swift deploy`), as that chat."""
        assert self.counter is not None
        if call.endpoint == CHAT:
            kwargs = call.body.get("chat_template_kwargs")
            return self.counter.count_chat(
                call.body["messages"], call.body.get("tools"), kwargs if isinstance(kwargs, dict) else None
            )
        if self.counter.completions_as_chat:
            return self.counter.count_chat([{"role": "user", "content": call.body["prompt"]}])
        return self.counter.count_text(call.body["prompt"]) + self.counter.prompt_specials

    @staticmethod
    def _prompt_chars(call: Call) -> int:
        if call.endpoint == CHAT:
            return sum(len(str(m.get("content") or "")) for m in call.body["messages"])
        return len(call.body["prompt"])

    def start(self, call: Call) -> asyncio.Future | None:
        """Begin counting the prompt: inline when short, on a worker thread when long."""
        count = self._count_prompt_sync if self.counter is not None else self.engine_prompt
        if count is None:
            return None
        if self._prompt_chars(call) < INLINE_COUNT_CHARS:
            fut = asyncio.get_running_loop().create_future()
            try:
                fut.set_result(count(call))
            except Exception as e:
                fut.set_exception(e)
            return fut
        return asyncio.ensure_future(asyncio.to_thread(count, call))

    async def _count_text(self, text: str) -> int | None:
        if self.counter is None:
            return None
        if len(text) < INLINE_COUNT_CHARS:
            return self.counter.count_text(text)
        return await asyncio.to_thread(self.counter.count_text, text)

    # Settling ----------------------------------------------------------------------------------
    async def settle(self, rec: UsageRecord, call: Call, counting: asyncio.Future | None) -> None:
        prompt = await _result(counting)
        completion = await self._count_text(call.observed.text)
        self._apply(rec, call, prompt, completion)

    def settle_now(self, rec: UsageRecord, call: Call, counting: asyncio.Future | None) -> None:
        """The same without awaiting, for a request being cancelled."""
        prompt = self._result_nowait(counting, call)
        try:
            completion = self.counter.count_text(call.observed.text) if self.counter else None
        except Exception:
            completion = None
        self._apply(rec, call, prompt, completion)

    def _apply(self, rec: UsageRecord, call: Call, prompt: int | None, completion: int | None) -> None:
        """Decide the record's figures: the engine's ids, ours, the upstream's, or an estimate,
        never more than the request could use (``_cap``). A request that failed (the serving
        layer sets ``rec.status`` to error before settling it) bills what was generated, or
        nothing when nothing was."""
        self._decide(rec, call, prompt, completion)
        if not self.engine_counts and rec.usage_source is not None:
            self._cap(rec, call, prompt)

    def _decide(self, rec: UsageRecord, call: Call, prompt: int | None, completion: int | None) -> None:
        obs = call.observed
        if obs.model_version:
            rec.model_version = obs.model_version[:MAX_VERSION]
        if rec.ttft_ms is None and obs.first_token_at is not None:
            rec.ttft_ms = rec.elapsed_ms(obs.first_token_at)
        if self.engine_counts:
            if prompt is not None and obs.prompt_ids is not None and prompt != obs.prompt_ids:
                log.warning(
                    "%s: admission counted %d prompt ids, the engine %d", rec.request_id, prompt, obs.prompt_ids
                )
            if obs.prompt_ids is not None:
                rec.prompt_tokens, rec.completion_tokens = obs.prompt_ids, obs.completion_ids
                if obs.cached_ids is not None:
                    rec.cached_tokens = obs.cached_ids
                rec.usage_source = SOURCE_ENGINE
            return
        up_p, up_c, cached, lied = upstream_figures(obs.upstream_usage)
        if lied:
            log.warning(
                "%s: the upstream reported unusable usage figures %s; they are ignored",
                rec.request_id,
                orjson.dumps(obs.upstream_usage, default=str).decode()[:300],
            )
        rec.upstream_prompt_tokens, rec.upstream_completion_tokens, rec.cached_tokens = up_p, up_c, cached
        if rec.status == ERROR and not obs.text and not up_c:
            # The upstream failed after the response had started (an empty first chunk went out) but
            # before any text: as for a failure before any output, nothing is billed.
            clear_usage(rec)
            return
        if prompt is not None and call.endpoint == CHAT and has_uncountable_parts(call.body["messages"]):
            # Our count covers the text only; the upstream's covers the image tokens too.
            log.warning(
                "%s: the prompt has parts the local tokenizer cannot count (images, audio); billing %s",
                rec.request_id,
                "the upstream's prompt count" if up_p is not None else "an estimate",
            )
            if up_p is not None and up_c is not None:
                rec.prompt_tokens, rec.completion_tokens, rec.usage_source = up_p, up_c, SOURCE_UPSTREAM
            else:
                rec.prompt_tokens, rec.completion_tokens, rec.usage_source = prompt, completion, SOURCE_ESTIMATED
            return
        use_upstream = (self.bill == "upstream" or prompt is None) and up_p is not None and up_c is not None
        if use_upstream:
            rec.prompt_tokens, rec.completion_tokens, rec.usage_source = up_p, up_c, SOURCE_UPSTREAM
        elif prompt is not None and completion is not None:
            generated = engine_completion(completion, up_c, obs.finish_reason)
            rec.prompt_tokens, rec.completion_tokens, rec.usage_source = prompt, generated, SOURCE_TOKENIZER
        else:
            prompt_text = orjson.dumps(call.body.get("messages") or call.body.get("prompt")).decode()
            rec.prompt_tokens = prompt if prompt is not None else (up_p if up_p is not None else estimate(prompt_text))
            rec.completion_tokens = (
                completion if completion is not None else (up_c if up_c is not None else estimate(obs.text))
            )
            rec.usage_source = SOURCE_ESTIMATED

    def _cap(self, rec: UsageRecord, call: Call, ours: int | None) -> None:
        """Bill at most what the request could use (metering.bounds): an engine generates no
        more than max_tokens × n, and a prompt we could not count holds no more than its size
        allows. The upstream's claim stays in ``upstream_*``, so the record shows the difference."""
        most = completion_bound(call)
        if most is not None and rec.completion_tokens is not None and rec.completion_tokens > most:
            if rec.usage_source != SOURCE_ESTIMATED:  # an estimate above the bound was only a guess
                self._over_bound(rec, most)
            rec.completion_tokens = most
        if rec.prompt_tokens is None or (ours is not None and rec.usage_source != SOURCE_UPSTREAM):
            return  # our own count of the prompt is exact
        bound = prompt_bound(call)
        if bound is not None and rec.prompt_tokens > bound:
            log.warning(  # a claim: our estimate (a quarter of the size) is always below the bound
                "%s: %d prompt tokens (%s) is more than the prompt's size allows; billing %d",
                rec.request_id,
                rec.prompt_tokens,
                rec.usage_source,
                bound,
            )
            rec.prompt_tokens = bound
            if rec.cached_tokens is not None and rec.cached_tokens > bound:
                rec.cached_tokens = bound

    def _result_nowait(self, fut: asyncio.Future | None, call: Call) -> int | None:
        """The prompt count where awaiting is not possible (a cancelled request's cleanup)."""
        if fut is None:
            return None
        if fut.done():
            return None if fut.cancelled() or fut.exception() else fut.result()
        try:
            return self._count_prompt_sync(call)
        except Exception as e:
            log.warning("counting the prompt failed (%s: %s)", type(e).__name__, str(e)[:200])
            return None


async def _result(fut: asyncio.Future | None) -> Any:
    if fut is None:
        return None
    try:
        return await fut
    except Exception as e:
        log.warning(
            "counting the prompt failed (%s: %s); the record falls back to the upstream's figures",
            type(e).__name__,
            str(e)[:200],
        )
        return None
