"""The chargeback workbook's words in the reader's language: column headers, sheet names,
heading lines and the labels of total rows. Names from the ledger (departments, models) and
numbers are never translated; a key with no label here is shown as it is."""

from __future__ import annotations

import os
from collections.abc import Mapping

LANGS = ("zh", "en")

_COLUMNS: dict[str, dict[str, str]] = {
    "en": {
        "row": "Row",
        "department": "Department",
        "project": "Project",
        "user": "User",
        "model": "Model",
        "requests": "Requests",
        "prompt_tokens": "Prompt tokens",
        "completion_tokens": "Completion tokens",
        "total_tokens": "Total tokens",
        "cached_tokens": "Cached tokens",
        "cost": "Cost",
        "adjustments": "Adjustments",
        "hardware": "Hardware",
        "amount_due": "Amount due",
        "currency": "Currency",
        "unpriced_requests": "Unpriced requests",
        "price_version": "Price version",
        "effective_from": "Effective from",
        "input_per_1m": "Input per 1M tokens",
        "cached_per_1m": "Cached input per 1M tokens",
        "output_per_1m": "Output per 1M tokens",
        "adjustment_id": "Adjustment",
        "at_local": "Booked at",
        "request_id": "Request",
        "amount": "Amount",
        "reason": "Reason",
        "created_by": "Booked by",
        "pool": "Pool",
        "basis": "Basis",
        "usage": "Usage",
        "share": "Share",
    },
    "zh": {
        "row": "行类型",
        "department": "部门",
        "project": "项目",
        "user": "用户",
        "model": "模型",
        "requests": "请求数",
        "prompt_tokens": "输入 tokens",
        "completion_tokens": "输出 tokens",
        "total_tokens": "总 tokens",
        "cached_tokens": "缓存 tokens",
        "cost": "费用",
        "adjustments": "调整",
        "hardware": "硬件分摊",
        "amount_due": "应付金额",
        "currency": "币种",
        "unpriced_requests": "未定价请求数",
        "price_version": "价格版本",
        "effective_from": "生效时间",
        "input_per_1m": "输入单价（每百万 tokens）",
        "cached_per_1m": "缓存输入单价（每百万 tokens）",
        "output_per_1m": "输出单价（每百万 tokens）",
        "adjustment_id": "调整编号",
        "at_local": "记账时间",
        "request_id": "请求编号",
        "amount": "金额",
        "reason": "原因",
        "created_by": "记账人",
        "pool": "资源池",
        "basis": "分摊依据",
        "usage": "用量",
        "share": "占比",
    },
}

# Sheet names, heading lines and row labels; {placeholders} filled by the caller.
_WORDS: dict[str, dict[str, str]] = {
    "en": {
        "summary": "Summary",
        "versions": "Price versions",
        "adjustments": "Adjustments",
        "hardware": "Hardware",
        "title": "Chargeback {month} ({tz})",
        "span": "Records from {since} to {until} (exclusive)",
        "dept_title": "{dept}: {month} ({tz})",
        "hardware_title": "Self-hosted hardware apportioned by use",
        "none": "none",
        "group": "",
        "subtotal": "subtotal",
        "total": "total",
        "grand total": "grand total",
        "dept_total": "department total",
    },
    "zh": {
        "summary": "汇总",
        "versions": "价格版本",
        "adjustments": "调整",
        "hardware": "硬件",
        "title": "费用分摊 {month}（{tz}）",
        "span": "记录时间 {since} 至 {until}（不含）",
        "dept_title": "{dept}：{month}（{tz}）",
        "hardware_title": "自建硬件按用量分摊",
        "none": "无",
        "group": "",
        "subtotal": "小计",
        "total": "合计",
        "grand total": "总计",
        "dept_total": "部门合计",
    },
}


def columns(lang: str) -> Mapping[str, str]:
    return _COLUMNS[lang]


def headers(cols: list[str], lang: str) -> list[str]:
    """The header cells of ``cols`` in ``lang``."""
    return [_COLUMNS[lang].get(c, c) for c in cols]


def word(key: str, lang: str, **values: str) -> str:
    return _WORDS[lang][key].format(**values)


def pick_lang(asked: str | None, configured: str | None = None, env: Mapping[str, str] | None = None) -> str:
    """The reader's language: as asked, else as configured, else the locale's (LC_ALL, LANG:
    zh_CN.UTF-8 and the like read Chinese), else English."""
    if asked:
        lang = asked.strip().lower()
        if lang not in LANGS:
            raise ValueError(f"lang {asked!r}: choose zh or en")
        return lang
    if configured in LANGS:
        return str(configured)
    env = os.environ if env is None else env
    locale = env.get("LC_ALL") or env.get("LC_MESSAGES") or env.get("LANG") or ""
    return "zh" if locale.lower().startswith("zh") else "en"
