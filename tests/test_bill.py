"""A provider's bill against the ledger through the real CLI (every ledger database) and /admin: an
edited line differs, a day left out of the bill is missing in it, a line the ledger does not know is
missing in the ledger, the rest match (the bill's amounts rounded to cents); a malformed bill is
one line naming its line number."""

from __future__ import annotations

import json
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal
from zoneinfo import ZoneInfo

import httpx
import pytest

from conftest import GatewayProc
from tokenabacus.billing.prices import PriceBook, PriceVersion
from tokenabacus.ledger.record import ERROR, REJECTED, start_record
from tokenabacus.ledger.store import Store

ZONE = ZoneInfo("Asia/Shanghai")
DAYS = [date(2026, 3, d) for d in range(1, 6)]
MODELS = ("qwen-max", "qwen-plus")
BOOK = PriceBook(
    stored=[
        PriceVersion("pv_plus", "qwen-plus", 0, "CNY", 800_000_000, None, 2_400_000_000),  # ¥0.8 / ¥2.4 per 1k
        PriceVersion("pv_max", "qwen-max", 0, "CNY", 2_400_000_000, 600_000_000, 9_600_000_000),
    ]
)


def record(when: datetime, model: str, prompt: int, completion: int, status: str = "ok") -> dict:
    rec = start_record(
        model=model,
        endpoint="/v1/chat/completions",
        user="u",
        project="p",
        department="d",
        prompt_tokens=prompt,
        completion_tokens=completion,
        cached_tokens=prompt // 4,
        status=status,
    )
    rec.finish()
    rec.timestamp = int(when.timestamp() * 1000)
    BOOK.charge(rec)
    return rec.to_dict()


def ledger_records() -> list[dict]:
    """Per day and model: records at 00:30 (the day before in UTC), 12:00 and 23:30 Beijing time,
    one of them an error that still billed tokens; and a refused request, which bills nothing."""
    out = []
    for i, day in enumerate(DAYS):
        for j, model in enumerate(MODELS):
            for k, (hour, minute) in enumerate(((0, 30), (12, 0), (23, 30))):
                when = datetime(day.year, day.month, day.day, hour, minute, tzinfo=ZONE)
                prompt, completion = 1000 * (i + 1) + 137 * j + 11 * k, 300 + 53 * i + 7 * k
                out.append(record(when, model, prompt, completion, ERROR if k == 2 else "ok"))
            out.append(record(datetime(day.year, day.month, day.day, 13, tzinfo=ZONE), model, 0, 0, REJECTED))
    return out


def truth(records: list[dict]) -> dict[tuple[date, str], tuple[int, int]]:
    """(day, model) -> (tokens, cost micros) as the ledger holds them, counted here independently."""
    out: dict[tuple[date, str], tuple[int, int]] = {}
    for r in records:
        if r["status"] == REJECTED:
            continue
        key = (datetime.fromtimestamp(r["timestamp"] / 1000, ZONE).date(), r["model"])
        tokens, cost = out.get(key, (0, 0))
        out[key] = (tokens + r["total_tokens"], cost + r["cost_micros"])
    return out


def cents(micros: int) -> str:
    return str((Decimal(micros) / 1_000_000).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))


def bill_rows(t: dict[tuple[date, str], tuple[int, int]]) -> list[tuple[str, str, int, str]]:
    """The provider's lines: every day and model but 3 March (left out), 2 March's qwen-plus
    edited up 3%, and a qwen-turbo line the ledger has never seen."""
    rows = []
    for (day, model), (tokens, cost) in sorted(t.items()):
        if day == date(2026, 3, 3):
            continue
        if (day, model) == (date(2026, 3, 2), "qwen-plus"):
            tokens, cost = tokens * 103 // 100, cost * 103 // 100
        rows.append((day.isoformat(), model, tokens, cents(cost)))
    rows.append(("2026-03-04", "qwen-turbo", 5000, "1.00"))
    return rows


def english_csv(rows) -> str:
    return "date,model,tokens,amount\n" + "".join(f"{d},{m},{t},{a}\n" for d, m, t, a in rows)


EXPECTED = {
    ("2026-03-01", "qwen-max"): "match",
    ("2026-03-01", "qwen-plus"): "match",
    ("2026-03-02", "qwen-max"): "match",
    ("2026-03-02", "qwen-plus"): "differs",
    ("2026-03-03", "qwen-max"): "missing in bill",
    ("2026-03-03", "qwen-plus"): "missing in bill",
    ("2026-03-04", "qwen-max"): "match",
    ("2026-03-04", "qwen-plus"): "match",
    ("2026-03-04", "qwen-turbo"): "missing in ledger",
    ("2026-03-05", "qwen-max"): "match",
    ("2026-03-05", "qwen-plus"): "match",
}


def gateway(tmp_path, url: str | None = None) -> GatewayProc:
    cfg: dict = {"governance": {"timezone": "Asia/Shanghai"}}
    if url:
        cfg["ledger"] = {"url": url}
    return GatewayProc(tmp_path / "data", cfg)


def fill(url: str) -> dict[tuple[date, str], tuple[int, int]]:
    recs = ledger_records()
    store = Store(url)
    try:
        assert store.usage.insert(recs) == len(recs)
    finally:
        store.close()
    return truth(recs)


def reconcile_json(gw: GatewayProc, path, *args: str) -> dict:
    return json.loads(gw.cli("reconcile", "--bill", str(path), "--format", "json", *args).stdout)


def test_reconcile_flags_edited_missing_and_matching_lines(tmp_path, db_url):
    gw = gateway(tmp_path, db_url)
    t = fill(db_url)
    rows = bill_rows(t)
    path = tmp_path / "provider.csv"
    path.write_text(english_csv(rows))

    out = reconcile_json(gw, path)
    lines = {(r["date"], r["model"]): r for r in out["lines"]}
    assert {k: r["verdict"] for k, r in lines.items()} == EXPECTED
    for (day, model), r in lines.items():
        if r["verdict"] == "missing in ledger":
            assert (r["ledger_tokens"], r["ledger_cost_micros"], r["line"]) == (None, None, 10)
            continue
        tokens, cost = t[(date.fromisoformat(day), model)]
        assert (r["ledger_tokens"], r["ledger_cost_micros"], r["currency"]) == (tokens, cost, "CNY")
        if r["verdict"] == "missing in bill":
            assert r["bill_tokens"] is None and r["line"] is None
        else:
            assert r["tokens_diff"] == tokens - r["bill_tokens"]
            assert r["amount_diff_micros"] == cost - r["bill_amount_micros"]
    edited = lines[("2026-03-02", "qwen-plus")]
    assert (
        edited["line"] == 5
        and edited["tokens_diff"] == t[(date(2026, 3, 2), "qwen-plus")][0] - edited["bill_tokens"] < 0
    )
    s = out["summary"]
    assert (s["lines"], s["match"], s["differs"], s["missing_in_ledger"], s["missing_in_bill"]) == (11, 7, 1, 1, 2)
    assert s["bill_tokens"] == sum(r[2] for r in rows) and s["ledger_tokens"] == sum(v[0] for v in t.values())
    assert s["tokens_diff"] == s["ledger_tokens"] - s["bill_tokens"]
    (amounts,) = s["amounts"]
    bill_micros = sum(int(Decimal(r[3]) * 1_000_000) for r in rows)
    assert amounts == {
        "currency": "CNY",
        "bill_micros": bill_micros,
        "ledger_micros": sum(v[1] for v in t.values()),
        "diff_micros": sum(v[1] for v in t.values()) - bill_micros,
    }

    # A 5% tolerance lets the 3% edit pass; the day cut in UTC moves the 00:30 records a day back.
    assert reconcile_json(gw, path, "--tolerance", "5%")["summary"]["differs"] == 0
    in_utc = reconcile_json(gw, path, "--tz", "UTC")
    assert {r["verdict"] for r in in_utc["lines"] if r["model"] != "qwen-turbo"} == {"differs", "missing in bill"}

    table = gw.cli("reconcile", "--bill", str(path)).stdout
    assert "missing in ledger" in table and "¥" in table
    assert (
        table.rstrip()
        .splitlines()[-1]
        .startswith("11 lines: 7 match, 1 differs, 1 missing in ledger, 2 missing in bill")
    )
    csv_lines = gw.cli("reconcile", "--bill", str(path), "--format", "csv").stdout.splitlines()
    assert csv_lines[0].split(",")[:3] == ["line", "date", "model"] and len(csv_lines) == 1 + 11 + 1
    assert csv_lines[-1].split(",")[1] == "total"


def test_a_chinese_bill_with_bom_separators_and_gbk(tmp_path):
    gw = gateway(tmp_path)
    fill(f"sqlite:///{gw.data_dir / 'ledger.db'}")
    t = truth(ledger_records())
    rows = bill_rows(t)
    text = "日期,模型,Token数,金额,币种\n" + "".join(
        f'{d.replace("-", "/")},{m},"{t_:,}","¥{Decimal(a):,}",CNY\n' for d, m, t_, a in rows
    )
    english = tmp_path / "en.csv"
    english.write_text(english_csv(rows))
    want = {(r["date"], r["model"]): r["verdict"] for r in reconcile_json(gw, english)["lines"]}
    assert want == EXPECTED
    for name, data in (("bom.csv", "\ufeff" + text), ("gbk.csv", text)):
        path = tmp_path / name
        path.write_bytes(data.encode("gb18030" if name == "gbk.csv" else "utf-8"))
        got = reconcile_json(gw, path)
        assert {(r["date"], r["model"]): r["verdict"] for r in got["lines"]} == want, name


@pytest.mark.parametrize(
    ("bill", "needle"),
    [
        ("date,model,tokens,amount\n2026-03-01,qwen-plus,100,0.50\n2026-03-32,qwen-plus,100,0.50\n", "line 3: date"),
        ("date,model,tokens,amount\n2026-03-01,qwen-plus,1,234,0.50\n", "line 2: expected 4 fields"),
        ("date,model,tokens,amount\n2026-03-01,qwen-plus,100,abc\n", "line 2: amount 'abc' is not a number"),
        ("date,model,tokens,amount\n2026-03-01,qwen-plus,-5,1\n", "line 2: tokens '-5' is not a whole number"),
        ("date,model,tokens,amount\n2026-03-01,qwen-plus,12.5,1\n", "line 2: tokens '12.5'"),
        ("date,model,tokens,amount\n2026-03-01,qwen-plus,5,0.0000001\n", "line 2: amount 0.0000001 is finer"),
        ("date,model,tokens,amount\n2026-03-01,,5,1\n", "line 2: the model name"),
        ("date,model,tokens,amount,currency\n2026-03-01,m,5,1,yuan\n", "line 2: currency 'yuan'"),
        (
            "date,model,tokens,amount\n\n2026-03-01,m,5,1\n2026-03-01,m,6,1\n",
            "line 4: 2026-03-01 m is already on line 3",
        ),
        ("day,name,count,price\n2026-03-01,m,5,1\n", "line 1: the header needs"),
        ('date,model,tokens,amount\n2026-03-01,"m,5,1\n', "line 2:"),
        ("", "the bill is empty"),
        ("date,model,tokens,amount\n", "the bill has no lines after its header"),
    ],
)
def test_a_malformed_bill_is_one_line(tmp_path, bill, needle):
    gw = gateway(tmp_path)
    fill(f"sqlite:///{gw.data_dir / 'ledger.db'}")
    path = tmp_path / "bad.csv"
    path.write_text(bill)
    r = gw.cli("reconcile", "--bill", str(path), check=False)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and r.stderr.startswith(f"error: {path}: ") and needle in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


def test_reconcile_arguments_are_checked(tmp_path):
    gw = gateway(tmp_path)
    fill(f"sqlite:///{gw.data_dir / 'ledger.db'}")
    path = tmp_path / "b.csv"
    path.write_text("date,model,tokens,amount\n2026-03-01,qwen-plus,1,1\n")
    for args, needle in (
        (["--tolerance", "lots"], "tolerance 'lots'"),
        (["--tolerance", "80%"], "from 0% to 50%"),
        (["--currency", "yuan"], "ISO 4217"),
        (["--since", "March"], "--since 'March'"),
        (["--since", "2026-03-05", "--until", "2026-03-01"], "is empty"),
    ):
        r = gw.cli("reconcile", "--bill", str(path), *args, check=False)
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and needle in r.stderr, (args, r.stderr)
    r = gw.cli("reconcile", "--bill", str(tmp_path / "none.csv"), check=False)
    assert r.returncode == 2 and "cannot read the bill" in r.stderr and r.stderr.count("\n") == 1


def test_admin_reconcile_is_for_admins(tmp_path):
    gw = gateway(tmp_path).start()
    try:
        t = fill(f"sqlite:///{gw.data_dir / 'ledger.db'}")
        body = english_csv(bill_rows(t)).encode()
        viewer = json.loads(gw.cli("keys", "create", "--role", "viewer", "--project", "p", "--json").stdout)["key"]
        member = gw.create_key(user="m", project="p", department="d")
        url = gw.base_url.removesuffix("/v1") + "/admin/reconcile"

        def post(key: str, content: bytes, **params: str) -> httpx.Response:
            headers = {"Authorization": f"Bearer {key}", "Content-Type": "text/csv"}
            return httpx.post(url, content=content, headers=headers, params=params, timeout=60)

        r = post(gw.admin_key, body)
        assert r.status_code == 200, r.text
        assert {(x["date"], x["model"]): x["verdict"] for x in r.json()["lines"]} == EXPECTED
        assert r.json()["summary"]["missing_in_bill"] == 2
        assert post(gw.admin_key, body, tolerance="5%").json()["summary"]["differs"] == 0
        r = post(gw.admin_key, b"date,model,tokens,amount\n2026-03-01,m,x,1\n")
        assert (
            r.status_code == 400
            and r.json()["error"]["message"] == "line 2: tokens 'x' is not a whole number of tokens"
        )
        r = post(gw.admin_key, body, tz="Mars/Base")
        assert r.status_code == 400 and "unknown time zone" in r.json()["error"]["message"]
        for key in (viewer, member):
            r = post(key, body)
            assert r.status_code == 403 and r.json()["error"]["type"] == "permission_error", r.text
    finally:
        gw.stop()
