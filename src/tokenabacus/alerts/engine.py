"""The alert engine: every ``evaluate_interval_s`` the process holding the "alerts" lease runs the
detectors, claims each firing once in the history (rule, scope, period), skips it inside its
cool-down, and sends it to the rule's channels with retries. Off the request path: detectors run
in worker threads against the ledger, and a channel that fails is recorded, never raised.
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

from tokenabacus.alerts import detect, history, messages
from tokenabacus.alerts.detect import Firing
from tokenabacus.alerts.notifiers import Message, Notifier, NotifyError, build_notifier
from tokenabacus.alerts.rules import AlertsConfig, QuotaRule, Rule, UpstreamDownRule
from tokenabacus.config import Settings
from tokenabacus.ledger.record import now_ms
from tokenabacus.ledger.store import Store

log = logging.getLogger(__name__)
LEASE = "alerts"


def holder_id() -> str:
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
    ) -> None:
        self.settings = settings
        self.cfg = settings.alerts
        self.store = store
        self.ready = ready
        self.on_fire = on_fire
        self.channels = notifiers(self.cfg)
        self.lease = history.Lease(store.db, LEASE, holder_id(), ttl_s=max(30.0, 3 * self.cfg.evaluate_interval_s))
        self._down_since: dict[str, int] = {}
        self._task: asyncio.Task | None = None
        self.last_error: str | None = None
        self.suspicious: list[dict[str, Any]] = []  # callers flagged by the last burst check (metrics)

    async def start(self) -> None:
        if self.cfg.enabled and self.cfg.rules:
            self._task = asyncio.create_task(self._run(), name="alerts")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self.lease.release)

    async def _run(self) -> None:
        while True:
            try:
                if await asyncio.to_thread(self.lease.acquire):
                    await self.evaluate()
                self.last_error = None
            except asyncio.CancelledError:
                raise
            except Exception as e:  # the ledger is down: try again next time
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

    async def evaluate(self, at_ms: int | None = None) -> list[dict[str, Any]]:
        """Run every rule once; the alerts fired (sent or not), as history rows."""
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
        return fired

    async def _fire(self, rule: Rule, f: Firing, now: int) -> dict[str, Any] | None:
        cooldown_ms = int(
            (rule.cooldown_minutes if rule.cooldown_minutes is not None else self.cfg.cooldown_minutes) * 60_000
        )
        last = await asyncio.to_thread(history.last_fired, self.store.db, f.rule, f.scope)
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
        }
        alert_id = await asyncio.to_thread(history.claim, self.store.db, row)
        if alert_id is None:
            return None  # this (rule, scope, period) was sent already
        if self.on_fire:
            self.on_fire(f, rule.severity)
        deliveries = await send(self.channels, rule.channels, msg)
        await asyncio.to_thread(history.delivered, self.store.db, alert_id, deliveries)
        return {**row, "id": alert_id, "deliveries": deliveries}


def _dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)
