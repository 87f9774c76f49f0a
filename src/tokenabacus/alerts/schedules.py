"""Scheduled reports: daily, weekly or monthly, the period that just ended in a message (top
departments and projects by tokens and cost, the peak hour, the biggest movers against the period
before, quota use, the alerts fired) to IM channels, and by email with the figures attached.

One sender across processes and replicas: the "reports" lease picks the process that looks, and
the unique (schedule, period) row in report_runs is claimed before anything is sent, so a period
goes out once even if two processes race. `tokenabacus reports send --now NAME` sends one on demand:
the period that ended last before the moment it is asked (yesterday, for a daily report asked at 05:40,
even though today's send time, 09:00, has not come). The message is in alerts.language to its last
line, its times in the schedule's zone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from tokenabacus.alerts.engine import holder_id, notifiers, send
from tokenabacus.alerts.notifiers import Attachment, Message
from tokenabacus.billing import rankings, windows
from tokenabacus.billing.exports import Sheet, csv_text, xlsx_bytes
from tokenabacus.billing.table import Table
from tokenabacus.calendar import now_ms, zone_named
from tokenabacus.config import Settings
from tokenabacus.config.alerts import ScheduleConfig
from tokenabacus.ledger import report_runs
from tokenabacus.ledger.leases import Lease
from tokenabacus.ledger.store import Store
from tokenabacus.money import show_money

log = logging.getLogger(__name__)
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
LATE_S = 6 * 3600  # a send missed by longer (the gateway was down) is skipped, not sent late


@dataclass(frozen=True)
class Due:
    period: str  # e.g. 2026-12-03, week of 2026-11-23, 2026-11
    window: windows.Window
    send_at: datetime


def last_due(s: ScheduleConfig, tz: str, now: datetime) -> Due:
    """The latest send time at or before ``now`` and the period it reports on (the one that ended)."""
    zone = zone_named(tz)
    local = now.astimezone(zone)
    hh, mm = (int(x) for x in s.at.split(":"))
    day = local.date()
    while True:
        at = datetime(day.year, day.month, day.day, hh, mm, tzinfo=zone)
        ok = at <= local and (
            s.every == "day"
            or (s.every == "week" and WEEKDAYS[day.weekday()] == s.weekday)
            or (s.every == "month" and day.day == s.day)
        )
        if ok:
            break
        day -= timedelta(days=1)
    return just_ended(s, tz, at)


def just_ended(s: ScheduleConfig, tz: str, now: datetime) -> Due:
    """The period of ``s`` (day, week or month in ``tz``) that ended last before ``now``, sent at
    ``now``."""
    period = {"day": "today", "week": "week"}.get(s.every, "month")
    win = windows.window(tz, period, previous=True, now_ms=int(now.timestamp() * 1000))
    return Due(win.label, win, now)


def build(store: Store, settings: Settings, s: ScheduleConfig, due: Due) -> Message:
    """The report for ``due``: the message (markdown lines) with its attachment."""
    zh = settings.alerts.language == "zh"
    win = due.window
    depts = rankings.top(store, "department", win, limit=s.top)
    projects = rankings.top(store, "project", win, limit=s.top)
    peaks = rankings.peaks(store, win)
    total = depts.rows[-1]
    lines = [
        (f"周期：{win.label}（{win.tz}）" if zh else f"Period: {win.label} ({win.tz})"),
        (
            f"合计：{total['requests']:,} 次请求，{total['total_tokens']:,} Token，{_money(total)}"
            if zh
            else f"Total: {total['requests']:,} requests, {total['total_tokens']:,} tokens, {_money(total)}"
        ),
        "",
        ("**部门排名（Token / 金额）**" if zh else "**Departments (tokens / cost)**"),
        *_ranked(depts, "department", zh),
        "",
        ("**项目排名**" if zh else "**Projects**"),
        *_ranked(projects, "project", zh),
    ]
    if peaks.rows:
        best = max(peaks.rows, key=lambda r: r["total_tokens"])
        when = f"{best['day']} {best['peak_hour']}"
        peak = f"**高峰时段**：{when}，{best['total_tokens']:,} Token" if zh else f"**Peak hour**: {when}"
        lines += ["", peak if zh else f"{peak}, {best['total_tokens']:,} tokens"]
    movers = sorted(
        (r for r in depts.rows + projects.rows if r.get("row") == "group" and r.get("tokens_change_pct") is not None),
        key=lambda r: -abs(r["tokens_change_pct"]),
    )[:3]
    if movers:
        lines += ["", "**变化最大**" if zh else "**Biggest movers**"]
        for r in movers:
            name = r.get("department") or r.get("project")
            lines.append(
                f"- {name}: {r['tokens_change_pct']:+g}% ({r['previous_total_tokens']:,} → {r['total_tokens']:,})"
            )
    lines += _quota_lines(store, settings, zh)
    fired = store.alerts.history(since_ms=win.since_ms, limit=1000)
    fired = [a for a in fired if a["fired_at"] < win.until_ms]
    lines += ["", (f"**告警**：{len(fired)} 条" if zh else f"**Alerts fired**: {len(fired)}")]
    lines += [f"- {a['rule']}: {a['scope']}" for a in fired[:5]]
    attachments = _attachments(s, depts, projects, peaks, win)
    title = f"[tokenabacus] 用量报告 {win.label}" if zh else f"[tokenabacus] Usage report {win.label}"
    return Message(title=title, lines=tuple(lines), rule=f"report:{s.name}", severity="info",
                   link=settings.alerts.dashboard_url, attachments=attachments,
                   language=settings.alerts.language, zone=zone_named(win.tz))  # fmt: skip


def _money(r: dict) -> str:
    """A row's cost as a person reads it in a message (¥12,345.68); its exact figure is attached."""
    if r.get("cost_micros") is None:
        return r.get("cost") or "-"  # several currencies, or none priced: the table's own words
    return show_money(r["cost_micros"], r.get("currency")) or "-"


def _ranked(t: Table, by: str, zh: bool) -> list[str]:
    out = []
    for r in t.rows:
        if r.get("row") != "group":
            continue
        share = f"{r['tokens_share_pct']:g}%" if r["tokens_share_pct"] is not None else "-"
        name = r[by] or ("(无)" if zh else "(none)")
        out.append(f"{r['tokens_rank']}. {name}: {r['total_tokens']:,} ({share}), {_money(r)}")
    return out or (["（无）"] if zh else ["(none)"])


def _quota_lines(store: Store, settings: Settings, zh: bool) -> list[str]:
    from tokenabacus.governance import quotaview

    rows = quotaview.status(quotaview.current(store, settings), quotaview.ledger_usage(store))
    used = []
    for r in rows:
        limit = r["effective_limit"]
        if limit:
            used.append((100 * r["used"] / limit, r))
    used.sort(key=lambda x: -x[0])
    if not used:
        return []
    out = ["", "**配额使用**" if zh else "**Quota use**"]
    for pct, r in used[:5]:
        amount = (
            show_money(r["used"], r["metric"].split(":", 1)[1]) if r["metric"].startswith("cost") else f"{r['used']:,}"
        )
        out.append(f"- {r['scope']}={r['name'] or '*'} {r['metric']}/{r['period']}: {pct:.0f}% ({amount})")
    return out


def _attachments(
    s: ScheduleConfig, depts: Table, projects: Table, peaks: Table, win: windows.Window
) -> tuple[Attachment, ...]:
    if s.attach == "none":
        return ()
    stem = f"tokenabacus-{s.name}-{win.label.replace(' ', '-')}"
    if s.attach == "csv":
        return (
            Attachment(f"{stem}.csv", csv_text(depts.rows, ["row", *depts.columns]).encode("utf-8-sig"), "text/csv"),
        )
    sheets = [
        Sheet("Departments", ["row", *depts.columns], depts.rows, [depts.title]),
        Sheet("Projects", ["row", *projects.columns], projects.rows, [projects.title]),
        Sheet("Peaks", peaks.columns, peaks.rows, [peaks.title]),
    ]
    return (Attachment(f"{stem}.xlsx", xlsx_bytes(sheets, stem), XLSX),)


def runs(store: Store, name: str | None = None) -> list[dict[str, Any]]:
    """The latest reports sent (of schedule ``name``, or of all), newest first."""
    return report_runs.recent(store.db, name)


async def send_now(store: Store, settings: Settings, name: str, at: datetime | None = None) -> dict[str, Any]:
    """Send schedule ``name``'s report for the period that ended last before ``at`` (default
    now), now (on demand)."""
    s = next((x for x in settings.alerts.schedules if x.name == name), None)
    if s is None:
        known = ", ".join(x.name for x in settings.alerts.schedules) or "none configured"
        raise LookupError(f"no scheduled report named {name!r} ({known})")
    due = just_ended(s, s.timezone or settings.governance.timezone, at or datetime.now(UTC))
    msg = await asyncio.to_thread(build, store, settings, s, due)
    run_id = await asyncio.to_thread(report_runs.claim, store.db, s.name, f"{due.period} (on demand {now_ms()})"[:64])
    deliveries = await send(notifiers(settings.alerts), s.channels, msg)
    if run_id is not None:
        await asyncio.to_thread(report_runs.record, store.db, run_id, deliveries)
    return {"schedule": s.name, "period": due.period, "deliveries": deliveries}


class ReportScheduler:
    """In the gateway: every ``tick_s``, the holder of the "reports" lease sends what is due."""

    def __init__(self, settings: Settings, store: Store, tick_s: float = 30.0, holder: str | None = None) -> None:
        self.settings, self.store, self.tick_s = settings, store, tick_s
        self.lease = Lease(store.db, "reports", holder or holder_id(), ttl_s=max(60.0, 3 * tick_s))
        self.channels = notifiers(settings.alerts)
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        if self.settings.alerts.enabled and self.settings.alerts.schedules:
            self._task = asyncio.create_task(self._run(), name="scheduled-reports")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            try:
                if await asyncio.to_thread(self.lease.acquire):
                    await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning("scheduled reports: %s: %s", type(e).__name__, str(e)[:200])
            await asyncio.sleep(self.tick_s)

    async def tick(self, now: datetime | None = None) -> list[str]:
        """Send every schedule that is due and not yet sent for its period; the periods sent."""
        now = now or datetime.now(UTC)
        sent = []
        for s in self.settings.alerts.schedules:
            due = last_due(s, s.timezone or self.settings.governance.timezone, now)
            if (now - due.send_at).total_seconds() > LATE_S:
                continue
            if any(r["period"] == due.period for r in await asyncio.to_thread(runs, self.store, s.name)):
                continue
            msg = await asyncio.to_thread(build, self.store, self.settings, s, due)
            run_id = await asyncio.to_thread(report_runs.claim, self.store.db, s.name, due.period)
            if run_id is None:
                continue  # sent already, by another process
            deliveries = await send(self.channels, s.channels, msg)
            await asyncio.to_thread(report_runs.record, self.store.db, run_id, deliveries)
            sent.append(f"{s.name}:{due.period}")
        return sent
