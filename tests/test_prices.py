"""Money through the real gateway: prices set in the config file, the CLI and /admin charge every
record when it is written (cost, price version, currency), exactly; adjustments are separate signed
entries; hardware costs split exactly across departments and projects on every ledger database."""

from __future__ import annotations

import getpass
import json
import subprocess
import time
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from zoneinfo import ZoneInfo

import httpx
import openai
import pytest
import yaml

from conftest import BIN, EMBEDDED, GatewayProc
from records import sample_records
from tokenabacus.billing.hardware import apportion, largest_remainder
from tokenabacus.billing.prices import config_version_id, cost_micros
from tokenabacus.calendar import parse_time
from tokenabacus.ledger.store import Store
from tokenabacus.money import parse_price

SAY = [{"role": "user", "content": "Say hi"}]
COST_FIELDS = ("cost_micros", "price_version", "currency")


def ask(gw: GatewayProc, key: str, messages=SAY, max_tokens: int = 3) -> dict:
    """One chat completion; its ledger record."""
    raw = gw.client(key).chat.completions.with_raw_response.create(
        model=EMBEDDED, messages=messages, max_tokens=max_tokens, temperature=0
    )
    return gw.record(raw.headers["x-request-id"])


def expected_cost(rec: dict, inp: int, cached: int | None, out: int) -> int:
    """The formula, computed independently with decimals from the record's own token fields."""
    hit = rec["cached_tokens"] or 0
    exact = (
        Decimal(rec["prompt_tokens"] - hit) * inp
        + Decimal(hit) * (inp if cached is None else cached)
        + Decimal(rec["completion_tokens"]) * out
    )
    return int((exact / 1_000_000).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def charged_with(gw: GatewayProc, key: str, version_id: str, timeout: float = 8.0) -> dict:
    """Send requests until one is charged at ``version_id`` (a running gateway sees a new price
    within its refresh interval); its record."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rec = ask(gw, key)
        if rec["price_version"] == version_id:
            return rec
        time.sleep(0.2)
    raise AssertionError(f"no record charged at {version_id} within {timeout}s")


def admin_http(gw: GatewayProc, key: str | None = None) -> httpx.Client:
    base = gw.base_url.removesuffix("/v1") + "/admin"
    return httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key or gw.admin_key}"}, timeout=30)


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    g = GatewayProc(tmp_path_factory.mktemp("prices") / "data").start()
    yield g
    g.stop()


@pytest.fixture(scope="module")
def key(gw):
    return gw.create_key(user="li.lei", project="campaign-2024", department="marketing")


# Charging at run time ----------------------------------------------------------------------------
def test_prices_set_at_run_time_charge_new_records_and_never_past_ones(gw, key):
    unpriced = ask(gw, key)
    assert unpriced["status"] == "ok" and unpriced["total_tokens"] > 0
    assert {f: unpriced[f] for f in COST_FIELDS} == dict.fromkeys(COST_FIELDS)  # unknown, never 0

    out = gw.cli("prices", "set", EMBEDDED, "--input", "0.8", "--output", "2.4", "--cached", "0.2", "--per", "1k")
    v1 = out.stdout.split(":")[0]
    assert v1.startswith("pv_") and "¥0.8" in out.stdout, out.stdout
    rec1 = charged_with(gw, key, v1)
    assert rec1["currency"] == "CNY"
    assert rec1["cost_micros"] == expected_cost(rec1, 800_000_000, 200_000_000, 2_400_000_000)
    assert rec1["cost_micros"] > 0

    # Cached prompt tokens at the cached price: the same long prompt twice hits the KV cache.
    long = [
        {
            "role": "system",
            "content": "你是一名资深的市场营销顾问。" + "Answer briefly and in the user's language. " * 8,
        },
        {"role": "user", "content": "请给出三个卖点。"},
    ]
    ask(gw, key, long, max_tokens=2)
    raw = gw.client(key).chat.completions.with_raw_response.create(
        model=EMBEDDED, messages=long, max_tokens=2, temperature=0
    )
    hit = gw.record(raw.headers["x-request-id"])
    assert raw.parse().usage.prompt_tokens_details.cached_tokens == hit["cached_tokens"] > 50
    assert hit["price_version"] == v1
    assert hit["cost_micros"] == expected_cost(hit, 800_000_000, 200_000_000, 2_400_000_000)
    at_input_price = expected_cost({**hit, "cached_tokens": 0}, 800_000_000, None, 2_400_000_000)
    assert hit["cost_micros"] < at_input_price

    # A second version (per 1M, prices that need rounding, another currency): new records use it.
    out = gw.cli(
        "prices", "set", EMBEDDED, "--input", "3.333333", "--output", "7.777777", "--per", "1M", "--currency", "usd"
    )
    v2 = out.stdout.split(":")[0]
    rec2 = charged_with(gw, key, v2)
    assert rec2["currency"] == "USD"
    assert rec2["cost_micros"] == expected_cost(rec2, 3_333_333, None, 7_777_777)
    # Earlier records keep what they were charged.
    assert gw.record(rec1["request_id"]) == rec1
    assert gw.record(unpriced["request_id"])["cost_micros"] is None

    # A refused request bills nothing: its cost is null, not 0, though its model has a price.
    with pytest.raises(openai.BadRequestError) as e:
        gw.client(key).chat.completions.create(model=EMBEDDED, messages=SAY, max_tokens=10**9)
    refused = gw.record(e.value.response.headers["x-request-id"])
    assert refused["status"] == "rejected" and refused["model"] == EMBEDDED
    assert {f: refused[f] for f in COST_FIELDS} == dict.fromkeys(COST_FIELDS)

    listed = json.loads(gw.cli("prices", "list", "--format", "json").stdout)
    mine = next(r for r in listed if r["model"] == EMBEDDED)
    assert mine["version_id"] == v2 and mine["input_per_mtok_micros"] == 3_333_333
    assert mine["created_by"] == f"cli:{getpass.getuser()}"
    history = json.loads(gw.cli("prices", "history", EMBEDDED, "--per", "1k", "--format", "json").stdout)
    assert [(h["version_id"], h["state"]) for h in history] == [(v1, "past"), (v2, "charging")]
    assert history[0]["input"] == "¥0.8" and history[0]["cached"] == "¥0.2"


def test_admin_api_sets_prices_at_once_and_checks_roles(gw, key):
    with admin_http(gw) as admin:
        r = admin.post(
            "/prices", json={"model": EMBEDDED, "input": "0.5", "output": 1.5, "per": "1M", "note": "促销价"}
        )
        assert r.status_code == 201, r.text
        v3 = r.json()["version_id"]
        assert r.json()["input_per_mtok_micros"] == 500_000 and r.json()["created_by"] == "admin:bootstrap"
        rec = ask(gw, key)  # this gateway reloads its book before answering the POST
        assert rec["price_version"] == v3 and rec["currency"] == "CNY"
        assert rec["cost_micros"] == expected_cost(rec, 500_000, None, 1_500_000)
        now = admin.get("/prices").json()
        assert next(p for p in now if p["model"] == EMBEDDED)["version_id"] == v3
        states = [h["state"] for h in admin.get(f"/prices/{EMBEDDED}/history").json()]
        assert states[-1] == "charging" and states.count("charging") == 1
        for bad, needle in (
            ({"input": "abc"}, "is not a number"),
            ({"input": "-1"}, "is negative"),
            ({"input": "0.0000001"}, "finer than the price book keeps"),
            ({"currency": "yuan"}, "ISO 4217"),
        ):
            r = admin.post("/prices", json={"model": EMBEDDED, "input": "1", "output": "1", "per": "1M", **bad})
            assert r.status_code == 400 and needle in r.json()["error"]["message"], r.text
            assert set(r.json()["error"]) == {"message", "type", "param", "code"}
        viewer = admin.post("/keys", json={"role": "viewer", "department": "marketing", "name": "fin"}).json()["key"]
        paths = {p for p in admin.get("/openapi.json").json()["paths"]}
        assert {"/prices", "/prices/{model}/history", "/cost-adjustments", "/hardware", "/hardware/apportion"} <= paths
    with admin_http(gw, viewer) as v:
        assert v.get("/prices").status_code == 200
        r = v.post("/prices", json={"model": EMBEDDED, "input": "1", "output": "1", "per": "1M"})
        assert r.status_code == 403 and r.json()["error"]["type"] == "permission_error"
    with admin_http(gw, key) as member:
        assert member.get("/prices").status_code == 403
    r = httpx.get(gw.base_url.removesuffix("/v1") + "/admin/prices")
    assert r.status_code == 401


def test_config_prices_with_a_past_start_and_stored_versions_replacing_them(tmp_path):
    zone = "Asia/Shanghai"
    past = (datetime.now(ZoneInfo(zone)) - timedelta(days=10)).strftime("%Y-%m-%d")
    future = (datetime.now(ZoneInfo(zone)) + timedelta(days=10)).strftime("%Y-%m-%d")
    cfg = {
        "governance": {"timezone": zone},
        "prices": [
            {"model": EMBEDDED, "input": 0.8, "output": 2.4, "cached": 0.2, "per": "1k", "from": past},
            {"model": EMBEDDED, "input": 9, "output": 9, "per": "1k", "from": future},
            {"model": "qwen-vl", "input": 2.5, "output": 2.5, "per": "1k", "currency": "CNY"},
        ],
    }
    gw = GatewayProc(tmp_path / "data", cfg).start()
    try:
        key = gw.create_key()
        start = parse_time(past, ZoneInfo(zone), "from")
        cfg_id = config_version_id(EMBEDDED, start, "CNY", 800_000_000, 200_000_000, 2_400_000_000)
        rec = ask(gw, key)
        assert rec["price_version"] == cfg_id and rec["currency"] == "CNY"
        assert rec["cost_micros"] == expected_cost(rec, 800_000_000, 200_000_000, 2_400_000_000)
        listed = {r["model"]: r for r in json.loads(gw.cli("prices", "list", "--format", "json").stdout)}
        assert listed[EMBEDDED]["version_id"] == cfg_id and listed[EMBEDDED]["source"] == "config"
        assert listed["qwen-vl"]["from"] == "always" and listed["qwen-vl"]["input_per_mtok_micros"] == 2_500_000_000
        # A version set at run time with the same start replaces the config's from then on.
        out = gw.cli("prices", "set", EMBEDDED, "--input", "1", "--output", "3", "--per", "1k", "--from", past)
        stored = out.stdout.split(":")[0]
        rec2 = charged_with(gw, key, stored)
        assert rec2["cost_micros"] == expected_cost(rec2, 1_000_000_000, None, 3_000_000_000)
        assert gw.record(rec["request_id"])["price_version"] == cfg_id
        history = json.loads(gw.cli("prices", "history", EMBEDDED, "--format", "json").stdout)
        assert [(h["source"], h["state"]) for h in history] == [
            ("config", "replaced"),
            ("ledger", "charging"),
            ("config", "future"),
        ]
    finally:
        gw.stop()


# Parsing -----------------------------------------------------------------------------------------
def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN), *args], capture_output=True, text=True, timeout=60)


def test_prices_are_parsed_exactly_and_bad_ones_refused_in_one_line(tmp_path):
    assert parse_price("0.8", "1k") == 800_000_000
    assert parse_price(0.8, "1k") == 800_000_000  # a YAML/JSON number, read as written
    assert parse_price("0.000001", "1M") == 1 and parse_price("0.000000001", "1k") == 1
    assert parse_price("2.5", "1K") == 2_500_000_000
    data = ["--data-dir", str(tmp_path / "d")]
    for value, per, needle in (
        ("0.0000001", "1M", "finer than the price book keeps"),
        ("0.0000000001", "1k", "finer than the price book keeps"),
        ("-1", "1M", "is negative"),
        ("abc", "1M", "is not a number"),
        ("1e30", "1M", "not a plausible price"),
        ("20000", "1k", "not a plausible price"),
        ("1", "1G", "per 1k or per 1M"),
    ):
        r = run_cli("prices", "set", "m", "--input", value, "--output", "1", "--per", per, *data)
        assert r.returncode == 2, (value, r.stdout)
        assert r.stderr.count("\n") == 1 and needle in r.stderr, (value, r.stderr)
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"prices": [{"model": "m", "input": "0.0000001", "output": 1, "per": "1M"}]}))
    r = run_cli("prices", "list", "--config", str(bad), *data)
    assert r.returncode == 2 and "prices.0" in r.stderr and "finer than the price book keeps" in r.stderr
    # Nothing was stored by the refusals.
    assert run_cli("prices", "history", "m", *data).returncode == 2


def test_cost_is_rounded_half_up_once():
    from tokenabacus.billing.prices import PriceVersion

    pv = PriceVersion("v", "m", 0, "CNY", 1, None, 3)  # micros per 1M tokens
    assert cost_micros(pv, 500_000, 0, None) == 1  # 0.5 micro rounds up
    assert cost_micros(pv, 499_999, 0, None) == 0
    assert cost_micros(pv, 0, 500_000, None) == 2  # 1.5 -> 2
    cached = PriceVersion("v", "m", 0, "CNY", 10, 2, 0)
    assert cost_micros(cached, 1_000_000, 0, 250_000) == 8  # 750,000*10 + 250,000*2 = 8,000,000


# Adjustments -------------------------------------------------------------------------------------
def test_adjustments_carry_who_when_why_and_never_change_the_record(gw, key):
    rec = ask(gw, key)
    before = gw.record(rec["request_id"])
    reason = "重复计费退款 (duplicate)"
    out = gw.cli(
        "costs",
        "adjust",
        "--request-id",
        rec["request_id"],
        "--amount",
        "-1.25",
        "--currency",
        "CNY",
        "--reason",
        reason,
    )
    assert "-¥1.250000" in out.stdout, out.stdout
    with admin_http(gw) as admin:
        r = admin.post(
            "/cost-adjustments",
            json={"request_id": rec["request_id"], "amount": "0.5", "currency": "CNY", "reason": "partial"},
        )
        assert r.status_code == 201, r.text
        r = admin.post(
            "/cost-adjustments",
            json={"department": "rnd", "project": "search", "amount": "12.345678", "reason": "GPU overtime"},
        )
        assert r.status_code == 201, r.text
        assert r.json()["request_id"] is None and r.json()["department"] == "rnd"
        missing = admin.post("/cost-adjustments", json={"request_id": "req_nope", "amount": "1", "reason": "x"})
        assert missing.status_code == 404 and "req_nope" in missing.json()["error"]["message"]
        neither = admin.post("/cost-adjustments", json={"amount": "1", "reason": "x"})
        assert neither.status_code == 400
        listed = admin.get("/cost-adjustments").json()
        viewer = admin.post("/keys", json={"role": "viewer", "department": "marketing", "name": "mkt"}).json()["key"]
    with admin_http(gw, viewer) as v:
        seen = v.get("/cost-adjustments").json()
        assert seen and all(a["department"] == "marketing" for a in seen)
        assert v.post("/cost-adjustments", json={"department": "x", "amount": "1", "reason": "x"}).status_code == 403

    mine = [a for a in listed if a["request_id"] == rec["request_id"]]
    assert [a["amount_micros"] for a in mine] == [-1_250_000, 500_000]
    cli_row, api_row = mine
    assert cli_row["created_by"] == f"cli:{getpass.getuser()}" and api_row["created_by"] == "admin:bootstrap"
    assert cli_row["reason"] == reason and api_row["reason"] == "partial"
    for a in mine:  # dimensions from the record; when it counts and when it was made
        dims = (a["model"], a["user"], a["project"], a["department"])
        assert dims == (EMBEDDED, "li.lei", "campaign-2024", "marketing")
        assert a["at"] >= rec["timestamp"] and a["created_at"] >= rec["timestamp"]
    assert gw.record(rec["request_id"]) == before

    shown = json.loads(gw.cli("costs", "adjustments", "--format", "json").stdout)
    assert {"-¥1.250000", "¥0.500000", "¥12.345678"} <= {a["amount"] for a in shown}
    r = gw.cli("costs", "adjust", "--request-id", "req_nope", "--amount", "1", "--reason", "x", check=False)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "req_nope" in r.stderr
    args = ["--request-id", rec["request_id"], "--amount", "1", "--currency", "USD", "--reason", "x"]
    r = gw.cli("costs", "adjust", *args, check=False)
    assert r.returncode == 2 and "charged in" in r.stderr


# Hardware ----------------------------------------------------------------------------------------
def _at(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


def _records() -> list[dict]:
    """Usage around November 2026 in Asia/Shanghai ([2026-10-31T16:00Z, 2026-11-30T16:00Z))."""
    spec = [
        # model, department, project, prompt, completion, duration_ms, timestamp, status
        ("qwen-7b", "marketing", "campaign", 60, 40, 100, "2026-11-05T03:00", "ok"),
        ("qwen-vl", "marketing", "campaign", 150, 50, 100, "2026-11-20T03:00", "ok"),
        ("qwen-7b", "rnd", "search", 200, 100, 100, "2026-10-31T17:00", "ok"),  # Nov in Shanghai, Oct in UTC
        ("qwen-7b", "rnd", "search", 900, 100, 100, "2026-10-31T15:00", "ok"),  # October in Shanghai
        ("qwen-7b", "ops", "bot", 1, 0, 100, "2026-11-29T00:00", "ok"),
        ("qwen-7b", "ops", "bot", None, None, 100, "2026-11-29T00:00", "rejected"),
        ("other", "marketing", "campaign", 5000, 5000, 100, "2026-11-10T00:00", "ok"),
        ("embed", "a", "pa", 1, 0, 1000, "2026-11-10T00:00", "ok"),
        ("embed", "b", "pb", 1, 0, 2000, "2026-11-10T00:00", "ok"),
        ("embed", "c", "pc", 1, 0, 4000, "2026-11-10T00:00", "ok"),
        ("embed", "c", "pc", None, None, 9000, "2026-11-10T00:00", "rejected"),
    ]
    out = []
    for rec, (model, dept, proj, p, c, ms, ts, status) in zip(sample_records(len(spec)), spec, strict=True):
        total = None if p is None else p + c
        rec.update(model=model, department=dept, project=proj, prompt_tokens=p, completion_tokens=c)
        rec.update(total_tokens=total, duration_ms=ms, timestamp=_at(ts), status=status)
        out.append(rec)
    return out


def test_hardware_costs_split_exactly_by_tokens_and_busy_time(db_url, tmp_path):
    store = Store(db_url)
    try:
        assert store.usage.insert(_records()) == 11
    finally:
        store.close()
    cfg = tmp_path / "money.yaml"
    cfg.write_text(yaml.safe_dump({"ledger": {"url": db_url}, "governance": {"timezone": "Asia/Shanghai"}}))
    common = ["--config", str(cfg), "--data-dir", str(tmp_path / "d")]

    def cli(*args: str) -> str:
        r = run_cli(*args, *common)
        assert r.returncode == 0, r.stderr
        return r.stdout

    cli("hardware", "set", "gpu-a", "--models", "qwen-7b,qwen-vl", "--monthly", "60000", "--from", "2026-11")
    cli(
        "hardware",
        "set",
        "gpu-b",
        "--models",
        "embed",
        "--monthly",
        "999.999999",
        "--basis",
        "busy_time",
        "--from",
        "2026-10",
    )
    cli("hardware", "set", "gpu-c", "--models", "idle", "--monthly", "10", "--from", "2026-11")
    cli("hardware", "set", "gpu-a", "--models", "qwen-7b,qwen-vl", "--monthly", "1", "--from", "2026-12")
    pools = {p["pool"]: p for p in json.loads(cli("hardware", "list", "--all", "--format", "json"))}
    assert pools["gpu-b"]["models"] == ["embed"] and pools["gpu-b"]["basis"] == "busy_time"

    rows = json.loads(cli("hardware", "apportion", "--month", "2026-11", "--format", "json"))
    by_pool: dict[str, list[dict]] = {}
    for r in rows:
        by_pool.setdefault(r["pool"], []).append(r)
    assert sum(r["cost_micros"] for r in by_pool["gpu-a"]) == 60_000_000_000  # the November figure, not December's
    assert sum(r["cost_micros"] for r in by_pool["gpu-b"]) == 999_999_999
    assert [(r["department"], r["cost_micros"]) for r in by_pool["gpu-c"]] == [(None, 10_000_000)]  # unused

    tokens = {(r["department"], r["project"]): r["usage"] for r in by_pool["gpu-a"]}
    assert tokens == {("marketing", "campaign"): 300, ("rnd", "search"): 300, ("ops", "bot"): 1}
    for r in by_pool["gpu-a"]:  # each share is its exact share, rounded one way or the other
        exact = Decimal(60_000_000_000) * r["usage"] / 601
        assert abs(r["cost_micros"] - exact) < 1
        assert r["currency"] == "CNY" and r["cost"].startswith("¥")
    busy = {r["department"]: (r["usage"], r["cost_micros"]) for r in by_pool["gpu-b"]}
    # 999,999,999 x 1/7, 2/7, 4/7: floors leave 2 micros, which go to the largest remainders (c, a).
    assert busy == {"a": (1000, 142_857_143), "b": (2000, 285_714_285), "c": (4000, 571_428_571)}

    # The month cut in UTC moves the record of 2026-10-31T17:00Z into October.
    store = Store(db_url)
    try:
        utc = apportion(store, "2026-11", "UTC")
    finally:
        store.close()
    assert {(r["department"], r["usage"]) for r in utc if r["pool"] == "gpu-a"} == {("marketing", 300), ("ops", 1)}
    assert sum(r["cost_micros"] for r in utc if r["pool"] == "gpu-a") == 60_000_000_000


def test_largest_remainder_sums_exactly():
    assert largest_remainder(10, [1, 1, 1]) == [4, 3, 3]
    assert largest_remainder(100, [1, 2]) == [33, 67]
    for amount, weights in ((60_000_000_000, [300, 300, 1]), (7, [5, 5, 5, 5, 5, 5, 5, 5]), (1, [3, 2])):
        shares = largest_remainder(amount, weights)
        assert sum(shares) == amount and all(s >= 0 for s in shares)
