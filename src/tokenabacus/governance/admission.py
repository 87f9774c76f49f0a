"""The admission seam: every policy that may refuse a request, in one fixed order, and the ticket
that settles what admission took when the request ends, whatever ended it.

Order: model access → IP policy → rate limits and quota reservation (one atomic step over every
applicable limit) → fair-scheduling wait. A policy refuses by raising a ``governance.errors``
exception; the serving layer turns it into OpenAI's error JSON and a ``rejected`` record.

Admission changes nothing it is handed: what it decides for the request (the ``max_tokens`` it
holds a body without one to) is in the ticket, and the caller applies it before the engine runs.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol
from zoneinfo import ZoneInfo

import orjson

from tokenabacus.api.call import CHAT, Call
from tokenabacus.billing.prices import PriceBook, PriceVersion
from tokenabacus.calendar import now_ms
from tokenabacus.governance.access import ModelAccess, check_key_ip
from tokenabacus.governance.counters import Ask, Commit, Counters, Missing, Refusal
from tokenabacus.governance.errors import CountersUnavailable, QuotaExceeded, RateLimited, Refused
from tokenabacus.governance.keys import Identity
from tokenabacus.governance.quotas import KEEP_MS, Limit, LimitSet
from tokenabacus.governance.scheduler import FairScheduler, Slot
from tokenabacus.governance.seeding import Target
from tokenabacus.ledger.record import REJECTED, UsageRecord
from tokenabacus.metering.bounds import TEMPLATE_ALLOWANCE, completion_bound, prompt_bound
from tokenabacus.money import format_money

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Ticket:
    """Admission's decision for one request: what it took (reservations, a scheduler slot),
    settled once at the request's single exit (``Admission.settle``), and the ``max_tokens`` it
    imposes on a body without one (None: the body stays as it is; the caller puts it there)."""

    request_id: str
    held: bool = False  # reservations in the counters under request_id
    slot: Slot | None = None
    settled: bool = False
    max_tokens: int | None = None


class PriceLookup(Protocol):
    """The price book in force (billing.prices.PriceCache, or a PriceBook)."""

    def at(self, model: str, ts: int) -> PriceVersion | None: ...


# Seeds the counters a reserve found not ready (governance/seeding.Seeder.ensure).
SeedFn = Callable[[list[Target]], Awaitable[None]]
MAX_SEED_ROUNDS = 8


def _from_zero(counters: Counters) -> SeedFn:
    async def seed(targets: list[Target]) -> None:
        # Without a ledger to read (benchmarks, unit use): a counter starts from nothing.
        for t in targets:
            await counters.seed(t.key, 0, t.expire_at_ms)

    return seed


class Admission:
    def __init__(
        self,
        counters: Counters,
        tz: ZoneInfo,
        default_max_tokens: int,
        access: dict[str, ModelAccess],
        schedulers: dict[str, FairScheduler],
        prices: PriceLookup | None = None,
        seed: SeedFn | None = None,
        collecting: dict[str, dict[str, int]] | None = None,
    ) -> None:
        self.prices: PriceLookup = prices if prices is not None else PriceBook()  # cost limits reserve money
        self.seed = seed or _from_zero(counters)
        # Why counters cannot be trusted here (another gateway enforces quotas on a shared ledger).
        self.unavailable: str | None = None
        # Counters being seeded: what each settle adds to them is noted (seeding.Seeder.collecting).
        self.collecting: dict[str, dict[str, int]] = collecting if collecting is not None else {}
        self.counters = counters
        self.tz = tz
        self.default_max_tokens = default_max_tokens
        self.access = access
        self.schedulers = schedulers
        self.limits = LimitSet([], [], tz)  # replaced by the governance refresher
        self.pending: set[asyncio.Task] = set()

    async def drain(self, timeout: float) -> None:
        """Wait for settles still talking to the counters (a stopping gateway)."""
        if self.pending:
            await asyncio.wait(list(self.pending), timeout=timeout)

    def visible(self, ident: Identity, model: str) -> bool:
        a = self.access.get(model)
        return a is None or a.may_use(ident)

    async def admit(
        self,
        request_id: str,
        ident: Identity,
        model: str,
        client_ip: str | None,
        call: Call,
        count_prompt: Callable[[], Awaitable[int | None]],
    ) -> Ticket | None:
        """Run the policies in order; the ticket to settle at the request's exit (with the
        ``max_tokens`` the caller must put in a body without one), or None when admission took
        nothing and imposes nothing (no limit applies and the model has no queue). ``call`` is
        read, never changed."""
        access = self.access.get(model)
        if access is not None:
            access.check(ident, client_ip)
        check_key_ip(ident, client_ip)
        limits = self.limits.applicable(ident, model) if self.limits else []
        sched = self.schedulers.get(model)
        if not limits and sched is None:
            return None
        ticket = Ticket(request_id)
        if limits:
            await self._reserve(ticket, limits, call, count_prompt)
        if sched is not None:
            try:
                ticket.slot = await sched.acquire(ident.project or ident.user or ident.key_id)
            except BaseException:
                await self._undo(ticket)
                raise
        return ticket

    async def _undo(self, ticket: Ticket) -> None:
        if ticket.held:
            ticket.held = False
            await self.counters.settle(ticket.request_id, [])

    def settle(self, rec: UsageRecord, ticket: Ticket | None) -> Awaitable[None] | None:
        """The settle seam: release what admission took for the request and add its real use to
        every limit that applies to it now, by the record's start (a limit set while it ran
        counts it too). An awaitable when the counters need I/O (Redis), None when done."""
        held = False
        if ticket is not None:
            if ticket.settled:
                return None
            ticket.settled = True
            if ticket.slot is not None:
                ticket.slot.release()
            held = ticket.held
        lims = self.limits
        if not lims or (rec.status == REJECTED and not held):
            return None
        commits = []
        for lim in lims.applicable_to(rec.key_id, rec.user, rec.project, rec.department, rec.model):
            used = lim.used_by(rec)
            if used:
                start, end = lims.window(lim, rec.timestamp)
                commits.append(Commit(lim.counter_key(start), used, end + KEEP_MS))
        if not commits and not held:
            return None
        if self.collecting:
            for c in commits:
                noted = self.collecting.get(c.key)
                if noted is not None:
                    noted[rec.request_id] = c.used
        settling = self.counters.settle_now(rec.request_id, commits)
        if settling is None:
            return None
        # Tracked, so a stopping gateway waits for it and does not leave reservations behind in
        # Redis to block others until their leases lapse.
        task = asyncio.ensure_future(settling)
        self.pending.add(task)
        task.add_done_callback(self.pending.discard)
        return task

    async def _reserve(
        self, ticket: Ticket, limits: list[Limit], call: Call, count_prompt: Callable[[], Awaitable[int | None]]
    ) -> None:
        if self.unavailable:
            raise CountersUnavailable(self.unavailable)
        now = now_ms()
        bound: tuple[int, int] | None = None
        asks: list[Ask] = []
        targets: dict[str, Target] = {}
        for lim in limits:
            if lim.metric == "requests":
                amount = 1
            else:
                if bound is None:
                    if call.max_tokens is None:  # held to the default, so the bound is a bound
                        ticket.max_tokens = self.default_max_tokens
                    bound = await self._token_bound(call, ticket.max_tokens, count_prompt)
                amount = sum(bound) if lim.metric == "tokens" else self._cost_bound(lim, call, bound, now)
            start, end = self.limits.window(lim, now)
            key = lim.counter_key(start)
            asks.append(Ask(key, amount, self.limits.effective(lim, now), end + KEEP_MS))
            targets[key] = Target(key, lim, start, end + KEEP_MS)
        for _ in range(MAX_SEED_ROUNDS):
            result = await self.counters.reserve(ticket.request_id, asks)
            if not isinstance(result, Missing):
                break
            await self.seed([targets[k] for k in result.keys])  # then judge again
        else:
            raise CountersUnavailable("the quota counters could not be seeded from the ledger")
        if result is not None:
            raise self._refused(limits[result.index], asks[result.index], result, now)
        ticket.held = True

    def _cost_bound(self, lim: Limit, call: Call, bound: tuple[int, int], now: int) -> int:
        """The most the request can cost in the limit's currency: every prompt token at the dearer
        of the input and cached prices, every possible completion token at the output price. A
        model with no price in that currency costs nothing here, as its records carry no cost."""
        pv = self.prices.at(call.body["model"], now)
        if pv is None or pv.currency != lim.metric[5:]:
            return 0
        prompt, completion = bound
        per_prompt = max(pv.input, pv.cached or 0)
        return -(-(prompt * per_prompt + completion * pv.output) // 1_000_000)  # rounded up

    async def _token_bound(
        self, call: Call, imposed: int | None, count_prompt: Callable[[], Awaitable[int | None]]
    ) -> tuple[int, int]:
        """The most tokens the request can use: (its prompt, what it may generate), the body
        judged with ``imposed`` as its max_tokens when admission imposes one."""
        prompt = await count_prompt()
        if prompt is None:  # the bound settle bills at most (metering/bounds.py), so the two agree
            prompt = prompt_bound(call)
        if prompt is None:  # image or audio parts: the text's size, as before (the upstream's count is billed)
            text = call.body.get("messages") if call.endpoint == CHAT else call.body.get("prompt")
            prompt = len(orjson.dumps(text)) + TEMPLATE_ALLOWANCE
        if imposed is not None:  # judged as the engine will see it
            call = Call(call.endpoint, {**call.body, "max_tokens": imposed}, call.stream, call.cancelled, call.observed)
        return prompt, completion_bound(call) or self.default_max_tokens

    def _refused(self, lim: Limit, ask: Ask, r: Refusal, now: int) -> Refused:
        _, end = self.limits.window(lim, now)
        remaining = max(0, ask.limit - r.used - r.reserved)
        unit = "tokens" if lim.metric == "tokens" else "requests"
        show: Callable[[int], str] = "{:,}".format
        if lim.metric.startswith("cost:"):
            unit = ""
            show = lambda micros: format_money(micros, lim.metric[5:]) or ""  # noqa: E731
        per = {"minute": "per minute", "total": "in total"}.get(lim.period, f"per {lim.period}")
        reset = (
            "It does not reset."
            if lim.period == "total"
            else f"It resets at {datetime.fromtimestamp(end / 1000, self.tz).isoformat(timespec='seconds')}."
        )
        msg = (
            f"{'Rate limit' if lim.is_rate else 'Quota'} exceeded for {lim.scope_label()}: "
            f"{show(ask.limit)}{' ' + unit if unit else ''} {per}; {show(r.used)} used, {show(r.reserved)} reserved "
            f"by requests in flight, {show(remaining)} left, and this request needs up to {show(ask.amount)}. {reset}"
        )
        if not lim.is_rate and lim.period != "total":
            msg += " An approved quota request can raise the limit for this period."
        suffix = {"requests": "requests", "tokens": "tokens"}.get(lim.metric, "cost")
        headers = {
            f"x-ratelimit-limit-{suffix}": str(ask.limit),
            f"x-ratelimit-remaining-{suffix}": str(remaining),
            f"x-ratelimit-reset-{suffix}": duration(end - now) if lim.period != "total" else "never",
        }
        if lim.is_rate:
            headers["retry-after"] = str(max(1, -(-(end - now) // 1000)))
            return RateLimited(msg, f"rate_limit_exceeded:{lim.quota_id}", headers)
        return QuotaExceeded(msg, f"quota_exceeded:{lim.quota_id}", headers)


def duration(ms: int) -> str:
    """OpenAI's reset format: 1d2h3m4s, 6m0s, 1.5s."""
    s = max(0, ms) / 1000
    if s < 60:
        return f"{s:.3g}s"
    days, rem = divmod(int(s), 86400)
    h, rem = divmod(rem, 3600)
    m, sec = divmod(rem, 60)
    out = (f"{days}d" if days else "") + (f"{h}h" if h or days else "")
    return out + f"{m}m{sec}s"
