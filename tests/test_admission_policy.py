"""Admission and settle in process, as tables: roles x scopes x limits x periods, model access and IP
policy, the token bound, grants, concurrency, and counters seeded from a real SQLite ledger. No
socket and no gateway process, so each case takes milliseconds; the process-level tests
(test_quotas.py, test_access.py, ...) keep what needs a process (HTTP answers, records, the CLI).

Every expected figure is computed from the limit and the request (its bound, its real use), never
copied from a run. Admission has no clock parameter: the ``now_ms`` its module (and the memory
counters' module) calls is replaced by a settable clock, so period rollovers are exact and no
case depends on the time it runs at.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal
from math import ceil
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest

from tokenabacus.api.call import CHAT, Call
from tokenabacus.billing.prices import PriceVersion
from tokenabacus.calendar import DAY_MS, period_bounds, wall_ms
from tokenabacus.config import ModelPolicy, QuotaDecl
from tokenabacus.governance import admission as admission_module
from tokenabacus.governance import counters as counters_module
from tokenabacus.governance.access import ModelAccess, networks
from tokenabacus.governance.admission import Admission, SeedFn, Ticket, duration
from tokenabacus.governance.counters import MemoryCounters
from tokenabacus.governance.errors import Forbidden, QueueTimeout, QuotaExceeded, RateLimited, Refused
from tokenabacus.governance.keys import ADMIN, MEMBER, VIEWER, Identity
from tokenabacus.governance.quotas import Grant, Limit, LimitSet, config_limits
from tokenabacus.governance.scheduler import FairScheduler
from tokenabacus.governance.seeding import Seeder
from tokenabacus.ledger.record import OK, REJECTED, UsageRecord
from tokenabacus.ledger.store import Store
from tokenabacus.ledger.unwritten import Unwritten
from tokenabacus.metering.bounds import TEMPLATE_ALLOWANCE
from tokenabacus.money import format_money

TZ = ZoneInfo("Asia/Shanghai")
# 23:59:30 on Monday 30 November 2026 in Beijing (15:59:30 UTC): the minute, the local day and the
# month all end 30 s later at Beijing midnight (a UTC cut would be 8 hours off); the week a week later.
START = wall_ms(datetime(2026, 11, 30, 23, 59, 30), TZ)
MODEL, OTHER_MODEL = "m1", "m2"
SAY = [{"role": "user", "content": "Say hi"}]
PROMPT = 20  # what the tokenizer counts for the prompt (count_prompt's answer)
MAX_TOKENS = 10  # the request's max_tokens
COMPLETION = 4  # what it really generates (settled)
DEFAULT_MAX = 16  # governance.default_max_tokens
CUR = "CNY"
PRICE = PriceVersion("pv1", MODEL, 0, CUR, input=2_000_000, cached=None, output=6_000_000)  # micros per 1M


def cost_of(prompt: int, completion: int) -> int:
    """Micros for tokens at PRICE, rounded up (admission's bound rounds the same way)."""
    return -(-(prompt * PRICE.input + completion * PRICE.output) // 1_000_000)


# The per-request figures each metric reserves (the bound) and settles (the real use).
BOUND = {"requests": 1, "tokens": PROMPT + MAX_TOKENS, "cost": cost_of(PROMPT, MAX_TOKENS)}
REAL = {"requests": 1, "tokens": PROMPT + COMPLETION, "cost": cost_of(PROMPT, COMPLETION)}


# -- The seam: every call into Admission goes through build / admit / settle ----------------------
# (admit is to return a decision carrying the max_tokens it imposes: adapting is an edit here.)


@dataclass
class Admitted:
    request_id: str
    ticket: Ticket | None
    imposed: int | None  # the max_tokens admission put on a request that had none (None: nothing)


_ids = itertools.count()


def build(
    limits: Sequence[Limit] = (),
    grants: Sequence[Grant] = (),
    access: dict[str, ModelAccess] | None = None,
    schedulers: dict[str, FairScheduler] | None = None,
    seed: SeedFn | None = None,
    collecting: dict[str, dict[str, int]] | None = None,
    counters: MemoryCounters | None = None,
) -> Admission:
    """An Admission over in-memory counters with these limits in force, as the runtime builds it."""
    adm = Admission(
        counters or MemoryCounters(),
        TZ,
        DEFAULT_MAX,
        access or {},
        schedulers or {},
        price_at=lambda _model, _at: PRICE,
        seed=seed,
        collecting=collecting,
    )
    adm.limits = LimitSet(list(limits), list(grants), TZ)
    return adm


async def admit(
    adm: Admission,
    ident: Identity,
    model: str = MODEL,
    *,
    ip: str | None = "10.1.2.3",
    prompt: int | None = PROMPT,
    **body: object,
) -> Admitted:
    """One request through Admission.admit. ``body`` adds to (or, as None, removes from) the
    default body: a chat call with max_tokens=MAX_TOKENS."""
    fields = {"model": model, "messages": SAY, "max_tokens": MAX_TOKENS, **body}
    call = Call(CHAT, {k: v for k, v in fields.items() if v is not None})
    had = call.max_tokens

    async def count() -> int | None:
        return prompt

    rid = f"req-{next(_ids)}"
    ticket = await adm.admit(rid, ident, model, ip, call, count)
    return Admitted(rid, ticket, call.max_tokens if had is None else None)


async def settle(adm: Admission, admitted: Admitted | None, rec: UsageRecord) -> None:
    """The request's single exit through Admission.settle (awaited when the counters need I/O)."""
    pending: Awaitable[None] | None = adm.settle(rec, admitted.ticket if admitted else None)
    if pending is not None:
        await pending


# -- Helpers ---------------------------------------------------------------------------------------


class Clock:
    def __init__(self, at: int) -> None:
        self.at = at

    def __call__(self) -> int:
        return self.at


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock(START)
    monkeypatch.setattr(admission_module, "now_ms", c)
    monkeypatch.setattr(counters_module, "now_ms", c)  # reservation leases
    return c


def run(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(scenario())


def identity(role: str = MEMBER, **kw: object) -> Identity:
    who: dict = {"key_id": "k1", "user": "u1", "project": "p1", "department": "d1", **kw}
    if role == VIEWER:
        who.setdefault("scope_kind", "project")
        who.setdefault("scope_value", who["project"])
    return Identity(role=role, **who)


def record(a: Admitted, ident: Identity, at: int, model: str = MODEL, status: str = OK) -> UsageRecord:
    """What the request really used, as its ledger record says."""
    billed = status != REJECTED
    return UsageRecord(
        a.request_id,
        at,
        model=model,
        status=status,
        key_id=ident.key_id,
        user=ident.user,
        project=ident.project,
        department=ident.department,
        prompt_tokens=PROMPT if billed else None,
        completion_tokens=COMPLETION if billed else None,
        total_tokens=PROMPT + COMPLETION if billed else None,
        cost_micros=cost_of(PROMPT, COMPLETION) if billed else None,
        currency=CUR if billed else None,
    )


def metric_name(metric: str) -> str:
    return f"cost:{CUR}" if metric == "cost" else metric


def quota(scope: str, metric: str, amount: int, period: str, **where: object) -> Limit:
    """A limit as the config file declares it (QuotaDecl -> config_limits)."""
    scopes: dict[str, dict[str, object]] = {
        "key": {"key": "k1"},
        "user": {"user": "u1"},
        "project": {"project": "p1"},
        "department": {"department": "d1"},
        "model": {"global": True, "model": MODEL},
        "global": {"global": True},
    }
    scoped = scopes[scope]
    what: dict = {metric: amount}
    if metric == "cost":
        what = {"cost": str(Decimal(amount).scaleb(-6)), "currency": CUR}
    (lim,) = config_limits([QuotaDecl.model_validate({**scoped, **where, **what, "period": period})])
    assert lim.limit == amount and lim.metric == metric_name(metric)
    return lim


async def usage(adm: Admission, lim: Limit, at: int) -> tuple[int, int]:
    """(used, reserved) of the limit's counter for the period holding ``at``."""
    start, _ = period_bounds(lim.period, at, TZ)
    ((used, reserved),) = await adm.counters.usage([lim.counter_key(start)])
    return used, reserved


def label(lim: Limit) -> str:
    who = "all callers" if lim.scope_kind == "global" else f"{lim.scope_kind} '{lim.scope_value}'"
    return who + (f" on model '{lim.model}'" if lim.model else "")


def check_refusal(err: Refused, lim: Limit, *, limit: int, used: int, reserved: int, amount: int, now: int) -> None:
    """The refusal a request gets: its kind, code, headers and message, from the limit's state."""
    rate = lim.period == "minute"
    assert type(err) is (RateLimited if rate else QuotaExceeded)
    assert err.code == f"{'rate_limit_exceeded' if rate else 'quota_exceeded'}:{lim.quota_id}"
    suffix = "cost" if lim.metric.startswith("cost:") else lim.metric
    left = max(0, limit - used - reserved)
    _, end = period_bounds(lim.period, now, TZ)
    h = err.headers
    assert h[f"x-ratelimit-limit-{suffix}"] == str(limit)
    assert h[f"x-ratelimit-remaining-{suffix}"] == str(left)
    assert h[f"x-ratelimit-reset-{suffix}"] == ("never" if lim.period == "total" else duration(end - now))
    if rate:
        assert h["retry-after"] == str(max(1, ceil((end - now) / 1000)))
    else:
        assert "retry-after" not in h

    def show(n: int) -> str:
        return (format_money(n, CUR) or "") if suffix == "cost" else f"{n:,}"

    per = {"minute": "per minute", "total": "in total"}.get(lim.period, f"per {lim.period}")
    reset = (
        "It does not reset."
        if lim.period == "total"
        else f"It resets at {datetime.fromtimestamp(end / 1000, TZ).isoformat(timespec='seconds')}."
    )
    for part in (
        label(lim),
        f"{show(limit)}{'' if suffix == 'cost' else ' ' + suffix} {per}",
        f"{show(used)} used",
        f"{show(reserved)} reserved",
        f"{show(left)} left",
        f"needs up to {show(amount)}",
        reset,
    ):
        assert part in err.message, (part, err.message)


def fits(used: int, limit: int, bound: int, real: int) -> tuple[int, int]:
    """How many requests of ``bound`` still fit one after another, each settling ``real``, and
    the use they leave."""
    n = 0
    while used + bound <= limit:
        used += real
        n += 1
    return n, used


# -- The matrix: role x scope x metric x period ----------------------------------------------------

ROLES = (ADMIN, MEMBER, VIEWER)
SCOPES = ("key", "user", "project", "department", "model", "global")
METRICS = ("requests", "tokens", "cost")
PERIODS = ("minute", "day", "week", "month", "total")
# Every scope x metric x period; the role turns with the index, so each role meets every scope,
# metric and period (a limit binds admins and viewers as it binds members).
MATRIX = [
    (scope, metric, period, ROLES[i % len(ROLES)])
    for i, (scope, metric, period) in enumerate(itertools.product(SCOPES, METRICS, PERIODS))
]
# Who differs from the caller only in what the scope looks at (global: in everything).
NEIGHBOUR: dict[str, dict[str, Any]] = {
    "key": {"key_id": "k2"},
    "user": {"user": "u2"},
    "project": {"project": "p2"},
    "department": {"department": "d2"},
    "model": {},  # the same caller on another model
    "global": {"key_id": "k2", "user": "u2", "project": "p2", "department": "d2"},
}


@pytest.mark.parametrize("scope,metric,period,role", MATRIX)
def test_a_limit_admits_refuses_settles_and_resets(clock: Clock, scope: str, metric: str, period: str, role: str):
    bound, real = BOUND[metric], REAL[metric]
    limit = 3 * bound  # three requests in flight at once fit, a fourth does not
    lim = quota(scope, metric, limit, period)
    me = identity(role)
    neighbour = replace(identity(role), **NEIGHBOUR[scope])
    neighbour_model = OTHER_MODEL if scope == "model" else MODEL
    refusal = RateLimited if period == "minute" else QuotaExceeded

    async def scenario() -> None:
        adm = build([lim])
        held = [await admit(adm, me) for _ in range(3)]
        assert all(a.ticket is not None and a.ticket.held for a in held)
        assert await usage(adm, lim, clock.at) == (0, 3 * bound)
        # What is in flight counts: a fourth request is refused, and takes nothing.
        with pytest.raises(refusal) as info:
            await admit(adm, me)
        check_refusal(info.value, lim, limit=limit, used=0, reserved=3 * bound, amount=bound, now=clock.at)
        assert await usage(adm, lim, clock.at) == (0, 3 * bound)

        # Settle releases each reservation and commits the real use.
        for a in held:
            await settle(adm, a, record(a, me, clock.at))
        used = 3 * real
        assert await usage(adm, lim, clock.at) == (used, 0)

        # Requests fit one after another while their bound does, then the limit refuses.
        more, used_after = fits(used, limit, bound, real)
        for _ in range(more):
            a = await admit(adm, me)
            await settle(adm, a, record(a, me, clock.at))
        assert await usage(adm, lim, clock.at) == (used_after, 0)
        with pytest.raises(refusal) as info:
            await admit(adm, me)
        check_refusal(info.value, lim, limit=limit, used=used_after, reserved=0, amount=bound, now=clock.at)
        # The refusal's record (rejected, nothing held) adds nothing.
        await settle(adm, None, record(Admitted("refused", None, None), me, clock.at, status=REJECTED))
        assert await usage(adm, lim, clock.at) == (used_after, 0)

        # The scope: a caller outside it is not limited, and its use does not count here.
        if scope == "global":
            with pytest.raises(refusal):
                await admit(adm, neighbour, neighbour_model)
        else:
            other = await admit(adm, neighbour, neighbour_model)
            await settle(adm, other, record(other, neighbour, clock.at, neighbour_model))
            assert await usage(adm, lim, clock.at) == (used_after, 0)

        # The period: still spent at its last millisecond, free at the next one ("total" never is).
        _, end = period_bounds(period, clock.at, TZ)
        if period == "total":
            clock.at += 400 * DAY_MS
        else:
            clock.at = end - 1
            with pytest.raises(refusal):
                await admit(adm, me)
            clock.at = end
            fresh = await admit(adm, me)
            assert fresh.ticket is not None and await usage(adm, lim, clock.at) == (0, bound)
            return
        with pytest.raises(refusal):
            await admit(adm, me)

    run(scenario)


def test_the_matrix_covers_every_role_with_every_scope_metric_and_period():
    for i, dim in ((0, SCOPES), (1, METRICS), (2, PERIODS)):
        assert {(case[i], case[3]) for case in MATRIX} == set(itertools.product(dim, ROLES))


def test_the_clock_is_at_a_local_midnight_edge():
    """The matrix's rollovers cross Beijing midnight, 16:00 UTC: a cut in the wrong zone fails them."""
    for period in ("minute", "day", "month"):
        assert period_bounds(period, START, TZ)[1] == START + 30_000
    assert period_bounds("day", START, TZ) != period_bounds("day", START, UTC)


# -- Model access and IP policy, by role -----------------------------------------------------------

OFFICE, LAB = "10.0.0.0/8", "192.168.0.0/16"
# name -> (model policy, key allowlist, the refusal's code for a member, whether an admin is exempt)
ACCESS: dict[str, tuple[dict[str, Any], list[str] | None, str | None, bool]] = {
    "open": ({}, None, None, False),
    "own-project": ({"allow": {"projects": ["p1"]}}, None, None, False),
    "own-department": ({"allow": {"departments": ["d1"]}}, None, None, False),
    "own-key": ({"allow": {"keys": ["k1"]}}, None, None, False),
    "other-project": ({"allow": {"projects": ["p9"]}}, None, "model_not_allowed", True),
    "other-user-hidden": ({"allow": {"users": ["u9"]}}, None, "model_not_allowed", True),
    "model-from-office": ({"allow_ips": [OFFICE]}, None, None, False),
    "model-from-lab": ({"allow_ips": [LAB]}, None, "ip_not_allowed", False),
    "key-from-office": ({}, [OFFICE], None, False),
    "key-from-lab": ({}, [LAB], "ip_not_allowed", False),
}


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("case", sorted(ACCESS))
def test_model_access_and_ip_policy(clock: Clock, case: str, role: str):
    policy, key_cidrs, code, admin_exempt = ACCESS[case]
    hide = case.endswith("hidden")
    access = {MODEL: ModelAccess.of(MODEL, ModelPolicy.model_validate(policy), hide)} if policy else {}
    me = replace(identity(role), allow_ips=networks(key_cidrs))
    expected = None if (admin_exempt and role == ADMIN) else code
    lim = quota("global", "requests", 100, "day")  # so a refusal could be seen holding something

    async def scenario() -> None:
        adm = build([lim], access=access)
        assert adm.visible(me, MODEL) is (expected != "model_not_allowed")
        if expected is None:
            a = await admit(adm, me, ip="10.1.2.3")
            assert a.ticket is not None and await usage(adm, lim, clock.at) == (0, 1)
            return
        with pytest.raises(Forbidden) as info:
            await admit(adm, me, ip="10.1.2.3")
        assert info.value.code == expected and info.value.hide is (hide and expected == "model_not_allowed")
        assert ("10.1.2.3" in info.value.message) is (expected == "ip_not_allowed")
        assert await usage(adm, lim, clock.at) == (0, 0)  # judged before anything is reserved

    run(scenario)


# -- The token bound a request reserves --------------------------------------------------------------


def _unknown_prompt() -> int:
    """A prompt no tokenizer counted: its JSON size plus the template's room (metering/bounds.py)."""
    return len(orjson.dumps(SAY)) + TEMPLATE_ALLOWANCE


# name -> (extra body fields, what count_prompt answers, the tokens reserved, the max_tokens imposed)
BOUNDS: dict[str, tuple[dict[str, Any], int | None, int, int | None]] = {
    "max_tokens": ({}, PROMPT, PROMPT + MAX_TOKENS, None),
    "max_completion_tokens": ({"max_tokens": None, "max_completion_tokens": 7}, PROMPT, PROMPT + 7, None),
    "no max_tokens: the default": ({"max_tokens": None}, PROMPT, PROMPT + DEFAULT_MAX, DEFAULT_MAX),
    "n sequences": ({"n": 3}, PROMPT, PROMPT + 3 * MAX_TOKENS, None),
    "prompt not counted": ({}, None, _unknown_prompt() + MAX_TOKENS, None),
}


@pytest.mark.parametrize("case", sorted(BOUNDS))
def test_a_token_limit_reserves_the_most_a_request_can_use(clock: Clock, case: str):
    extra, prompt, bound, imposed = BOUNDS[case]
    me = identity()

    async def scenario() -> None:
        exact = quota("user", "tokens", bound, "day")
        adm = build([exact])
        a = await admit(adm, me, prompt=prompt, **extra)
        assert a.imposed == imposed
        assert await usage(adm, exact, clock.at) == (0, bound)
        short = quota("user", "tokens", bound - 1, "day")
        with pytest.raises(QuotaExceeded) as info:
            await admit(build([short]), me, prompt=prompt, **extra)
        check_refusal(info.value, short, limit=bound - 1, used=0, reserved=0, amount=bound, now=clock.at)

    run(scenario)


def test_nothing_is_imposed_or_held_when_no_limit_applies(clock: Clock):
    async def scenario() -> None:
        adm = build([quota("user", "tokens", 10, "day", user="someone-else")])
        a = await admit(adm, identity(), max_tokens=None)
        assert a.ticket is None and a.imposed is None

    run(scenario)


# -- Grants raise a limit for the period they were approved in ---------------------------------------


@pytest.mark.parametrize("period", PERIODS)
def test_a_grant_raises_the_limit_for_its_period_only(clock: Clock, period: str):
    limit, granted = 1, 2
    lim = quota("project", "requests", limit, period)
    grant = Grant("project", "p1", None, "requests", granted, clock.at)
    me = identity()
    # A rate limit is never raised; "total" is one period, so the grant stays.
    raised = limit + (0 if period == "minute" else granted)

    async def scenario() -> None:
        adm = build([lim], [grant])
        for _ in range(raised):
            a = await admit(adm, me)
            await settle(adm, a, record(a, me, clock.at))
        with pytest.raises(RateLimited if period == "minute" else QuotaExceeded) as info:
            await admit(adm, me)
        check_refusal(info.value, lim, limit=raised, used=raised, reserved=0, amount=1, now=clock.at)
        if period == "total":
            return
        clock.at = period_bounds(period, clock.at, TZ)[1]  # the next period: back to the limit
        for _ in range(limit):
            await admit(adm, me)
        with pytest.raises(Refused) as info:
            await admit(adm, me)
        assert info.value.headers["x-ratelimit-limit-requests"] == str(limit)

    run(scenario)


# -- Concurrency: a model's slots -------------------------------------------------------------------


@pytest.mark.parametrize("slots", [1, 2, 3])
def test_a_saturated_model_times_out_waiters_and_they_hold_nothing(clock: Clock, slots: int):
    lim = quota("user", "requests", 100, "day")
    me = identity()

    async def scenario() -> None:
        sched = FairScheduler(slots, queue_timeout_s=0.05, name=MODEL)
        adm = build([lim], schedulers={MODEL: sched})
        running = [await admit(adm, me) for _ in range(slots)]
        assert all(a.ticket is not None and a.ticket.slot is not None for a in running)
        with pytest.raises(QueueTimeout):
            await admit(adm, me)
        # The waiter's quota reservation was given back when it gave up.
        assert await usage(adm, lim, clock.at) == (0, slots)
        await settle(adm, running[0], record(running[0], me, clock.at))
        assert await usage(adm, lim, clock.at) == (REAL["requests"], slots - 1)
        nxt = await admit(adm, me)  # the settled request's slot is free again
        assert nxt.ticket is not None and nxt.ticket.slot is not None

    run(scenario)


def test_a_waiter_gets_the_slot_the_running_request_settles(clock: Clock):
    me = identity()

    async def scenario() -> None:
        adm = build(schedulers={MODEL: FairScheduler(1, queue_timeout_s=5, name=MODEL)})
        first = await admit(adm, me)
        waiting = asyncio.ensure_future(admit(adm, me))
        await asyncio.sleep(0)  # the waiter queues (one loop turn, not a wait for time)
        assert not waiting.done()
        await settle(adm, first, record(first, me, clock.at))
        second = await asyncio.wait_for(waiting, 1)
        assert second.ticket is not None and second.ticket.slot is not None
        assert first.ticket is not None and first.ticket.slot is not None and first.ticket.slot.released

    run(scenario)


# -- Counters seeded from the ledger (a restarted gateway) ------------------------------------------


@pytest.fixture(scope="module")
def ledger(tmp_path_factory: pytest.TempPathFactory):
    store = Store(f"sqlite:///{tmp_path_factory.mktemp('admission') / 'ledger.db'}")
    yield store
    store.close()


def _use(metric: str, rec: UsageRecord) -> int:
    if rec.status == REJECTED:
        return 0
    return {"requests": 1, "tokens": rec.total_tokens or 0, "cost": rec.cost_micros or 0}[metric]


@pytest.mark.parametrize("metric,period", list(itertools.product(METRICS, PERIODS)))
def test_counters_start_from_what_the_ledger_and_the_spool_hold(clock: Clock, ledger: Store, metric: str, period: str):
    """Fresh counters (a restart) are seeded with the ledger's use in the period plus records still
    on their way to it; a rate limit starts from zero."""
    me = identity(user=f"u-{metric}-{period}")
    start, _ = period_bounds(period, clock.at, TZ)

    def past(name: str, at: int, status: str = OK) -> UsageRecord:
        return record(Admitted(f"{me.user}-{name}", None, None), me, at, status=status)

    in_db = [
        past("a", clock.at - 1000),
        past("b", clock.at - 2000),
        past("refused", clock.at - 3000, REJECTED),
        past("last-year", clock.at - 400 * DAY_MS),  # counts only in "total"
    ]
    ledger.usage.insert([r.to_dict() for r in in_db])
    unwritten = Unwritten()
    on_the_way = past("spooled", clock.at - 500)
    unwritten.add(on_the_way)
    seeded = 0 if period == "minute" else sum(_use(metric, r) for r in [*in_db, on_the_way] if r.timestamp >= start)
    bound, real = BOUND[metric], REAL[metric]
    limit = 4 * real + bound
    lim = quota("user", metric, limit, period, user=me.user)
    n, used = fits(seeded, limit, bound, real)
    assert n >= 1

    async def scenario() -> None:
        counters = MemoryCounters()
        seeder = Seeder(counters, ledger.db, unwritten)
        adm = build([lim], seed=seeder.ensure, collecting=seeder.collecting, counters=counters)
        for i in range(n):
            a = await admit(adm, me)
            if i == 0:
                assert await usage(adm, lim, clock.at) == (seeded, bound)
            await settle(adm, a, record(a, me, clock.at))
        with pytest.raises(RateLimited if period == "minute" else QuotaExceeded) as info:
            await admit(adm, me)
        check_refusal(info.value, lim, limit=limit, used=used, reserved=0, amount=bound, now=clock.at)

    run(scenario)


# -- OpenAI's reset format ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "ms,text",
    [(1_500, "1.5s"), (30_000, "30s"), (360_000, "6m0s"), ((86_400 + 7_384) * 1000, "1d2h3m4s")],
)
def test_reset_durations_are_openais_format(ms: int, text: str):
    assert duration(ms) == text
