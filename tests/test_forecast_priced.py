"""The forecast's cost on the demo ledger, through the real CLI: the forecast tokens priced by the
price book (the config file's versions and the ledger's, the version in force on the horizon's
days, a price cut in the history that must not drag next month's cost to zero), the unpriced model
left out and named, never charged as 0; and the fits kept on disk: a second run answers the same,
a changed past day forecasts again."""

from __future__ import annotations

import json
import sqlite3
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from conftest import GatewayProc
from tokenabacus.ledger.record import start_record
from tokenabacus.money import show_money

ZONE = "Asia/Shanghai"
TZ = ZoneInfo(ZONE)
UNTIL = datetime(2026, 11, 30, 23, 0, tzinfo=TZ)  # the demo month ends here
AS_OF = date(2026, 12, 1)  # history: November; "month" is December
NEXT_MONTH = datetime(2026, 12, 1, tzinfo=TZ)
MIX_DAYS = 28
# A config-file price (the demo seeds prices only for models the book has none for).
CONFIG_PRICE = {"model": "llama-3.1-8b", "input": 0.3, "output": 0.6, "per": "1k", "currency": "CNY"}


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> GatewayProc:
    data = tmp_path_factory.mktemp("forecast") / "data"
    gw = GatewayProc(data, {"governance": {"timezone": ZONE}, "prices": [CONFIG_PRICE]})
    until = UNTIL.isoformat(timespec="minutes")
    gw.cli("demo", "seed", "--records", "8000", "--seed", "11", "--tz", ZONE, "--until", until)
    # A new price from the first day of the horizon: next month is charged at it, not today's.
    gw.cli("prices", "set", "qwen2.5-7b-instruct", "--input", "0.4", "--cached", "0.1", "--output", "1.2",
           "--per", "1k", "--from", "2026-12-01")  # fmt: skip
    return gw


def sql(gw: GatewayProc, query: str, args: tuple = ()) -> list[tuple]:
    with sqlite3.connect(gw.data_dir / "ledger.db") as db:
        return db.execute(query, args).fetchall()


def in_force(gw: GatewayProc, model: str, at_ms: int) -> tuple[int, int | None, int] | None:
    """(input, cached, output) micros per 1M of ``model``'s version in force at ``at_ms``: the
    ledger's versions, or the config file's price (in force always) when the ledger has none."""
    rows = sql(
        gw,
        "SELECT input_per_mtok_micros, cached_per_mtok_micros, output_per_mtok_micros FROM price_versions"
        " WHERE model = ? AND effective_from <= ? ORDER BY effective_from DESC, created_at DESC LIMIT 1",
        (model, at_ms),
    )
    if rows:
        return rows[0]
    if model == CONFIG_PRICE["model"]:
        return (300_000_000, None, 600_000_000)  # 0.3 and 0.6 per 1k
    return None


def forecast(gw: GatewayProc, *args: str) -> dict:
    out = gw.cli("forecast", "--by", "department", "--as-of", AS_OF.isoformat(), "--format", "json", *args)
    return {r["department"]: r for r in json.loads(out.stdout)}


def test_the_forecast_cost_is_its_tokens_at_the_price_book(demo):
    rows = forecast(demo, "--horizon", "month")
    assert len(rows) == 6 and all(r["currency"] == "CNY" for r in rows.values())
    since = int(datetime(2026, 12, 1, tzinfo=TZ).timestamp() * 1000) - MIX_DAYS * 86_400_000
    until = int(NEXT_MONTH.timestamp() * 1000)
    at = int(NEXT_MONTH.timestamp() * 1000)  # the horizon's first day begins: the new qwen price
    for dept, r in rows.items():
        mix = sql(
            demo,
            "SELECT model, SUM(prompt_tokens), SUM(cached_tokens), SUM(completion_tokens) FROM usage_records"
            " WHERE department = ? AND timestamp >= ? AND timestamp < ? AND status != 'rejected'"
            " AND prompt_tokens IS NOT NULL AND completion_tokens IS NOT NULL GROUP BY model",
            (dept, since, until),
        )
        total = sum(p + o for _, p, _, o in mix)
        exact, unpriced = 0, {}
        for model, p, c, o in mix:
            price = in_force(demo, model, at)
            if price is None:
                unpriced[model] = (p + o) / total
                continue
            inp, cached, out = price
            hit = min(c or 0, p)
            exact += (p - hit) * inp + hit * (inp if cached is None else cached) + o * out
        per_token = exact / 1_000_000 / total  # micros per forecast token
        assert per_token > 0
        # Cost and its interval are the tokens' at that price (each rounded on its own).
        for cost, tokens in (("cost_micros", "tokens"), ("cost_low_micros", "tokens_low"), ("cost_high_micros",
                             "tokens_high")):  # fmt: skip
            if r[tokens] == 0:
                assert r[cost] == 0, (dept, r)
            else:
                assert r[cost] == pytest.approx(r[tokens] * per_token, abs=per_token + 1), (dept, cost, r)
        assert r["cost_micros"] > 0
        # The demo's unpriced model stays unpriced: named in the note, left out of the cost.
        assert set(unpriced) == {"internal-finetune-v2"}, unpriced
        share = f"{sum(unpriced.values()):.1%}"
        assert (
            f"{share} of the last 28 days' tokens are of models with no price in force (internal-finetune-v2)"
            in (r["note"])
        ), r["note"]

    table = demo.cli("forecast", "--by", "department", "--as-of", AS_OF.isoformat()).stdout
    rd = rows["rd"]
    assert show_money(rd["cost_micros"], "CNY") in table  # a person reads ¥12,345.68


def test_a_month_with_no_priced_use_has_no_cost_not_zero(demo):
    only = forecast(demo, "--horizon", "30d", "--department", "rd")
    (rd,) = only.values()
    assert rd["cost_micros"] and rd["cost_micros"] > 0
    # An organization whose only model has no price: tokens forecast, cost unknown (None, not 0).
    store = demo.store()
    try:
        recs = []
        for i in range(20):
            day = datetime(2026, 11, 11, 10, tzinfo=TZ) + timedelta(days=i)
            who = {"user": "x", "project": "lab", "department": "lab"}
            rec = start_record(model="internal-finetune-v2", endpoint="/v1/chat/completions", **who,
                               prompt_tokens=1000 + i, completion_tokens=300)  # fmt: skip
            rec.finish()
            rec.timestamp = int(day.timestamp() * 1000)
            recs.append(rec.to_dict())
        store.usage.insert(recs)
    finally:
        store.close()
    lab = forecast(demo, "--horizon", "month", "--department", "lab")["lab"]
    assert lab["tokens"] and lab["tokens"] > 0
    assert lab["currency"] is None and lab["cost_micros"] is None and lab["cost_high_micros"] is None
    assert (
        lab["note"]
        == "no price in force for the models used in the last 28 days (internal-finetune-v2): no cost forecast"
    )


def test_fits_are_kept_and_a_changed_past_day_fits_again(demo):
    cache = demo.data_dir / "cache" / "forecast"
    first = demo.cli("forecast", "--by", "project", "--as-of", AS_OF.isoformat(), "--format", "json").stdout
    kept = {p.name: p.stat().st_mtime_ns for p in cache.glob("*.json")}
    assert len(kept) >= 10  # one per project with enough history
    again = demo.cli("forecast", "--by", "project", "--as-of", AS_OF.isoformat(), "--format", "json").stdout
    assert again == first and {p.name: p.stat().st_mtime_ns for p in cache.glob("*.json")}.keys() == kept.keys()
    # A late record for a past day changes that project's history: its forecast is fitted again.
    (project,) = sql(demo, "SELECT project FROM usage_records WHERE department = 'rd' LIMIT 1")[0]
    store = demo.store()
    try:
        rec = start_record(model="qwen2.5-7b-instruct", endpoint="/v1/chat/completions", user="late",
                           project=project, department="rd", prompt_tokens=2_000_000, completion_tokens=10)  # fmt: skip
        rec.finish()
        rec.timestamp = int(datetime(2026, 11, 28, 15, tzinfo=TZ).timestamp() * 1000)
        store.usage.insert([rec.to_dict()])
    finally:
        store.close()
    after = demo.cli("forecast", "--by", "project", "--as-of", AS_OF.isoformat(), "--format", "json").stdout
    before = {r["project"]: r for r in json.loads(first)}
    now = {r["project"]: r for r in json.loads(after)}
    assert now[project]["tokens"] != before[project]["tokens"]
    assert len(set(p.name for p in cache.glob("*.json")) - kept.keys()) == 1  # that project's new fit
