"""The Gateway: everything one running server owns (settings, engines, key cache, spool,
ledger writer). Built by the app factory, started and stopped by its lifespan; no globals.

Starting opens the ground (the spool's lock, the ledger, the admin key, a replay of what an
earlier run left in the spool), then starts a list of services in order; stopping stops them in
reverse (server/services.py)."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from zoneinfo import ZoneInfo

from starlette.types import Scope

from tokenabacus.alerts.engine import AlertEngine
from tokenabacus.alerts.schedules import ReportScheduler
from tokenabacus.billing.prices import PriceBook, PriceCache, config_versions
from tokenabacus.config import EmbeddedModel, Settings, UpstreamModel, effective_models
from tokenabacus.config.models import alias_map
from tokenabacus.engines.base import Engine
from tokenabacus.engines.embedded import EmbeddedEngine
from tokenabacus.engines.upstream import UpstreamEngine
from tokenabacus.governance.access import ClientAddress
from tokenabacus.governance.brake import AuthBrake
from tokenabacus.governance.keys import KeyCache, ensure_admin_key
from tokenabacus.governance.keystrength import ADMIN_KEY_ENV
from tokenabacus.governance.runtime import Governance
from tokenabacus.ledger import lock
from tokenabacus.ledger.deadletter import FILE_NAME as DEAD_LETTER_FILE
from tokenabacus.ledger.deadletter import DeadLetters
from tokenabacus.ledger.record import UsageRecord
from tokenabacus.ledger.reloader import Reloader
from tokenabacus.ledger.sinks import Sink
from tokenabacus.ledger.spool import Spool
from tokenabacus.ledger.store import Store
from tokenabacus.ledger.writer import LedgerWriter, replay_spool
from tokenabacus.metering.reconcile import EngineWatch
from tokenabacus.metering.settle import Meter
from tokenabacus.metering.tokenizers import build_counter
from tokenabacus.observe.auth_metrics import AuthMetrics
from tokenabacus.observe.backlog import Runner
from tokenabacus.observe.metrics import LiveState, Metrics, segment_age_s
from tokenabacus.observe.wiring import build_outputs
from tokenabacus.server.auth_guard import AuthGuard
from tokenabacus.server.services import ModelService, Service, SpoolService, start_all, stop_all

log = logging.getLogger(__name__)
PRICES_REFRESH_S = 1.0  # a price set at run time charges new records within about this long


def build_engine(cfg: EmbeddedModel | UpstreamModel) -> Engine:
    return EmbeddedEngine(cfg) if isinstance(cfg, EmbeddedModel) else UpstreamEngine(cfg)


def build_meter(cfg: EmbeddedModel | UpstreamModel, engine: Engine) -> Meter:
    """How a model's requests are settled: the embedded engine's own ids, or a local count."""
    if isinstance(engine, EmbeddedEngine):
        return Meter(engine_counts=True, engine_prompt=engine.count_prompt)
    assert isinstance(cfg, UpstreamModel)
    return Meter(build_counter(cfg.tokenizer) if cfg.tokenizer else None, cfg.bill)


class Gateway:
    def __init__(self, settings: Settings, store: Store | None = None) -> None:
        """``store``: a ledger the caller already opened (the CLI does, to fail before serving);
        otherwise start opens it."""
        self.settings = settings
        self.started_at = int(time.time())
        models = effective_models(settings)
        self.engines: dict[str, Engine] = {m.name: build_engine(m) for m in models}
        self.meters: dict[str, Meter] = {m.name: build_meter(m, self.engines[m.name]) for m in models}
        # Other names a request may ask for a model by (config check_names keeps them unambiguous).
        self.aliases: dict[str, str] = alias_map(models)
        # The price book every record is charged from (enrich) and cost limits reserve money at:
        # the config's versions merged with the ledger's, swapped whole when the prices change.
        self.price_cache = PriceCache(config_versions(settings.prices, ZoneInfo(settings.governance.timezone)))
        self.governance = Governance(settings, models, self.price_cache)
        self.addresses = ClientAddress(settings.server.trusted_proxies)
        # Engines whose own token counters are reconciled with what we bill (metrics_url).
        self.watches: dict[str, EngineWatch] = {
            m.name: EngineWatch(m.name, m.metrics_url, m.metrics_interval_s)
            for m in models
            if isinstance(m, UpstreamModel) and m.metrics_url
        }
        self._store: Store | None = store
        self._keys: KeyCache | None = None
        self._prices_reloader: Reloader | None = None
        self.spool = Spool(settings.spool_path, settings.ledger.flush_interval_ms, settings.ledger.group_commit_ms)
        self.sinks: list[Sink] = []
        self.observers: list[Runner] = []  # durable consumers of the records (observe/backlog.py)
        self.alerts: AlertEngine | None = None
        self.reports: ReportScheduler | None = None
        # /metrics: counted from the records this process writes (a ledger sink), plus live state.
        self.metrics = Metrics(self.engines, settings.metrics.user_label)
        self.metrics.registry.register(LiveState(self.live_state))
        # One brake on guessing keys for every route that takes a key (server/auth_guard.py).
        brake = AuthBrake(settings.server.auth_brake)
        self.auth = AuthGuard(brake, AuthMetrics(self.metrics.registry, brake.active))
        self.writer: LedgerWriter | None = None
        self.dead_letters = DeadLetters(settings.spool_path / DEAD_LETTER_FILE)
        self.new_admin_key: str | None = None
        self._running: list[Service] = []  # started, in order: stopped in reverse

    async def start(self) -> None:
        await self._open()
        await start_all(self._services(self.store), self._running)

    async def _open(self) -> None:
        """The ground the services stand on: the spool's lock, the ledger, the admin key, and
        the records an earlier run spooled but never wrote."""
        s = self.settings
        # One process per spool (a no-op when the CLI already holds the lock): InUse otherwise.
        lock.hold(
            s.spool_path, s.jsonl_path if s.sinks.jsonl.enabled else None, None if s.ledger.spool_dir else s.data_path
        )
        s.data_path.mkdir(parents=True, exist_ok=True)
        if self._store is None:
            self._store = await asyncio.to_thread(Store, s.ledger_url)
        self.new_admin_key = await asyncio.to_thread(ensure_admin_key, self.store, os.environ.get(ADMIN_KEY_ENV))
        self.sinks, self.observers = build_outputs(s)
        if s.metrics.enabled:
            self.sinks.append(self.metrics)
        # Records spooled by an earlier run that did not reach the database (crash, kill -9).
        done = await asyncio.to_thread(replay_spool, s.spool_path, self.store.usage, self.sinks, self.dead_letters)
        if done.moved or done.set_aside:
            log.info(
                "replayed %d spooled records into the ledger (%d set aside in %s)",
                done.moved,
                done.set_aside,
                self.dead_letters.path,
            )

    def _services(self, store: Store) -> list[Service]:
        """Everything that runs in the background while the gateway serves, in starting order."""
        s = self.settings
        holder = lock.holder(s.spool_path)
        self.writer = LedgerWriter(
            self.spool, store.usage, self.sinks, self.dead_letters, s.ledger.writer_interval_ms / 1000
        )
        self._keys = KeyCache(store, s.keys.refresh_interval_s)
        self.governance.follow(store, self.spool.unwritten)
        self.alerts = AlertEngine(
            s,
            store,
            ready=lambda: {name: e.health()["ready"] for name, e in self.engines.items()},
            on_fire=lambda f, severity: self.metrics.alert_fired(
                f.kind, f.rule, severity, f.scope, f.figure, f.threshold
            ),
            on_drop=self.metrics.alert_dropped,
            holder=holder,
        )
        self.reports = ReportScheduler(s, store, holder=holder)
        self._prices_reloader = Reloader(
            "price book", store.prices.generation, self._load_prices, PRICES_REFRESH_S, logger=log
        )
        return [
            SpoolService(self.spool),
            *self.observers,
            self.writer,
            self._keys,
            self.governance,
            self.alerts,
            self.reports,
            self._prices_reloader,
            *(ModelService(name, engine) for name, engine in self.engines.items()),
            *self.watches.values(),
        ]

    async def stop(self) -> None:
        # uvicorn cancels requests still running after its grace period and then stops us at once:
        # give their cleanup a moment to append their records while the spool is still open.
        await self.wait_idle(5.0)
        await stop_all(self._running)
        if self._store:
            self._store.close()

    # Opened by start(); reading them earlier is a bug, said plainly rather than as None.
    @property
    def store(self) -> Store:
        if self._store is None:
            raise RuntimeError("the gateway has not started: no ledger yet")
        return self._store

    @property
    def keys(self) -> KeyCache:
        if self._keys is None:
            raise RuntimeError("the gateway has not started: no key cache yet")
        return self._keys

    @property
    def prices_reloader(self) -> Reloader:
        """Follows the ledger's prices (`refresh(force=True)`: this gateway at once)."""
        if self._prices_reloader is None:
            raise RuntimeError("the gateway has not started: no price book yet")
        return self._prices_reloader

    async def wait_idle(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.spool.active > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)

    # The price book ----------------------------------------------------------------------------
    @property
    def prices(self) -> PriceBook:
        """The price book in force now (one consistent snapshot)."""
        return self.price_cache.book

    def enrich(self, rec: UsageRecord) -> None:
        """The enrich seam: fields added to a finished record before it is spooled. Pure and in
        memory (the price book snapshot), so the hot path does no I/O."""
        self.price_cache.book.charge(rec)

    async def _load_prices(self) -> None:
        rows = await asyncio.to_thread(self.store.prices.versions)
        self.price_cache.load(rows)

    def models_status(self) -> dict:
        """Each model's engine, readiness, queue and (with metrics_url) reconciliation with the
        engine's own counters: what `tokenabacus models status` shows."""
        queues = self.governance.admission.schedulers
        out = {}
        for name, engine in self.engines.items():
            entry: dict = {**engine.health(), **self.meters[name].health()}
            if name in queues:
                entry["queue"] = queues[name].stats()
            if name in self.watches:
                entry["reconcile"] = self.watches[name].status()
            out[name] = entry
        return out

    def live_state(self) -> dict:
        """What /metrics reads at scrape time (observe/metrics.LiveState)."""
        segments = self.spool.closed_segments() if self.spool.dir.is_dir() else []
        queues = {}
        for name, q in self.governance.admission.schedulers.items():
            st = q.stats()
            queues[name] = {
                "waiting": st["waiting"],
                "running": st["running"],
                "granted": q.granted,
                "waited_s": q.waited_s,
                "wait_buckets": q.wait_buckets(),
            }
        drift = {}
        for name, watch in self.watches.items():
            last = watch.status().get("since_start") or {}
            drift[name] = {"prompt": last.get("prompt_drift"), "completion": last.get("generation_drift")}
        seeder = self.governance.seeder
        corrections = (
            {k: (n, seeder.corrected_amount.get(k, 0)) for k, n in seeder.corrections.items()} if seeder else {}
        )
        return {
            "quota_corrections": corrections,
            "spool_segments": len(segments),
            "writer_lag_s": segment_age_s(segments),
            "writer_error": self.writer.last_error if self.writer else None,
            "observers": {
                r.consumer.name: {"lag_s": r.backlog.oldest_age_s(), "files": len(r.backlog.files())}
                for r in self.observers
            },
            "queues": queues,
            "ready": {name: e.health()["ready"] for name, e in self.engines.items()},
            "engine_drift": drift,
        }

    def model_object(self, name: str) -> dict:
        return {"id": name, "object": "model", "created": self.started_at, "owned_by": "tokenabacus"}

    def caller_ip(self, scope: Scope) -> str | None:
        """The client IP of a request's scope (its socket peer, judged by client_ip)."""
        client = scope.get("client")
        return self.client_ip(scope, client[0] if client else None)

    def client_ip(self, scope: Scope, peer: str | None) -> str | None:
        """The address policies judge and the ledger records (see governance.access.ClientAddress)."""
        if not self.addresses.trusted:
            return peer
        fwd = real = None
        for k, v in scope["headers"]:
            if k == b"x-forwarded-for":
                fwd = v.decode("latin-1") if fwd is None else fwd + "," + v.decode("latin-1")
            elif k == b"x-real-ip":
                real = v.decode("latin-1")
        return self.addresses.resolve(peer, fwd, real)

    def health(self, detail: bool = False) -> dict:
        last_error = self.writer.last_error if self.writer else None
        # dead_letters: records waiting in the dead-letter file for an operator (a count, no content).
        if not detail:
            return {
                "status": "ok",
                "models": {name: {"ready": e.health()["ready"]} for name, e in self.engines.items()},
                "ledger": {"ok": last_error is None, "dead_letters": self.dead_letters.count},
                "quota_counters": {"ok": self.governance.counters.health()["ok"]},
            }
        return {
            "status": "ok",
            "models": {name: {**e.health(), **self.meters[name].health()} for name, e in self.engines.items()},
            "ledger": {
                "ok": last_error is None,
                "moved": self.writer.moved if self.writer else 0,
                "last_error": last_error,
                "dead_letters": self.dead_letters.count,
                "dead_letter_file": str(self.dead_letters.path),
            },
            "governance": self.governance.health(),
        }
