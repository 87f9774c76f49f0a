"""The alert outbox: every channel has its own sender over the durable delivery rows.

A slow or dead channel delays no other: each channel's task sends its due deliveries one at a
time, each attempt under a deadline (the channel's ``timeout_s`` and a little grace), and keeps
its retries in the database (backoff, the channel's ``retry_attempts``, then "failed" with the
reason), so a stop or a crash resumes where it was. Every attempt of one alert to one channel
carries the same idempotency key. A channel's backlog is bounded (its ``delivery_queue``, by
default ``alerts.delivery_queue``): past it, a new alert is recorded as dropped for that channel,
with a warning and a metric.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Callable, Iterable, Mapping
from datetime import tzinfo

from tokenabacus.alerts import messages
from tokenabacus.alerts.notifiers import Notifier, NotifyError
from tokenabacus.calendar import now_ms
from tokenabacus.config.alerts import AlertsConfig
from tokenabacus.ledger.alerts import AlertHistory, Delivery
from tokenabacus.tasks import cancel_and_wait

log = logging.getLogger(__name__)
GRACE_S = 2.0  # past the channel's own timeout (SMTP's is per socket operation, not the whole send)
IDLE_S = 30.0  # with nothing due, look again this often anyway (rows another process left)
RETRY_LEDGER_S = 5.0  # the ledger failed: try again this soon
BATCH = 50


class Outbox:
    def __init__(
        self,
        cfg: AlertsConfig,
        channels: Mapping[str, Notifier],
        rows: AlertHistory,
        active: Callable[[], bool] = lambda: True,
        on_drop: Callable[[str], None] | None = None,
        zone: tzinfo | None = None,
    ) -> None:
        """``active``: whether this process may send now (it holds the alerts lease); ``zone``:
        where the messages' readers are (their times are shown there)."""
        self.cfg = cfg
        self.zone = zone
        self.channels = channels
        self.configs = {c.name: c for c in cfg.channels}
        self.rows = rows
        self.active = active
        self.on_drop = on_drop
        self.backlog: dict[str, int] = dict.fromkeys(channels, 0)  # waiting, per channel
        self._wake = {name: asyncio.Event() for name in channels}
        self._tasks: list[asyncio.Task] = []

    async def start(self) -> None:
        for name in self.channels:
            self._tasks.append(asyncio.create_task(self._run(name), name=f"alerts-to-{name}"))

    async def stop(self) -> None:
        for task in self._tasks:
            await cancel_and_wait(task)
        self._tasks = []

    async def resume(self) -> None:
        """This process has just taken the lease: count what is waiting (another process, or
        this gateway before a restart, may have left deliveries) and look at it now; fail what
        waits for a channel the config no longer has."""
        await asyncio.to_thread(self.rows.abandon, list(self.channels))
        counts = await asyncio.to_thread(self.rows.backlog)
        self.backlog = {name: counts.get(name, 0) for name in self.channels}
        for event in self._wake.values():
            event.set()

    # Enqueueing --------------------------------------------------------------------------------
    def split(self, names: Iterable[str]) -> tuple[list[str], dict[str, str]]:
        """Of the channels an alert goes to: those with room, and why each other one drops it."""
        room, dropped = [], {}
        for name in names:
            waiting = self.backlog.get(name, 0)
            if waiting >= (self.configs[name].delivery_queue or self.cfg.delivery_queue):
                dropped[name] = f"dropped: {waiting} deliveries already waiting (delivery_queue)"
            else:
                room.append(name)
        return room, dropped

    def queued(self, rule: str, room: list[str], dropped: Mapping[str, str]) -> None:
        """An alert was recorded with these channels' deliveries: wake their senders."""
        for name in room:
            self.backlog[name] = self.backlog.get(name, 0) + 1
            if name in self._wake:
                self._wake[name].set()
        for name, why in dropped.items():
            log.warning("alert %s not queued for channel %s: %s", rule, name, why)
            if self.on_drop:
                self.on_drop(name)

    # Sending -----------------------------------------------------------------------------------
    async def _run(self, name: str) -> None:
        event = self._wake[name]
        while True:
            wait = IDLE_S
            try:
                if self.active():
                    wait = await self._drain(name) or IDLE_S
            except asyncio.CancelledError:
                raise
            except Exception as e:  # the ledger is down: the rows wait for it
                log.warning("alert channel %s: %s: %s", name, type(e).__name__, str(e)[:200])
                wait = RETRY_LEDGER_S
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), wait)
            event.clear()

    async def _drain(self, name: str, alert_ids: list[int] | None = None) -> float | None:
        """Attempt everything due now; seconds until the next delivery is due (None: nothing left)."""
        while True:
            due = await asyncio.to_thread(self.rows.due, name, now_ms(), BATCH, alert_ids)
            for d in due:
                if alert_ids is None and not self.active():
                    return IDLE_S
                await self.attempt(name, d)
            if not due:
                break
        nxt = await asyncio.to_thread(self.rows.next_due, name, alert_ids)
        if nxt is None:
            return None if alert_ids is not None else IDLE_S
        return min(IDLE_S, max(0.01, (nxt - now_ms()) / 1000))

    async def deliver_now(self, alert_ids: list[int]) -> None:
        """Send these alerts' deliveries here, retries included, until each is delivered or
        failed: for a process without background senders (`tokenabacus alerts check --send`)."""

        async def one(name: str) -> None:
            while (wait := await self._drain(name, alert_ids)) is not None:
                await asyncio.sleep(wait)

        await asyncio.gather(*(one(name) for name in self.channels))

    async def attempt(self, name: str, d: Delivery) -> None:
        """One attempt of one delivery, its outcome recorded: delivered, a retry later, or failed."""
        cfg, notifier = self.configs[name], self.channels[name]
        deadline_s = cfg.timeout_s + GRACE_S
        # Claim the attempt first: other senders keep off the row until past its deadline, and a
        # crash mid-send counts it (the retry after a restart carries the same key).
        until = now_ms() + int((deadline_s + 1) * 1000)
        if not await asyncio.to_thread(self.rows.begin_attempt, d.id, d.attempts, until):
            return  # another sender took it
        n = d.attempts + 1
        msg = messages.from_row(d.alert, self.cfg.language, self.cfg.dashboard_url, self.zone)
        msg = dataclasses.replace(msg, idempotency_key=d.idempotency_key)
        retry_after = None
        try:
            async with asyncio.timeout(deadline_s):
                await notifier.attempt(msg)
        except asyncio.CancelledError:
            # Stopped mid-send: not counted, due again as soon as the next run holds the lease.
            await asyncio.to_thread(self.rows.undo_attempt, d.id, d.attempts)
            raise
        except NotifyError as e:
            error, retryable, retry_after = e.reason, e.retryable, e.retry_after
        except TimeoutError:
            error, retryable = f"no reply within {deadline_s:g}s", True
        except Exception as e:  # a notifier bug: recorded, never raised into the sender
            error, retryable = f"{type(e).__name__}", False
        else:
            await asyncio.to_thread(self.rows.delivered, d.id)
            self._settled(name)
            return
        policy = cfg.retry_policy()
        if retryable and n < policy.attempts:
            wait = policy.delay(n, retry_after)
            log.warning("alert %s to %s: attempt %d/%d failed: %s; retrying in %.2fs",
                        d.alert["id"], name, n, policy.attempts, error, wait)  # fmt: skip
            await asyncio.to_thread(self.rows.retry, d.id, now_ms() + int(wait * 1000), error)
            return
        error = f"{error} (after {n} attempts)" if n > 1 else error
        log.warning("alert %s to %s failed: %s", d.alert["id"], name, error)
        await asyncio.to_thread(self.rows.failed, d.id, error)
        self._settled(name)

    def _settled(self, name: str) -> None:
        self.backlog[name] = max(0, self.backlog.get(name, 0) - 1)
