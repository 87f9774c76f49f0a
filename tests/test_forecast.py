"""Forecasts and the planner through the real CLI and a real gateway: a ledger filled with 60 days
of synthetic history (a known trend and weekday pattern plus noise) on every ledger database; the
forecast totals cover the truth within their 80% interval; a group with too little history says
so; an estimate is the hand-computed cost, rounded per request as the gateway charges."""

from __future__ import annotations

import json
import random
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import httpx
import numpy as np
import pytest

from conftest import GatewayProc
from tokenabacus.billing.forecast import daily_sums, forecast_total
from tokenabacus.billing.prices import PriceBook, PriceVersion
from tokenabacus.ledger.record import REJECTED, start_record
from tokenabacus.ledger.store import Store

ZONE = "Asia/Shanghai"
AS_OF = date(2026, 5, 1)  # history: the 60 days before; "month" is June 2026, "quarter" 2026-Q3
# 0.8 and 2.4 per 1k tokens: a record costs exactly 800 * prompt + 2,400 * completion micros.
BOOK = PriceBook(stored=[PriceVersion("pv_test", "qwen-7b-chat", 0, "CNY", 800_000_000, None, 2_400_000_000)])
WEEKDAY = [3000, 4000, 4000, 3500, 2000, -7000, -9500]  # Monday..Sunday, adds up to zero


def expected(project: str, day: date) -> float:
    """The truth without noise: a linear trend plus the weekday pattern (alpha: twice beta's)."""
    d = (day - (AS_OF - timedelta(days=60))).days
    scale = 2 if project == "alpha" else 1
    return scale * (20000 + 300 * d + WEEKDAY[day.weekday()])


def record(when: datetime, project: str, department: str, tokens: int, status: str = "ok", model: str = "qwen-7b-chat"):
    """A finished record of ``tokens`` (70% prompt) at ``when``, charged by the test price book."""
    prompt = round(tokens * 0.7)
    rec = start_record(
        model=model,
        endpoint="/v1/chat/completions",
        user="u",
        project=project,
        department=department,
        prompt_tokens=prompt,
        completion_tokens=tokens - prompt,
        status=status,
    )
    rec.finish()
    rec.timestamp = int(when.timestamp() * 1000)
    BOOK.charge(rec)
    return rec.to_dict()


def history(days: int, end: date, projects: dict[str, str], seed: int = 7) -> list[dict]:
    """``days`` days before ``end`` for each project (-> department): two records a day at
    09:00 and 21:00 local time, adding up to the truth plus Gaussian noise (sd 6% of the level)."""
    rng = random.Random(seed)
    out = []
    for i in range(days):
        day = end - timedelta(days=days - i)
        for project, department in projects.items():
            total = max(round(expected(project, day) * (1 + rng.gauss(0, 0.06))), 2)
            for hour, part in ((9, total // 2), (21, total - total // 2)):
                out.append(
                    record(
                        datetime(day.year, day.month, day.day, hour, tzinfo=ZoneInfo(ZONE)), project, department, part
                    )
                )
    return out


def cli_on(tmp_path, url: str | None = None) -> GatewayProc:
    cfg: dict = {"governance": {"timezone": ZONE}}
    if url:
        cfg["ledger"] = {"url": url}
    return GatewayProc(tmp_path / "data", cfg)


def ledger_url(gw: GatewayProc) -> str:
    return f"sqlite:///{gw.data_dir / 'ledger.db'}"


def forecast_json(gw: GatewayProc, *args: str) -> dict:
    out = gw.cli("forecast", "--as-of", AS_OF.isoformat(), "--format", "json", *args)
    return {r.get("project", r.get("department")): r for r in json.loads(out.stdout)}


def truth(project: str, first: date, last: date) -> float:
    return sum(expected(project, first + timedelta(days=i)) for i in range((last - first).days + 1))


# The forecast --------------------------------------------------------------------------------------
def test_forecast_covers_the_truth_on_every_database(tmp_path, db_url):
    gw = cli_on(tmp_path, db_url)
    store = Store(db_url)
    try:
        recs = history(60, AS_OF, {"alpha": "marketing", "beta": "rnd"})
        recs += history(10, AS_OF, {"gamma": "rnd"})  # too little history
        # Neither a refused request nor today's (incomplete) use is history.
        recs.append(record(datetime(2026, 4, 20, 12, tzinfo=ZoneInfo(ZONE)), "alpha", "marketing", 10**9, REJECTED))
        recs.append(record(datetime(2026, 5, 1, 8, tzinfo=ZoneInfo(ZONE)), "alpha", "marketing", 10**9))
        assert store.usage.insert(recs) == len(recs)
        # The forecast prices its tokens from the price book: the price the records were charged at.
        (pv,) = BOOK.history("qwen-7b-chat")
        store.prices.add(pv.model, pv.currency, pv.input, pv.cached, pv.output, pv.effective_from, "test")
    finally:
        store.close()

    checks = {"month": (date(2026, 6, 1), date(2026, 6, 30)), "90d": (AS_OF, AS_OF + timedelta(days=89))}
    by_horizon = {}
    for horizon, (first, last) in checks.items():
        rows = by_horizon[horizon] = forecast_json(gw, "--by", "project", "--horizon", horizon)
        assert set(rows) == {"alpha", "beta", "gamma"}
        for project in ("alpha", "beta"):
            r = rows[project]
            assert (r["from"], r["to"], r["history_days"], r["level"]) == (str(first), str(last), 60, 0.8)
            true_tokens = truth(project, first, last)
            assert r["tokens_low"] <= r["tokens"] <= r["tokens_high"], r
            assert r["tokens_low"] <= true_tokens <= r["tokens_high"], (horizon, project, true_tokens, r)
            assert (r["tokens_high"] - r["tokens_low"]) / r["tokens"] < 0.2, r  # an interval that says something
            # Cost: 800 per prompt token, 2,400 per completion token, 70% prompt -> 1,280 per token.
            assert r["currency"] == "CNY" and r["note"] is None
            assert r["cost_low_micros"] <= r["cost_micros"] <= r["cost_high_micros"]
            assert r["cost_low_micros"] <= 1280 * true_tokens <= r["cost_high_micros"], (horizon, project, r)
        gamma = rows["gamma"]
        assert gamma["tokens"] is None and gamma["cost_micros"] is None
        assert gamma["note"] == "only 10 days of history (a forecast needs 14)"

    # By department: marketing is alpha alone; rnd is beta plus gamma, which joined 10 days ago
    # with beta's figures: the level doubled lately, and the interval is honest about it.
    deps = forecast_json(gw, "--by", "department", "--horizon", "month")
    assert set(deps) == {"marketing", "rnd"}
    assert deps["marketing"]["tokens"] == by_horizon["month"]["alpha"]["tokens"]
    rnd = deps["rnd"]
    assert rnd["history_days"] == 60
    assert rnd["tokens_low"] <= 2 * truth("beta", date(2026, 6, 1), date(2026, 6, 30)) <= rnd["tokens_high"]
    only = forecast_json(gw, "--by", "department", "--horizon", "quarter", "--department", "marketing")
    assert set(only) == {"marketing"} and (only["marketing"]["from"], only["marketing"]["to"]) == (
        "2026-07-01",
        "2026-09-30",
    )

    table = gw.cli("forecast", "--as-of", AS_OF.isoformat(), "--horizon", "month").stdout
    assert "80% interval" in table and "2026-06" in table and "¥" in table
    assert "only 10 days of history" in table

    # Month-end, as of the 20th: the month's 19 complete days as recorded, plus the forecast of
    # the 20th to the 31st (today's record so far is not history).
    mid = date(2026, 4, 20)
    end = {
        r["project"]: r
        for r in json.loads(
            gw.cli("forecast", "--as-of", mid.isoformat(), "--format", "json", "--horizon", "month-end").stdout
        )
    }
    assert set(end) == {"alpha", "beta"}  # gamma's first record comes later
    for project in ("alpha", "beta"):
        r = end[project]
        mine = [
            x
            for x in recs
            if x["project"] == project
            and x["status"] != REJECTED
            and date(2026, 4, 1) <= datetime.fromtimestamp(x["timestamp"] / 1000, ZoneInfo(ZONE)).date() < mid
        ]
        assert (r["from"], r["to"], r["days"]) == ("2026-04-20", "2026-04-30", 11)
        assert r["so_far_tokens"] == sum(x["total_tokens"] for x in mine)
        assert r["so_far_cost_micros"] == sum(x["cost_micros"] for x in mine)
        assert r["month_tokens"] == r["so_far_tokens"] + r["tokens"]
        assert r["month_tokens_low"] == r["so_far_tokens"] + r["tokens_low"]
        assert r["month_cost_micros"] == r["so_far_cost_micros"] + r["cost_micros"]
        assert r["month_cost_high_micros"] == r["so_far_cost_micros"] + r["cost_high_micros"]
        month_truth = r["so_far_tokens"] + truth(project, mid, date(2026, 4, 30))
        assert r["month_tokens_low"] <= month_truth <= r["month_tokens_high"], (project, r)
    shown = gw.cli("forecast", "--as-of", mid.isoformat(), "--horizon", "month-end").stdout
    assert "so_far_tokens" in shown and "month_cost" in shown


def test_forecast_from_today_and_too_little_history(tmp_path):
    gw = cli_on(tmp_path)
    today = datetime.now(ZoneInfo(ZONE)).date()
    store = Store(ledger_url(gw))
    try:
        store.usage.insert(history(21, today, {"alpha": "marketing"}) + history(5, today, {"new": "rnd"}))
    finally:
        store.close()
    rows = {r["project"]: r for r in json.loads(gw.cli("forecast", "--horizon", "30d", "--format", "json").stdout)}
    assert rows["alpha"]["from"] == str(today) and rows["alpha"]["days"] == 30
    assert rows["alpha"]["tokens_low"] <= rows["alpha"]["tokens"] <= rows["alpha"]["tokens_high"]
    assert rows["new"]["tokens"] is None and rows["new"]["note"] == "only 5 days of history (a forecast needs 14)"
    csv_out = gw.cli("forecast", "--horizon", "30d", "--format", "csv").stdout.splitlines()
    assert csv_out[0].startswith("project,history_days,from,to,days,level,tokens,tokens_low,tokens_high,currency")
    for bad, needle in (
        (["--horizon", "fortnight"], "use 30d, 90d"),
        (["--horizon", "999d"], "give 1 to 366 days"),
        (["--by", "user"], "forecast by project or department"),
        (["--tz", "Mars/Base"], "unknown time zone"),
        (["--as-of", "May 1"], "expected a date"),
    ):
        r = gw.cli("forecast", *bad, check=False)
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and needle in r.stderr, (bad, r.stderr)


@pytest.mark.filterwarnings("ignore::statsmodels.tools.sm_exceptions.ConvergenceWarning")
def test_the_sum_interval_agrees_with_statsmodels_for_one_day():
    """For a one-day window the exact variance of the sum is statsmodels' own forecast variance."""
    from statsmodels.tsa.statespace.structural import UnobservedComponents

    rng = np.random.default_rng(3)
    d = np.arange(60)
    y = 10000 + 100 * d + np.array(WEEKDAY)[d % 7] + rng.normal(0, 600, 60)
    scale = float(np.abs(y).mean())
    res = UnobservedComponents(y / scale, level="local linear trend", seasonal=7).fit(disp=False)
    frame = res.get_forecast(30).summary_frame(alpha=0.2)
    for h in (1, 7, 30):
        t = forecast_total(list(y), h, h)
        assert t is not None
        assert t.point == pytest.approx(frame["mean"].iloc[h - 1] * scale, abs=1)
        assert t.low == pytest.approx(frame["mean_ci_lower"].iloc[h - 1] * scale, abs=1)
        assert t.high == pytest.approx(frame["mean_ci_upper"].iloc[h - 1] * scale, abs=1)
    # A window's interval is narrower than the per-day intervals added up, wider than their root sum.
    whole = forecast_total(list(y), 1, 30)
    assert whole is not None
    half = (frame["mean_ci_upper"] - frame["mean_ci_lower"]) * scale / 2
    assert float(np.sqrt((half**2).sum())) < (whole.high - whole.low) / 2 < float(half.sum())


def test_days_are_cut_at_local_midnight_in_any_zone(tmp_path, db_url):
    """The daily-sums query in a zone 5:45 off UTC (Nepal): the database buckets by 15 minutes."""
    store = Store(db_url)
    try:
        zone = ZoneInfo("Asia/Kathmandu")
        last = datetime(2026, 3, 2, 0, 0, tzinfo=zone)  # midnight there
        recs = [
            record(last - timedelta(milliseconds=1), "p", "d", 100),  # 1 March, the last ms
            record(last, "p", "d", 200),  # 2 March, the first ms
            record(last + timedelta(hours=23, minutes=59), "p", "d", 400),
            record(last - timedelta(hours=30), "p", "d", 800, model="other"),  # 28 Feb, a model with no price
        ]
        store.usage.insert(recs)
        sums = daily_sums(store.db, "project", date(2026, 2, 28), date(2026, 3, 3), zone)
        assert {k: v.tokens for k, v in sums.items()} == {
            ("p", None, date(2026, 2, 28)): 800,
            ("p", "CNY", date(2026, 3, 1)): 100,
            ("p", "CNY", date(2026, 3, 2)): 600,
        }
        assert (
            sums[("p", "CNY", date(2026, 3, 2))].cost == 1280 * 600
            and sums[("p", "CNY", date(2026, 3, 2))].requests == 2
        )
        by_model = daily_sums(store.db, "model", date(2026, 2, 28), date(2026, 3, 3), zone, values={"other"})
        assert {k: v.tokens for k, v in by_model.items()} == {("other", None, date(2026, 2, 28)): 800}
        assert (
            by_model[("other", None, date(2026, 2, 28))].cost,
            by_model[("other", None, date(2026, 2, 28))].unpriced,
        ) == (0, 1)
    finally:
        store.close()


# The planner ---------------------------------------------------------------------------------------
def test_estimate_is_the_hand_computed_cost(tmp_path):
    past = (datetime.now(ZoneInfo(ZONE)) - timedelta(days=3)).strftime("%Y-%m-%d")
    cfg = {
        "governance": {"timezone": ZONE},
        "prices": [{"model": "qwen-vl", "input": 2.5, "output": 2.5, "per": "1k", "currency": "CNY", "from": past}],
    }
    gw = GatewayProc(tmp_path / "data", cfg)
    # No ledger yet: the config's prices are the book, and estimating creates no ledger.
    out = gw.cli(
        "estimate",
        "--model",
        "qwen-vl",
        "--requests-per-day",
        "1000",
        "--prompt-tokens",
        "1200",
        "--completion-tokens",
        "350",
        "--format",
        "json",
    )
    (row,) = json.loads(out.stdout)
    # 1,550 tokens at ¥2.5 per 1k = ¥3.875 a request; 30,000 requests.
    assert row["cost_per_request_micros"] == 3_875_000 and row["cost_micros"] == 3_875_000 * 30_000
    assert (row["requests"], row["total_tokens"], row["currency"]) == (30_000, 46_500_000, "CNY")
    assert not (gw.data_dir / "ledger.db").exists()

    gw.cli("prices", "set", "qwen-7b-chat", "--input", "0.8", "--output", "2.4", "--cached", "0.2", "--per", "1k")
    out = gw.cli(
        "estimate",
        "--model",
        "qwen-7b-chat",
        "--requests-per-day",
        "1000",
        "--prompt-tokens",
        "1200",
        "--completion-tokens",
        "350",
        "--cached-tokens",
        "400",
        "--days",
        "31",
        "--format",
        "json",
    )
    (row,) = json.loads(out.stdout)
    # 800 uncached x ¥0.8/1k + 400 cached x ¥0.2/1k + 350 x ¥2.4/1k = ¥0.64 + ¥0.08 + ¥0.84 = ¥1.56.
    assert row["cost_per_request_micros"] == 1_560_000
    assert row["cost_per_day_micros"] == 1_560_000_000 and row["cost_micros"] == 1_560_000 * 31_000
    assert (row["prompt_tokens"], row["cached_tokens"], row["completion_tokens"]) == (
        37_200_000,
        12_400_000,
        10_850_000,
    )
    table = gw.cli(
        "estimate",
        "--model",
        "qwen-7b-chat",
        "--requests-per-day",
        "1000",
        "--prompt-tokens",
        "1200",
        "--completion-tokens",
        "350",
        "--cached-tokens",
        "400",
        "--days",
        "31",
    ).stdout
    assert "¥48,360.00" in table and "¥1.56" in table  # amounts for a person: minor units, separators

    # Each request is rounded on its own, as the gateway charges it: 7 tokens at 3.333333 per 1M
    # are 23.33 micros -> 23; 30,000 of them are 690,000 micros, not round(699,999.93).
    gw.cli("prices", "set", "tiny", "--input", "3.333333", "--output", "0", "--per", "1M", "--currency", "USD")
    out = gw.cli(
        "estimate",
        "--model",
        "tiny",
        "--requests-per-day",
        "1000",
        "--prompt-tokens",
        "7",
        "--completion-tokens",
        "0",
        "--format",
        "json",
    )
    (row,) = json.loads(out.stdout)
    assert (row["cost_per_request_micros"], row["cost_micros"], row["currency"]) == (23, 690_000, "USD")

    r = gw.cli(
        "estimate",
        "--model",
        "nope",
        "--requests-per-day",
        "1",
        "--prompt-tokens",
        "1",
        "--completion-tokens",
        "1",
        check=False,
    )
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr == "error: model 'nope' has no price in force (see `tokenabacus prices list`)\n"
    r = gw.cli(
        "estimate",
        "--model",
        "tiny",
        "--requests-per-day",
        "1",
        "--prompt-tokens",
        "5",
        "--completion-tokens",
        "1",
        "--cached-tokens",
        "6",
        check=False,
    )
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "at most that" in r.stderr


# /admin -------------------------------------------------------------------------------------------
def admin(gw: GatewayProc, key: str) -> httpx.Client:
    base = gw.base_url.removesuffix("/v1") + "/admin"
    return httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=60)


def test_admin_forecast_and_estimate_by_role(tmp_path):
    cfg = {
        "governance": {"timezone": ZONE},
        "prices": [{"model": "qwen-7b-chat", "input": 0.8, "output": 2.4, "per": "1k"}],
    }
    gw = GatewayProc(tmp_path / "data", cfg).start()
    try:
        store = gw.store()
        try:
            store.usage.insert(history(30, AS_OF, {"alpha": "marketing", "beta": "rnd"}))
        finally:
            store.close()
        viewer = json.loads(gw.cli("keys", "create", "--role", "viewer", "--project", "alpha", "--json").stdout)["key"]
        member = gw.create_key(user="m", project="alpha", department="marketing")
        params = {"by": "project", "horizon": "month", "as_of": AS_OF.isoformat()}
        with admin(gw, gw.admin_key) as a:
            rows = a.get("/forecast", params=params).json()
            assert {r["project"] for r in rows} == {"alpha", "beta"}
            alpha = next(r for r in rows if r["project"] == "alpha")
            assert alpha["tokens_low"] <= alpha["tokens"] <= alpha["tokens_high"] and alpha["currency"] == "CNY"
            cli = gw.cli("forecast", "--as-of", AS_OF.isoformat(), "--format", "json")
            assert rows == json.loads(cli.stdout)  # the CLI and /admin agree
            r = a.get("/forecast", params={**params, "horizon": "soon"})
            assert r.status_code == 400 and "horizon" in r.json()["error"]["message"]
            est = a.get(
                "/estimate",
                params={
                    "model": "qwen-7b-chat",
                    "requests_per_day": 100,
                    "prompt_tokens": 1000,
                    "completion_tokens": 500,
                },
            )
            assert est.status_code == 200 and est.json()["cost_micros"] == (800 * 1000 + 2400 * 500) * 100 * 30
            r = a.get(
                "/estimate", params={"model": "x", "requests_per_day": 1, "prompt_tokens": 1, "completion_tokens": 1}
            )
            assert r.status_code == 404 and "no price" in r.json()["error"]["message"]
            assert {"/forecast", "/estimate", "/reconcile"} <= set(a.get("/openapi.json").json()["paths"])
        with admin(gw, viewer) as v:
            rows = v.get("/forecast", params=params).json()
            assert [r["project"] for r in rows] == ["alpha"] and rows[0]["tokens"] == alpha["tokens"]
            r = v.get("/forecast", params={**params, "project": "beta"})
            assert r.status_code == 403 and r.json()["error"]["code"] == "out_of_scope"
            est = v.get(
                "/estimate",
                params={
                    "model": "qwen-7b-chat",
                    "requests_per_day": 100,
                    "prompt_tokens": 1000,
                    "completion_tokens": 500,
                },
            )
            assert est.status_code == 200
        with admin(gw, member) as m:
            assert m.get("/forecast", params=params).status_code == 403
            assert m.get("/estimate", params={"model": "qwen-7b-chat"}).status_code == 403
    finally:
        gw.stop()
