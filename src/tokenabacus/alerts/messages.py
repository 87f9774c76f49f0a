"""What an alert says, in Chinese or English: the scope, the figure, the baseline or threshold,
and a link to the dashboard; its fields' labels in the same language and its time in ``zone``
(governance.timezone: the reader's), never English lines and a UTC stamp under Chinese text."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, tzinfo
from typing import Any

from tokenabacus.alerts.detect import Firing
from tokenabacus.alerts.notifiers import Message

TITLES = {
    "zh": {
        "spike": "用量突增",
        "burst": "高频调用",
        "drift": "计量偏差",
        "error_rate": "错误率过高",
        "quota": "配额告警",
        "upstream_down": "上游不可用",
        "test": "测试消息",
    },
    "en": {
        "spike": "Usage spike",
        "burst": "High-frequency burst",
        "drift": "Usage drift",
        "error_rate": "High error rate",
        "quota": "Quota threshold",
        "upstream_down": "Upstream down",
        "test": "Test message",
    },
}
UNITS_ZH = {
    "tokens": "Token",
    "requests": "次请求",
    "cost": "元",
    "tokens_per_request": "Token/请求",
    "requests/min": "次/分钟",
    "tokens/min": "Token/分钟",
}


def _n(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:,.0f}" if abs(v) >= 100 or float(v).is_integer() else f"{v:,.2f}"


def render(
    f: Firing, lang: str, severity: str, link: str | None, now: datetime | None = None, zone: tzinfo | None = None
) -> Message:
    zh = lang == "zh"
    title = f"[tokenabacus] {TITLES[lang].get(f.kind, f.kind)}: {f.scope}"
    unit = UNITS_ZH.get(f.unit, f.unit) if zh else f.unit
    d = f.detail
    if f.kind == "spike":
        lines = (
            [
                f"范围：{f.scope}",
                f"今日（截至目前）：{_n(f.figure)} {unit}，预计全天 {_n(d['projected'])}",
                f"基线（过去 {d['baseline_days']} 天日均）：{_n(f.baseline)} {unit}",
                f"为基线的 {d['ratio_pct']:g}%（预计 {d['projected_ratio_pct']:g}%），阈值 {f.threshold:g}%",
            ]
            if zh
            else [
                f"Scope: {f.scope}",
                f"Today so far: {_n(f.figure)} {unit}, projected {_n(d['projected'])} for the day",
                f"Baseline (daily mean of the last {d['baseline_days']} days): {_n(f.baseline)} {unit}",
                f"{d['ratio_pct']:g}% of baseline (projected {d['projected_ratio_pct']:g}%), "
                f"threshold {f.threshold:g}%",
            ]
        )
    elif f.kind == "burst":
        lines = (
            [
                f"调用方：{f.scope}",
                f"{d['minute']} 一分钟内 {d['requests']:,} 次请求、{d['tokens']:,} Token",
                f"阈值：{_n(f.threshold)} {unit}",
            ]
            if zh
            else [
                f"Caller: {f.scope}",
                f"{d['requests']:,} requests and {d['tokens']:,} tokens in the minute {d['minute']}",
                f"Threshold: {_n(f.threshold)} {unit}",
            ]
        )
    elif f.kind == "drift":
        lines = (
            [
                f"模型：{f.scope}",
                f"今日网关计数 {d['ours']:,}，上游报告 {d['upstream']:,}，相差 {f.figure:g}%",
                f"容差：{f.threshold:g}%，不一致的请求 {d['mismatched_requests']:,} 个",
            ]
            if zh
            else [
                f"Model: {f.scope}",
                f"Today our count {d['ours']:,}, the upstream's {d['upstream']:,}: {f.figure:g}% apart",
                f"Tolerance {f.threshold:g}%, {d['mismatched_requests']:,} requests disagreed",
            ]
        )
    elif f.kind == "error_rate":
        lines = (
            [
                f"模型：{f.scope}",
                f"最近 {d['window_minutes']} 分钟 {d['requests']:,} 个请求中 {d['errors']:,} 个失败（{f.figure:g}%）",
                f"阈值：{f.threshold:g}%",
            ]
            if zh
            else [
                f"Model: {f.scope}",
                f"{d['errors']:,} of {d['requests']:,} requests failed in the last "
                f"{d['window_minutes']} minutes ({f.figure:g}%)",
                f"Threshold: {f.threshold:g}%",
            ]
        )
    elif f.kind == "quota":
        lines = (
            [
                f"限额：{f.scope}",
                f"已用 {d['used']:,} / {d['limit']:,}（{f.figure:g}%），达到 {f.threshold:g}% 阈值",
                f"重置时间：{d.get('resets') or '-'}",
            ]
            if zh
            else [
                f"Limit: {f.scope}",
                f"Used {d['used']:,} of {d['limit']:,} ({f.figure:g}%): the {f.threshold:g}% threshold",
                f"Resets: {d.get('resets') or '-'}",
            ]
        )
    elif f.kind == "upstream_down":
        lines = [f"模型 {f.scope} 已 {f.figure:.0f} 秒不可用"] if zh else [f"{f.scope} not ready for {f.figure:.0f} s"]
    else:
        lines = [f"{f.scope}: {f.figure}"]
    return Message(
        title=title,
        lines=tuple(lines),
        rule=f.rule,
        scope=f.scope,
        figure=f.figure,
        baseline=f.baseline,
        threshold=f.threshold,
        unit=f.unit,
        severity=severity,  # type: ignore[arg-type]
        link=link,
        fired_at=now or datetime.now(UTC),
        language=lang,
        zone=zone,
    )


def from_row(a: Mapping[str, Any], lang: str, link: str | None, zone: tzinfo | None = None) -> Message:
    """An alert's message rebuilt from its history row: what each delivery sends, the same after
    a restart as when it fired."""
    return Message(
        title=a.get("title") or f"[tokenabacus] {TITLES[lang].get(a['kind'], a['kind'])}: {a['scope']}",
        lines=tuple(a["message"].split("\n")) if a["message"] else (),
        rule=a["rule"],
        scope=a["scope"],
        figure=a["figure"],
        baseline=a["baseline"],
        threshold=a["threshold"],
        unit=a.get("unit"),
        severity=a["severity"],
        link=link,
        fired_at=datetime.fromtimestamp(a["fired_at"] / 1000, UTC),
        language=lang,
        zone=zone,
    )


def test_message(lang: str, link: str | None, zone: tzinfo | None = None) -> Message:
    zh = lang == "zh"
    return Message(
        title=f"[tokenabacus] {TITLES[lang]['test']}",
        lines=(("这是一条测试消息：告警通道配置正确。",) if zh else ("A test message: this alert channel works.",)),
        rule="test",
        severity="info",
        link=link,
        language=lang,
        zone=zone,
    )
