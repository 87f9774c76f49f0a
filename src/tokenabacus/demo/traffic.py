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

import itertools
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

import numpy as np
import orjson

from tokenabacus.calendar import DAY_MS, HOUR_MS
from tokenabacus.ledger.deadletter import DeadLetters
from tokenabacus.ledger.record import (
    CANCELLED,
    ERROR,
    OK,
    REJECTED,
    SOURCE_TOKENIZER,
    UsageRecord,
)
from tokenabacus.ledger.writer import drain_segments

if TYPE_CHECKING:
    from tokenabacus.billing.prices import PriceBook
    from tokenabacus.ledger.store import Store

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
