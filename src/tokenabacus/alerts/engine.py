"""The alert engine: every ``evaluate_interval_s`` the process holding the "alerts" lease runs the
detectors, skips a firing inside its cool-down (per rule, scope and threshold: a quota's 80% after
its 50% is news, not a repeat), and records each one once in the history (rule, scope, period)
together with a delivery per channel, which the outbox sends (alerts/outbox.py). Off the request
path: detectors run in worker threads against the ledger, and evaluation never waits on a channel.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from tokenabacus.alerts import detect, messages
from tokenabacus.alerts.detect import Firing
from tokenabacus.alerts.notifiers import Message, Notifier, NotifyError, build_notifier
from tokenabacus.alerts.outbox import Outbox
from tokenabacus.calendar import now_ms, zone_named
from tokenabacus.config import Settings
from tokenabacus.config.alerts import AlertsConfig, QuotaRule, Rule, UpstreamDownRule
from tokenabacus.ledger.leases import Lease
from tokenabacus.ledger.store import Store

log = logging.getLogger(__name__)
LEASE = "alerts"


def holder_id() -> str:
    """A lease holder for this process (the gateway names itself by its spool: ledger/lock.py)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def notifiers(cfg: AlertsConfig) -> dict[str, Notifier]:
    return {c.name: build_notifier(c) for c in cfg.channels}


async def send(channels: Mapping[str, Notifier], names: list[str] | None, message: Message) -> dict[str, str]:
    """Send to the named channels (all when None) at once; each one's result: "sent" or why not."""
    chosen = [n for n in channels if names is None or n in names]

    async def one(name: str) -> tuple[str, str]:
        try:
            await channels[name].send(message)
            return name, "sent"
        except NotifyError as e:
            return name, f"failed: {e.reason}"
        except Exception as e:  # a notifier bug must not stop the others
            return name, f"failed: {type(e).__name__}"

    return dict(await asyncio.gather(*(one(n) for n in chosen)))


class AlertEngine:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        ready: Callable[[], Mapping[str, bool]] = dict,
        on_fire: Callable[[Firing, str], None] | None = None,
        on_drop: Callable[[str], None] | None = None,
        holder: str | None = None,
    ) -> None:
        """``on_drop(channel)``: a channel's queue was full; ``holder``: who holds the lease."""
        self.settings = settings
        self.cfg = settings.alerts
        self.store = store
        self.ready = ready
        self.on_fire = on_fire
        self.channels = notifiers(self.cfg)
        ttl_s = max(30.0, 3 * self.cfg.evaluate_interval_s)
        self.lease = Lease(store.db, LEASE, holder or holder_id(), ttl_s=ttl_s)
        self.holding = False  # this process holds the lease: its senders may send
        zone = zone_named(settings.governance.timezone)  # the readers' local time in every message
        self.outbox = Outbox(self.cfg, self.channels, store.alerts, lambda: self.holding, on_drop, zone)
        self._down_since: dict[str, int] = {}
        self._task: asyncio.Task | None = None
        self.last_error: str | None = None
        self.suspicious: list[dict[str, Any]] = []  # callers flagged by the last burst check (metrics)

    async def start(self) -> None:
        if self.cfg.enabled and self.cfg.rules:
            await self.outbox.start()
            self._task = asyncio.create_task(self._run(), name="alerts")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            await self.outbox.stop()  # deliveries under way go back to pending, for the next run
            if self.holding:
                with contextlib.suppress(Exception):
                    await asyncio.to_thread(self.lease.release)

    async def _run(self) -> None:
        while True:
            try:
                held = await asyncio.to_thread(self.lease.acquire)
                if held and not self.holding:
                    await self.outbox.resume()
                self.holding = held
                if held:
                    await self.evaluate()
                self.last_error = None
            except asyncio.CancelledError:
                raise
            except Exception as e:  # the ledger is down: try again next time
                self.holding = False
                self.last_error = f"{type(e).__name__}: {str(e)[:200]}"
                log.warning("alerts: %s", self.last_error)
            await asyncio.sleep(self.cfg.evaluate_interval_s)

    # One evaluation ----------------------------------------------------------------------------
    def firings(self, rule: Rule, at_ms: int) -> list[Firing]:
        """What ``rule`` finds now (blocking: database reads)."""
        tz = self.settings.governance.timezone
        if isinstance(rule, QuotaRule):
            from tokenabacus.governance import quotaview

            lims = quotaview.current(self.store, self.settings)
            rows = quotaview.status(lims, quotaview.ledger_usage(self.store), at_ms=at_ms)
            return detect.quotas(rows, rule)
        if isinstance(rule, UpstreamDownRule):
            return detect.upstream_down(self.ready(), self._down_since, rule, at_ms)
        return detect.DETECTORS[rule.type](self.store, rule, tz, at_ms)

    async def evaluate(self, at_ms: int | None = None, *, wait: bool = False) -> list[dict[str, Any]]:
        """Run every rule once; the alerts fired, as history rows. Their deliveries are left to
        the channels' senders, or with ``wait`` (a process without senders: the CLI) made here
        before it returns, each row then carrying every channel's outcome."""
        now = at_ms if at_ms is not None else now_ms()
        fired = []
        for rule in self.cfg.rules:
            try:
                found = await asyncio.to_thread(self.firings, rule, now)
            except Exception as e:
                log.warning("alert rule %s failed: %s: %s", rule.name, type(e).__name__, str(e)[:200])
                continue
            for f in found:
                row = await self._fire(rule, f, now)
                if row is not None:
                    fired.append(row)
        if wait and fired:
            ids = [a["id"] for a in fired]
            await self.outbox.deliver_now(ids)
            outcomes = await asyncio.to_thread(self.store.alerts.outcomes, ids)
            for a in fired:
                a["deliveries"] = outcomes.get(a["id"], {})
        return fired

    async def _fire(self, rule: Rule, f: Firing, now: int) -> dict[str, Any] | None:
        cooldown_ms = int(
            (rule.cooldown_minutes if rule.cooldown_minutes is not None else self.cfg.cooldown_minutes) * 60_000
        )
        last = await asyncio.to_thread(self.store.alerts.last_fired, f.rule, f.scope, f.threshold)
        if last is not None and now - last < cooldown_ms:
            return None
        msg = messages.render(f, self.cfg.language, rule.severity, self.cfg.dashboard_url, _dt(now))
        row = {
            "rule": f.rule,
            "kind": f.kind,
            "scope": f.scope[:300],
            "period": f.period[:64],
            "fired_at": now,
            "severity": rule.severity,
            "figure": f.figure,
            "baseline": f.baseline,
            "threshold": f.threshold,
            "message": "\n".join(msg.lines),
            "title": msg.title,
            "unit": f.unit[:32],
        }
        room, dropped = self.outbox.split(n for n in self.channels if rule.channels is None or n in rule.channels)
        claimed = await asyncio.to_thread(self.store.alerts.claim, row, room, dropped)
        if claimed is None:
            return None  # this (rule, scope, period) fired already
        alert_id, _ = claimed
        self.outbox.queued(rule.name, room, dropped)
        if self.on_fire:
            self.on_fire(f, rule.severity)
        deliveries = {**dict.fromkeys(room, "pending"), **{n: f"failed: {why}" for n, why in dropped.items()}}
        return {**row, "id": alert_id, "deliveries": deliveries}


def _dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)
