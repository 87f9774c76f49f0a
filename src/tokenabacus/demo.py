"""Demo data: a realistic month of gateway traffic, written through the real ledger path.

`tokenabacus demo seed` (cli/demo.py) fills a sandbox ledger so that a newcomer sees a full board
at once: an organization (departments, projects, users and their keys), a price book, a month of
usage records, quotas (one near its limit) with pending approval requests, and the alerts the
real alert engine fires over them. benchmarks/reports.py draws its 10 million records from the
same generator.

How the records are made:

- ``Profile`` says who and what: the organization's names, the models and the shape of their
  traffic (prompt and completion medians, latency), the days and the mix of outcomes.
- ``Population`` draws who uses what: Zipf-skewed projects, users and models (a few heavy users
  and models carry most of the traffic; each user mostly sticks to one model) and users' keys.
- ``day_records`` gives each day's requests in time order: business-hour peaks and quiet
  weekends in the profile's time zone, lognormal token counts and latencies, upstreams that
  report usage beside ours (a few disagreeing), errors, cancellations and refusals.
- ``charged`` prices them with a ``PriceBook`` exactly as the gateway's enrich step does, and
  ``ingest`` writes them as spool segments through ``ledger.writer.drain_segments``, the function
  the background writer runs (checks, insert, hourly rollups). No sink sees demo records.

Everything is drawn from one seed: the same seed and end time give the same records, request
and key ids aside (they are random, as the gateway's are).
"""

from __future__ import annotations

import asyncio
import itertools
import math
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

import numpy as np
import orjson

from tokenabacus.ledger.deadletter import DeadLetters
from tokenabacus.ledger.record import (
    CANCELLED,
    ERROR,
    OK,
    REJECTED,
    SOURCE_ENGINE,
    SOURCE_TOKENIZER,
    UsageRecord,
    clear_usage,
    now_ms,
)
from tokenabacus.ledger.writer import drain_segments

if TYPE_CHECKING:
    from tokenabacus.alerts.rules import Rule
    from tokenabacus.billing.prices import PriceBook
    from tokenabacus.config import Settings
    from tokenabacus.ledger.store import Store

HOUR_MS = 3_600_000
MINUTE_MS = 60_000
DAY_MS = 86_400_000
# Requests by local hour of day (business hours, a lunch dip, evening tail) and by weekday.
HOURLY = np.array([2, 1, 1, 1, 1, 2, 4, 9, 16, 22, 24, 20, 12, 18, 23, 24, 21, 16, 10, 8, 7, 6, 4, 3], float)
WEEKDAY = np.array([1.0, 1.05, 1.05, 1.0, 0.9, 0.35, 0.3])
STATUSES = (OK, ERROR, CANCELLED, REJECTED)


# The generator ----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ModelShape:
    """A model and the shape of its traffic."""

    name: str
    prompt_median: int
    completion_median: int
    latency_ms: int  # median duration of a request
    engine: str = "upstream"
    usage_source: str = SOURCE_TOKENIZER
    upstream_usage: bool = True  # its upstream reports usage, kept beside our count


@dataclass(frozen=True)
class Profile:
    """Who and what the records are about, and when."""

    departments: tuple[str, ...]
    projects: tuple[str, ...]
    users: tuple[str, ...]
    models: tuple[ModelShape, ...]
    first_day: date  # local
    days: int
    zone: ZoneInfo
    until_ms: int | None = None  # records stop here (inside the last day); None: whole days
    status_p: tuple[float, float, float, float] = (0.96, 0.018, 0.014, 0.008)  # as STATUSES
    project_departments: tuple[int, ...] | None = None  # each project's department; None: drawn
    model_share: tuple[float, ...] | None = None  # each model's share of traffic; None: drawn (Zipf)
    second_key_share: float = 0.1  # users with two keys
    agents: tuple[str, ...] = ("OpenAI/Python 1.52.0",)  # user agents, one per user in turn
    error_codes: tuple[str, ...] = ("upstream_error",)
    cancel_codes: tuple[str, ...] = ("upstream_error",)
    refusal_codes: tuple[str, ...] = ("quota_exceeded",)
    drift_every: int = 1000  # the request of a day numbered drift_at (mod this) disagrees with
    drift_at: int = 7  # its upstream's count, when the upstream reports one

    def day_start_ms(self, day: int) -> int:
        local = datetime.combine(self.first_day + timedelta(days=day), datetime.min.time())
        return int(local.replace(tzinfo=self.zone).timestamp() * 1000)

    def hour_fractions(self, start_ms: int) -> np.ndarray | None:
        """How much of each hour of the day starting at ``start_ms`` is before ``until_ms``;
        None for a whole day."""
        if self.until_ms is None or self.until_ms >= start_ms + DAY_MS:
            return None
        starts = start_ms + np.arange(24) * HOUR_MS
        return np.clip((self.until_ms - starts) / HOUR_MS, 0.0, 1.0)

    def day_share(self, day: int) -> float:
        frac = self.hour_fractions(self.day_start_ms(day))
        return 1.0 if frac is None else float((HOURLY * frac).sum() / HOURLY.sum())


def zipf(n: int, s: float, rng: np.random.Generator) -> np.ndarray:
    """Zipf-like weights over n items, in a random order."""
    w = 1.0 / np.arange(1, n + 1) ** s
    return rng.permutation(w / w.sum())


class Population:
    """Who uses what: each project's department, each user's project, weight, usual model and
    keys (``key_ids``: placeholders until real keys replace them)."""

    def __init__(self, profile: Profile, rng: np.random.Generator) -> None:
        n_dept, n_proj, n_users = len(profile.departments), len(profile.projects), len(profile.users)
        dept_w = zipf(n_dept, 0.9, rng)
        if profile.project_departments is None:
            self.project_dept = rng.choice(n_dept, size=n_proj, p=dept_w)
        else:
            self.project_dept = np.array(profile.project_departments)
        proj_w = zipf(n_proj, 1.0, rng)
        self.user_project = rng.choice(n_proj, size=n_users, p=proj_w)
        self.user_w = zipf(n_users, 1.1, rng)
        if profile.model_share is None:
            self.model_w = zipf(len(profile.models), 1.2, rng)
        else:
            self.model_w = np.array(profile.model_share) / sum(profile.model_share)
        self.user_model = rng.choice(len(profile.models), size=n_users, p=self.model_w)
        self.user_keys = np.where(rng.random(n_users) < profile.second_key_share, 2, 1)
        self.key_ids = [[f"key_{u:04d}{k}" for k in range(int(n))] for u, n in enumerate(self.user_keys)]

    def department_of(self, u: int) -> int:
        return int(self.project_dept[int(self.user_project[u])])


@dataclass(slots=True)
class Draws:
    """A batch of requests drawn at once: when, who, which model, how it ended, and the factors
    its sizes and latency are drawn with."""

    ts: np.ndarray
    users: np.ndarray
    models: np.ndarray
    status: np.ndarray
    key_no: np.ndarray
    prompt_f: np.ndarray
    comp_f: np.ndarray
    lat_f: np.ndarray
    cached: np.ndarray


def day_counts(profile: Profile, total: int, rng: np.random.Generator) -> np.ndarray:
    """Requests per day: weekdays busier than weekends, +-10% noise, a part day in proportion."""
    weights = np.array([WEEKDAY[(profile.first_day + timedelta(days=d)).weekday()] for d in range(profile.days)])
    weights *= rng.uniform(0.9, 1.1, profile.days)
    weights *= np.array([profile.day_share(d) for d in range(profile.days)])
    counts = np.floor(weights / weights.sum() * total).astype(int)
    counts[: total - counts.sum()] += 1
    return counts


def draw_day(profile: Profile, pop: Population, start_ms: int, n: int, rng: np.random.Generator) -> Draws:
    hour_p = HOURLY / HOURLY.sum()
    frac = profile.hour_fractions(start_ms)
    hours = rng.choice(24, n, p=hour_p if frac is None else hour_p * frac / (hour_p * frac).sum())
    offsets = rng.integers(0, HOUR_MS, n)
    if frac is not None:  # the hour in progress: only its past
        offsets = (offsets * frac[hours]).astype(np.int64)
    ts = np.sort(start_ms + hours * HOUR_MS + offsets)
    users = rng.choice(len(profile.users), n, p=pop.user_w)
    own = rng.random(n) < 0.85
    models = np.where(own, pop.user_model[users], rng.choice(len(profile.models), n, p=pop.model_w))
    status = rng.choice(4, n, p=profile.status_p)
    key_no = rng.integers(0, 2, n) % pop.user_keys[users]
    prompt_f = rng.lognormal(0, 0.8, n)
    comp_f = rng.lognormal(0, 0.9, n)
    lat_f = rng.lognormal(0, 0.6, n)
    cached = np.where(rng.random(n) < 0.3, rng.integers(0, 512, n), 0)
    return Draws(ts, users, models, status, key_no, prompt_f, comp_f, lat_f, cached)


def _pick(codes: tuple[str, ...], i: int) -> str:
    return codes[i % len(codes)]


def build(profile: Profile, pop: Population, d: Draws, i: int, request_id: str) -> UsageRecord:
    """Request ``i`` of a batch as the gateway records it (before the price book charges it)."""
    u = int(d.users[i])
    shape = profile.models[int(d.models[i])]
    st = STATUSES[int(d.status[i])]
    project = int(pop.user_project[u])
    rec = UsageRecord(
        request_id=request_id,
        timestamp=int(d.ts[i]),
        model=shape.name,
        model_version="sha256:" + shape.name[:8],
        engine=shape.engine,
        endpoint="/v1/chat/completions",
        stream=bool(i % 3),
        status=st,
        key_id=pop.key_ids[u][int(d.key_no[i])],
        user=profile.users[u],
        project=profile.projects[project],
        department=profile.departments[int(pop.project_dept[project])],
        client_ip=f"10.20.{u // 250}.{u % 250}",
        user_agent=profile.agents[u % len(profile.agents)],
    )
    if st == REJECTED:  # refused at admission: nothing billed
        rec.duration_ms = int(2 + d.lat_f[i] * 3)
        rec.error_code = _pick(profile.refusal_codes, i)
        return rec
    prompt = int(shape.prompt_median * d.prompt_f[i]) + 1
    c_med = shape.completion_median
    completion = int(c_med * d.comp_f[i]) if st == OK else int(c_med * d.comp_f[i] * 0.3)
    duration = int(shape.latency_ms * d.lat_f[i] * (0.6 + completion / max(c_med, 1) * 0.4))
    rec.duration_ms = duration if st != ERROR else int(duration * 0.2)
    rec.ttft_ms = int(duration * 0.1)
    rec.prompt_tokens, rec.completion_tokens, rec.total_tokens = prompt, completion, prompt + completion
    rec.cached_tokens = int(min(d.cached[i], prompt))
    rec.usage_source = shape.usage_source
    if st != OK:
        rec.error_code = _pick(profile.error_codes if st == ERROR else profile.cancel_codes, i)
    if shape.upstream_usage and i % 5 < 2:  # 40% from upstreams that report usage
        off = 1 if i % profile.drift_every == profile.drift_at else 0
        rec.upstream_prompt_tokens, rec.upstream_completion_tokens = prompt + off, completion
    return rec


def request_ids() -> Iterator[str]:
    """Ids as the gateway makes them: a random prefix and a counter."""
    prefix = "req_" + os.urandom(10).hex()
    return (f"{prefix}{seq:012x}" for seq in itertools.count(1))


def day_records(
    profile: Profile, pop: Population, total: int, rng: np.random.Generator, ids: Iterator[str]
) -> Iterator[tuple[int, list[UsageRecord]]]:
    """(day number, that day's records in time order), a day at a time (memory stays flat)."""
    for day, n in enumerate(day_counts(profile, total, rng)):
        if not n:
            yield day, []
            continue
        d = draw_day(profile, pop, profile.day_start_ms(day), int(n), rng)
        yield day, [build(profile, pop, d, i, next(ids)) for i in range(int(n))]


def charged(records: Iterable[UsageRecord], book: PriceBook) -> list[dict]:
    """The records as the spool holds them, each charged by the book (the gateway's enrich step)."""
    out = []
    for rec in records:
        book.charge(rec)
        out.append(rec.to_dict())
    return out


def ingest(
    store: Store,
    days: Iterable[list[dict]],
    spool: Path,
    segment: int = 5_000,
    progress: Callable[[int, float], None] | None = None,
) -> tuple[float, int]:
    """Write the records as spool segments and move each through the writer's drain; (seconds
    spent draining, records moved). ``progress(moved, seconds)`` is called every 30 s or so."""
    spool.mkdir(parents=True, exist_ok=True)
    dead = DeadLetters(spool / "dead-letter.jsonl")
    spent, moved, seq, pending = 0.0, 0, 0, []

    def flush(batch: list[dict]) -> None:
        nonlocal spent, moved, seq
        seq += 1
        path = spool / f"seg-{seq:012d}.jsonl"
        path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in batch))
        t0 = time.perf_counter()
        done = drain_segments([path], store.usage, [], dead)
        spent += time.perf_counter() - t0
        moved += done.moved
        if done.set_aside:
            raise RuntimeError(f"{done.set_aside} generated records were set aside (see {dead.path})")

    shown = time.monotonic()
    for day in days:
        pending.extend(day)
        while len(pending) >= segment:
            flush(pending[:segment])
            del pending[:segment]
        if progress is not None and time.monotonic() - shown > 30:
            shown = time.monotonic()
            progress(moved, spent)
    if pending:
        flush(pending)
    return spent, moved


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
    from tokenabacus.governance.orgstore import Conflict

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
    from tokenabacus.billing.prices import check_currency, parse_price

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
    from tokenabacus.governance.periods import bounds
    from tokenabacus.ledger.usage import used_since

    used = {
        p: used_since(store.db, "project", project, None, "tokens", bounds(p, now, tz)[0]) for p in ("month", "week")
    }
    period = max(used, key=lambda p: used[p])
    return period, _round_up(used[period] / 0.92, 10_000)


def seed_quotas(store: Store, settings: Settings, profile: Profile, pop: Population, now: int) -> int:
    """A few limits (one near its limit) and three pending requests to raise them; the number of
    limits set."""
    from tokenabacus.governance.periods import bounds
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
    from tokenabacus.alerts.rules import BurstRule, ErrorRateRule, QuotaRule, SpikeRule

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
