"""Seeding a sandbox ledger with the demo month: organization, keys, prices, records through the
writer, quotas with pending requests, and the alerts the real engine fires over them."""

from __future__ import annotations

import asyncio
import math
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

import numpy as np

from tokenabacus.ledger.record import (
    UsageRecord,
    now_ms,
)

if TYPE_CHECKING:
    from tokenabacus.billing.prices import PriceBook
    from tokenabacus.config import Settings
    from tokenabacus.config.alerts import Rule
    from tokenabacus.ledger.store import Store

from tokenabacus.calendar import MINUTE_MS
from tokenabacus.demo.story import (
    SPIKE_PROJECT,
    DemoPrice,
    Moments,
    _local_ms,
    demo_population,
    demo_prices,
    demo_profile,
    extras,
    plan,
    user_names,
)
from tokenabacus.demo.traffic import Population, Profile, charged, day_records, ingest, request_ids


# Seeding a ledger -----------------------------------------------------------------------------------
@dataclass
class Tally:
    """What was written: records, tokens and cost by currency."""

    records: int = 0
    tokens: int = 0
    unpriced: int = 0
    cost: dict[str, int] = field(default_factory=dict)

    def add(self, recs: Iterable[UsageRecord]) -> None:
        for r in recs:
            self.records += 1
            self.tokens += r.total_tokens or 0
            if r.currency is not None and r.cost_micros is not None:
                self.cost[r.currency] = self.cost.get(r.currency, 0) + r.cost_micros
            elif r.total_tokens is not None:
                self.unpriced += 1


@dataclass
class Seeded:
    """What `demo seed` did, for its summary."""

    tally: Tally
    first_ms: int
    until_ms: int
    departments: int
    projects: int
    users: int
    keys: int
    models: int
    quotas: int
    pending: int
    alerts: int
    seconds: float = 0.0
    member_key: tuple[str, str] | None = None  # (the key, who it belongs to), with print_keys only
    viewer_key: tuple[str, str] | None = None


@dataclass(frozen=True)
class Options:
    """What to seed: how many records over how many days up to ``now_ms`` (None: now), drawn
    from ``seed``, with the working day in ``zone``."""

    records: int = 40_000
    days: int = 30
    seed: int = 2026
    zone: ZoneInfo = ZoneInfo("Asia/Shanghai")
    print_keys: bool = False
    now_ms: int | None = None


def seed_org(store: Store, profile: Profile, pop: Population) -> None:
    """Departments, projects and users; those that exist already (a --force run) are kept."""
    from tokenabacus.ledger.org import Conflict

    def add(fn: Callable[..., object], *args: str | None) -> None:
        try:
            fn(*args)
        except Conflict:
            pass

    for d in profile.departments:
        add(store.org.add_department, d)
    for p, d in zip(profile.projects, pop.project_dept, strict=True):
        add(store.org.add_project, p, profile.departments[int(d)])
    for u, name in enumerate(profile.users):
        add(store.org.add_user, name, None, profile.projects[int(pop.user_project[u])])


def seed_keys(store: Store, profile: Profile, pop: Population) -> dict[str, str]:
    """Each user's member keys (one or two), their ids put in ``pop.key_ids``; the plaintext of
    each user's first key, by user (shown only with --print-keys)."""
    from tokenabacus.governance.keys import create_key

    first: dict[str, str] = {}
    names = ("workstation", "batch-script")
    for u, user in enumerate(profile.users):
        project = profile.projects[int(pop.user_project[u])]
        department = profile.departments[pop.department_of(u)]
        ids = []
        for k in range(len(pop.key_ids[u])):
            key, row = create_key(store, user, project, department, f"demo {names[k]}")
            ids.append(row["key_id"])
            first.setdefault(user, key)
        pop.key_ids[u] = ids
    return first


def seed_prices(store: Store, book: PriceBook, profile: Profile, prices: Iterable[DemoPrice]) -> None:
    """The demo's prices, for models the book has no price for (an operator's prices stay)."""
    from tokenabacus.money import check_currency, parse_price

    bare = {p.model for p in prices if not book.history(p.model)}
    for p in prices:
        if p.model not in bare:
            continue
        start = profile.day_start_ms(int(profile.days * p.start))
        cached = None if p.cached is None else parse_price(p.cached, "1k")
        inp, out = parse_price(p.input, "1k"), parse_price(p.output, "1k")
        store.prices.add(p.model, check_currency("CNY"), inp, cached, out, start, "demo", p.note or "demo price")


def generate(
    store: Store, profile: Profile, pop: Population, moments: Moments, book: PriceBook, total: int, seed: int
) -> Tally:
    """The month's records, events included, written through the ledger's writer."""
    ids = request_ids()
    tally = Tally()
    more = extras(profile, pop, moments, total, np.random.default_rng([seed, 7]), ids)
    base = total - sum(len(v) for v in more.values())
    rng = np.random.default_rng([seed, 1])

    def days() -> Iterator[list[dict]]:
        for day, recs in day_records(profile, pop, base, rng, ids):
            recs += more.pop(day, [])
            recs.sort(key=lambda r: r.timestamp)
            out = charged(recs, book)
            tally.add(recs)
            yield out

    with tempfile.TemporaryDirectory(prefix="tokenabacus-demo-") as spool:
        ingest(store, days(), Path(spool))
    return tally


def _round_up(x: float, step: int) -> int:
    return max(step, int(math.ceil(x / step)) * step)


def near_limit(store: Store, project: str, tz: ZoneInfo, now: int) -> tuple[str, int]:
    """(period, limit) of a token limit on ``project`` at about 92% used: the month, or the week
    when more of it falls in this week (early in a month)."""
    from tokenabacus.calendar import period_bounds as bounds
    from tokenabacus.ledger.usage import used_since

    used = {
        p: used_since(store.db, "project", project, None, "tokens", bounds(p, now, tz)[0]) for p in ("month", "week")
    }
    period = max(used, key=lambda p: used[p])
    return period, _round_up(used[period] / 0.92, 10_000)


def seed_quotas(store: Store, settings: Settings, profile: Profile, pop: Population, now: int) -> int:
    """A few limits (one near its limit) and three pending requests to raise them; the number of
    limits set."""
    from tokenabacus.calendar import period_bounds as bounds
    from tokenabacus.ledger.usage import used_since

    tz = ZoneInfo(settings.governance.timezone)
    month, day = bounds("month", now, tz)[0], bounds("day", now, tz)[0]
    period, limit = near_limit(store, SPIKE_PROJECT, tz, now)
    budget = _round_up(2 * used_since(store.db, "department", "marketing", None, "cost:CNY", month), 1000 * 10**6)
    rd_used = used_since(store.db, "department", "rd", None, "tokens", month)
    heavy = [profile.users[int(u)] for u in np.argsort(-pop.user_w)]
    dev = next(u for u in heavy if profile.departments[pop.department_of(profile.users.index(u))] == "rd")
    script_key = pop.key_ids[profile.users.index(heavy[0])][-1]
    q = store.quotas
    q.set("project", SPIKE_PROJECT, None, "tokens", period, limit, "demo")
    q.set("department", "marketing", None, "cost:CNY", "month", budget, "demo")
    q.set("department", "rd", None, "tokens", "month", _round_up(3 * rd_used, 1_000_000), "demo")
    q.set(
        "user",
        dev,
        None,
        "tokens",
        "day",
        _round_up(2 * used_since(store.db, "user", dev, None, "tokens", day), 100_000),
        "demo",
    )
    q.set("key", script_key, None, "requests", "minute", 60, "demo")
    marketer = next(
        u for u in heavy if profile.projects[int(pop.user_project[profile.users.index(u)])] == SPIKE_PROJECT
    )
    q.request(
        "project", SPIKE_PROJECT, None, "tokens", _round_up(limit / 2, 10_000), "618 大促：商品文案批量生成", marketer
    )
    q.request("department", "marketing", None, "cost:CNY", 5000 * 10**6, "直播脚本项目追加预算", marketer)
    q.request("user", dev, None, "tokens", 1_000_000, "代码评审高峰，临时提高每日额度", dev)
    return 5


PENDING_REQUESTS = 3  # what seed_quotas asks for


def alert_moments(profile: Profile, moments: Moments, now: int) -> list[tuple[int, Rule]]:
    """(when, rule): the real engine is run at each event's end, with the rule that sees it."""
    from tokenabacus.config.alerts import BurstRule, ErrorRateRule, QuotaRule, SpikeRule

    burst_rule = BurstRule(type="burst", name="高频调用", by="key_id", requests_per_minute=60, window_minutes=5)
    out: list[tuple[int, Rule]] = [
        (start + (minutes + 1) * MINUTE_MS, burst_rule) for start, minutes, _, _ in moments.bursts
    ]
    spike_rule = SpikeRule(
        type="spike", name="项目突增", scope="project", factor_pct=400, min_tokens=50_000, min_requests=30
    )
    out.append((_local_ms(profile, moments.spike_day, 17, 30), spike_rule))
    out.append((moments.incident + 16 * MINUTE_MS, ErrorRateRule(type="error_rate", name="错误率", max_pct=10)))
    out.append((now, QuotaRule(type="quota", name="配额")))
    return [(at, rule) for at, rule in out if at <= now]


def run_alerts(store: Store, settings: Settings, moments: list[tuple[int, Rule]]) -> int:
    """Run the alert engine once per moment, as it would have run then; it records what fires in
    the alert history. No channel is sent anything. The number of alerts fired."""
    from tokenabacus.alerts.engine import AlertEngine

    async def run() -> int:
        fired = 0
        for at, rule in moments:
            cfg = settings.alerts.model_copy(update={"rules": [rule], "channels": [], "enabled": True})
            engine = AlertEngine(settings.model_copy(update={"alerts": cfg}), store)
            fired += len(await engine.evaluate(at))
        return fired

    return asyncio.run(run())


def print_keys(
    store: Store, profile: Profile, pop: Population, first: dict[str, str]
) -> tuple[tuple[str, str], tuple[str, str]]:
    """A member key of the busiest marketer and a viewer key for marketing."""
    from tokenabacus.governance.keys import VIEWER, create_key

    users = [profile.users[int(u)] for u in np.argsort(-pop.user_w)]
    member = next(u for u in users if profile.departments[pop.department_of(profile.users.index(u))] == "marketing")
    viewer, _ = create_key(
        store, None, None, "marketing", "demo viewer (marketing)", VIEWER, ("department", "marketing")
    )
    return (first[member], f"member key of {member} (marketing)"), (viewer, "viewer key of department marketing")


def seed(store: Store, settings: Settings, opts: Options) -> Seeded:
    """Fill ``store`` with the demo: organization, keys, prices, records, quotas, alerts."""
    from tokenabacus.billing.estimate import price_book
    from tokenabacus.config import DEFAULT_MODEL_NAME, effective_models

    t0 = time.perf_counter()
    now = opts.now_ms if opts.now_ms is not None else now_ms()
    embedded = next((m.name for m in effective_models(settings) if m.engine == "embedded"), DEFAULT_MODEL_NAME)
    rng = np.random.default_rng([opts.seed, 0])
    profile = demo_profile(opts.zone, now, opts.days, user_names(rng), embedded)
    pop = demo_population(profile, rng)
    seed_org(store, profile, pop)
    first = seed_keys(store, profile, pop)
    seed_prices(store, price_book(settings, store), profile, demo_prices(embedded))
    moments = plan(profile, pop)
    tally = generate(store, profile, pop, moments, price_book(settings, store), opts.records, opts.seed)
    quotas = seed_quotas(store, settings, profile, pop, now)
    alerts = run_alerts(store, settings, alert_moments(profile, moments, now))
    member, viewer = print_keys(store, profile, pop, first) if opts.print_keys else (None, None)
    return Seeded(
        tally=tally,
        first_ms=profile.day_start_ms(0),
        until_ms=now,
        departments=len(profile.departments),
        projects=len(profile.projects),
        users=len(profile.users),
        keys=sum(len(k) for k in pop.key_ids) + (viewer is not None),
        models=len(profile.models),
        quotas=quotas,
        pending=PENDING_REQUESTS,
        alerts=alerts,
        seconds=time.perf_counter() - t0,
        member_key=member,
        viewer_key=viewer,
    )
