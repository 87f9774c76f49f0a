"""The demo's month: its organization, models and prices, and the events on top of everyday
traffic that the board shows (a campaign spike, script bursts, an upstream incident)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

import numpy as np

from tokenabacus.ledger.record import (
    ERROR,
    SOURCE_ENGINE,
    UsageRecord,
    clear_usage,
)

if TYPE_CHECKING:
    pass

from tokenabacus.calendar import HOUR_MS, MINUTE_MS
from tokenabacus.demo.traffic import STATUSES, Draws, ModelShape, Population, Profile, build

# The demo's organization, models and prices -------------------------------------------------------
DEPARTMENTS = ("marketing", "sales", "rd", "finance", "support", "hr")
PROJECTS = (
    ("campaign-618", "marketing"),
    ("product-copy", "marketing"),
    ("live-stream-scripts", "marketing"),
    ("crm-assistant", "sales"),
    ("bid-writer", "sales"),
    ("sales-coach", "sales"),
    ("code-copilot", "rd"),
    ("doc-search", "rd"),
    ("test-gen", "rd"),
    ("invoice-ocr", "finance"),
    ("contract-review", "finance"),
    ("ticket-triage", "support"),
    ("customer-faq-bot", "support"),
    ("recruit-screening", "hr"),
    ("training-qa", "hr"),
)
SURNAMES = "zhang wang li zhao liu chen yang huang zhou wu xu sun ma zhu hu guo he lin gao luo".split()
GIVEN = "wei fang na min jing lei yang jun yong yan jie tao ming chao xiu hui qiang ping gang hong".split()
N_USERS = 60
UNPRICED = "internal-finetune-v2"
AGENTS = (
    "OpenAI/Python 1.54.4",
    "OpenAI/Python 1.52.0",
    "OpenAI/JS 4.73.0",
    "langchain-openai/0.2.10",
    "Dify/0.11.2",
    "python-httpx/0.27.2",
)
# Projects whose users mostly use one model.
AFFINITY = {
    "invoice-ocr": "qwen-vl-plus",
    "code-copilot": "deepseek-v3",
    "test-gen": "deepseek-v3",
    "doc-search": "llama-3.1-8b",
}
# Each department's share of the traffic (users keep their Zipf skew within it).
DEPARTMENT_SHARE = {"rd": 0.3, "support": 0.2, "marketing": 0.18, "sales": 0.14, "finance": 0.1, "hr": 0.08}
SPIKE_PROJECT = "campaign-618"  # a campaign launch: one day at several times its usual use
INCIDENT_MODEL = "deepseek-v3"  # an upstream outage: a quarter hour of timeouts and retries
BATCH_AGENT, BATCH_IP = "python-requests/2.32.3", "10.20.9.201"  # a script that loops


@dataclass(frozen=True)
class DemoPrice:
    """A price version the demo sets (per 1k tokens) when the book has none for the model."""

    model: str
    input: str
    cached: str | None
    output: str
    start: float = 0.0  # where in the window it starts: 0 the first day, 0.6 part-way through
    note: str | None = None


def demo_models(embedded: str) -> tuple[ModelShape, ...]:
    return (
        ModelShape("qwen2.5-7b-instruct", 700, 260, 1400),
        ModelShape("deepseek-v3", 1100, 420, 3600),
        ModelShape("qwen-vl-plus", 1300, 180, 2600),
        ModelShape("llama-3.1-8b", 450, 180, 900),
        ModelShape(UNPRICED, 800, 300, 2000),
        ModelShape(embedded, 300, 120, 700, engine="embedded", usage_source=SOURCE_ENGINE, upstream_usage=False),
    )


MODEL_SHARE = (0.34, 0.24, 0.12, 0.12, 0.1, 0.08)  # as demo_models


def demo_prices(embedded: str) -> tuple[DemoPrice, ...]:
    return (
        DemoPrice("qwen2.5-7b-instruct", "0.8", "0.2", "2.4"),
        DemoPrice("deepseek-v3", "2", "0.5", "8"),
        DemoPrice("deepseek-v3", "1", "0.25", "4", start=0.6, note="demo: the provider's price cut"),
        DemoPrice("qwen-vl-plus", "1.5", None, "4.5"),
        DemoPrice("llama-3.1-8b", "0.3", None, "0.6"),
        DemoPrice(embedded, "0.05", None, "0.1"),
    )


def user_names(rng: np.random.Generator, n: int = N_USERS) -> tuple[str, ...]:
    pairs = [f"{s}.{g}" for s in SURNAMES for g in GIVEN]
    return tuple(pairs[int(i)] for i in rng.choice(len(pairs), n, replace=False))


def demo_profile(zone: ZoneInfo, until_ms: int, days: int, users: tuple[str, ...], embedded: str) -> Profile:
    """The last ``days`` days up to ``until_ms`` (today so far included) in ``zone``."""
    today = datetime.fromtimestamp(until_ms / 1000, zone).date()
    return Profile(
        departments=DEPARTMENTS,
        projects=tuple(p for p, _ in PROJECTS),
        users=users,
        models=demo_models(embedded),
        first_day=today - timedelta(days=days - 1),
        days=days,
        zone=zone,
        until_ms=until_ms,
        status_p=(0.95, 0.03, 0.012, 0.008),
        project_departments=tuple(DEPARTMENTS.index(d) for _, d in PROJECTS),
        model_share=MODEL_SHARE,
        second_key_share=0.3,
        agents=AGENTS,
        error_codes=("upstream_error", "upstream_timeout", "upstream_unreachable", "upstream_rate_limited"),
        cancel_codes=("client_disconnected",),
        refusal_codes=("rate_limit_exceeded", "quota_exceeded", "context_length_exceeded", "model_not_allowed"),
        drift_every=1000,
        drift_at=1,
    )


def demo_population(profile: Profile, rng: np.random.Generator) -> Population:
    """The population, with every project staffed, departments at their shares of the traffic,
    and some projects on their model of choice."""
    pop = Population(profile, rng)
    n_proj = len(profile.projects)
    pop.user_project[:n_proj] = rng.permutation(n_proj)
    dept = np.array([pop.department_of(u) for u in range(len(profile.users))])
    for d, name in enumerate(profile.departments):
        pop.user_w[dept == d] *= DEPARTMENT_SHARE[name] / pop.user_w[dept == d].sum()
    pop.user_w /= pop.user_w.sum()
    names = [m.name for m in profile.models]
    for u in range(len(profile.users)):
        model = AFFINITY.get(profile.projects[int(pop.user_project[u])])
        if model is not None:
            pop.user_model[u] = names.index(model)
    return pop


# Traffic on top of the everyday: the story the board tells ----------------------------------------
@dataclass(frozen=True)
class Moments:
    """When the demo's events happen (UTC ms)."""

    bursts: tuple[tuple[int, int, int, int], ...]  # (start, minutes, per minute, user)
    spike_day: int  # day number
    incident: int  # start of the quarter hour


def _local_ms(profile: Profile, day: int, hour: int, minute: int = 0) -> int:
    return profile.day_start_ms(day) + hour * HOUR_MS + minute * MINUTE_MS


def _weekday_before(profile: Profile, day: int) -> int:
    while day > 0 and (profile.first_day + timedelta(days=day)).weekday() >= 5:
        day -= 1
    return day


def plan(profile: Profile, pop: Population) -> Moments:
    """Two bursts (the heaviest users' scripts looping: one today, one a week before), a campaign
    launch on a recent weekday, and an upstream outage."""
    assert profile.until_ms is not None
    last = profile.days - 1
    heavy = [int(u) for u in np.argsort(-pop.user_w)[:2]]
    recent = max(profile.day_start_ms(0), profile.until_ms - 40 * MINUTE_MS)
    earlier = _local_ms(profile, max(0, last - 8), 15, 10)
    return Moments(
        bursts=((recent, 4, 90, heavy[0]), (earlier, 3, 70, heavy[1])),
        spike_day=_weekday_before(profile, max(0, last - 4)),
        incident=_local_ms(profile, _weekday_before(profile, max(0, last - 11)), 14, 20),
    )


def _draws(
    xr: np.random.Generator,
    ts: np.ndarray,
    users: np.ndarray,
    models: np.ndarray,
    status: np.ndarray,
    key_no: np.ndarray,
    size: float = 0.0,
) -> Draws:
    n = len(ts)
    sizes = (xr.lognormal(size, 0.6, n), xr.lognormal(size, 0.7, n), xr.lognormal(0, 0.5, n))
    return Draws(ts, users, models, status, key_no, *sizes, np.zeros(n, dtype=np.int64))


def _full(n: int, value: int) -> np.ndarray:
    return np.full(n, value, dtype=np.int64)


def burst(
    profile: Profile, pop: Population, xr: np.random.Generator, ids: Iterator[str], at: tuple[int, int, int, int]
) -> list[UsageRecord]:
    """A script on one key sending small requests as fast as it can for a few minutes."""
    start, minutes, per_minute, u = at
    n = minutes * per_minute
    ts = np.sort(start + xr.integers(0, minutes * MINUTE_MS, n))
    key = len(pop.key_ids[u]) - 1  # the user's last key: the one the script uses
    d = _draws(xr, ts, _full(n, u), _full(n, int(pop.user_model[u])), _full(n, 0), _full(n, key), size=-1.0)
    out = [build(profile, pop, d, i, next(ids)) for i in range(n)]
    for rec in out:
        rec.user_agent, rec.client_ip, rec.stream = BATCH_AGENT, BATCH_IP, False
    return out


def spike(
    profile: Profile, pop: Population, xr: np.random.Generator, ids: Iterator[str], day: int, n: int
) -> list[UsageRecord]:
    """A campaign launch: the project's users send long briefs all working day."""
    members = np.flatnonzero(pop.user_project == profile.projects.index(SPIKE_PROJECT))
    w = pop.user_w[members] / pop.user_w[members].sum()
    hours = xr.integers(9, 18, n)
    ts = np.sort(profile.day_start_ms(day) + hours * HOUR_MS + xr.integers(0, HOUR_MS, n))
    users = xr.choice(members, n, p=w)
    status = xr.choice(4, n, p=profile.status_p)
    d = _draws(xr, ts, users, pop.user_model[users], status, _full(n, 0), size=0.8)
    return [build(profile, pop, d, i, next(ids)) for i in range(n)]


def incident(
    profile: Profile, pop: Population, xr: np.random.Generator, ids: Iterator[str], start: int, n: int = 40
) -> list[UsageRecord]:
    """A quarter hour of upstream timeouts on one model (and the clients' retries): errors that
    bill nothing."""
    ts = np.sort(start + xr.integers(0, 15 * MINUTE_MS, n))
    users = xr.choice(len(profile.users), n, p=pop.user_w)
    model = [m.name for m in profile.models].index(INCIDENT_MODEL)
    d = _draws(xr, ts, users, _full(n, model), _full(n, STATUSES.index(ERROR)), _full(n, 0))
    out = [build(profile, pop, d, i, next(ids)) for i in range(n)]
    for i, rec in enumerate(out):
        clear_usage(rec)
        rec.upstream_prompt_tokens = rec.upstream_completion_tokens = rec.ttft_ms = None
        rec.error_code, rec.duration_ms = "upstream_timeout", 30_000 + (i * 7919) % 30_000
    return out


def spike_size(profile: Profile, pop: Population, total: int) -> int:
    """About four times the project's usual day."""
    members = pop.user_project == profile.projects.index(SPIKE_PROJECT)
    usual = total / profile.days * float(pop.user_w[members].sum())
    return int(min(max(80, 4 * usual), total * 0.08))


def extras(
    profile: Profile, pop: Population, moments: Moments, total: int, xr: np.random.Generator, ids: Iterator[str]
) -> dict[int, list[UsageRecord]]:
    """The events' records by day number."""
    recs = [r for at in moments.bursts for r in burst(profile, pop, xr, ids, at)]
    recs += spike(profile, pop, xr, ids, moments.spike_day, spike_size(profile, pop, total))
    recs += incident(profile, pop, xr, ids, moments.incident)
    by_day: dict[int, list[UsageRecord]] = {}
    for rec in recs:
        local = datetime.fromtimestamp(rec.timestamp / 1000, profile.zone).date()
        by_day.setdefault((local - profile.first_day).days, []).append(rec)
    return by_day
