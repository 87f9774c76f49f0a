"""deploy/grafana/tokenabacus.json and deploy/prometheus.yml, kept honest against a real gateway.

The dashboard must be JSON that Grafana 10/11 imports (structure, panel types, layout, datasource
references, variables), and every metric and label its PromQL uses must be one the gateway really
exports: a dashboard that queries a renamed metric shows "No data" and nobody notices. The counters
behind it must agree with the ledger, and the scrape config must point at /metrics.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from conftest import EMBEDDED, GatewayProc
from tokenabacus.observe.metrics import LiveState, Metrics

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "deploy" / "grafana" / "tokenabacus.json"
PROMETHEUS_YML = ROOT / "deploy" / "prometheus.yml"
TOKEN = "t0ken"

# Panel types that ship with Grafana (no plugin to install).
PANEL_TYPES = {"timeseries", "barchart", "bargauge", "table", "heatmap", "stat", "gauge", "text", "row"}
# Grafana's own variables, always defined.
BUILTIN_VARS = {"__range", "__range_s", "__range_ms", "__rate_interval", "__interval", "__interval_ms", "__all"}
# Units used by the board that Grafana knows by id; custom units are "prefix:", "suffix:", "currency:"...
# (there is no "currencyCNY": Grafana would print the id after the number).
UNITS = {"short", "none", "s", "percentunit", "cpm"}
CUSTOM_UNITS = ("prefix:", "suffix:", "currency:", "si:", "count:")

# Pending the alert engine (being written): these two are checked only once the gateway exports them.
# name -> (type, labels)
PENDING_ALERT_ENGINE = {
    "tokenabacus_suspicious_caller_ratio": ("gauge", {"by", "caller"}),
    "tokenabacus_alerts_fired_total": ("counter", {"rule", "severity"}),
}
# Labels Prometheus adds at scrape time (deploy/prometheus.yml adds `service`).
TARGET_LABELS = {"job", "instance", "service"}

METRIC = re.compile(r"\btokenabacus_[A-Za-z0-9_:]+")


def load_dashboard() -> dict:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def all_panels(dash: dict) -> list[dict]:
    """Top-level panels and those inside collapsed rows."""
    out = []
    for p in dash["panels"]:
        out.append(p)
        out.extend(p.get("panels") or [])
    return out


def exprs(dash: dict) -> list[str]:
    """Every PromQL expression: panel targets, annotations and query variables."""
    out = [t["expr"] for p in all_panels(dash) for t in p.get("targets", [])]
    out += [a["expr"] for a in dash["annotations"]["list"] if a.get("expr")]
    for v in dash["templating"]["list"]:
        if v["type"] == "query":
            q = v["query"]
            out.append(q["query"] if isinstance(q, dict) else q)
    return out


def variables_used(text: str) -> set[str]:
    """$name and ${name} / ${name:format} ($1 in a label_replace is not a variable)."""
    return {a or b for a, b in re.findall(r"\$\{([A-Za-z_]\w*)(?::\w+)?\}|\$([A-Za-z_]\w*)", text)}


# The dashboard as Grafana reads it --------------------------------------------------------------
def test_dashboard_top_level():
    dash = load_dashboard()
    for key in ("__inputs", "annotations", "panels", "schemaVersion", "templating", "time", "title", "uid", "tags"):
        assert key in dash, key
    assert dash["title"] == "tokenabacus — LLM spend"
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,40}", dash["uid"])
    assert 36 <= dash["schemaVersion"] <= 41  # Grafana 10 and 11
    assert dash["tags"] and all(isinstance(t, str) for t in dash["tags"])
    assert dash["time"]["from"] == "now-7d" and dash["time"]["to"] == "now"
    (ds_input,) = [i for i in dash["__inputs"] if i["name"] == "DS_PROMETHEUS"]
    assert ds_input["type"] == "datasource" and ds_input["pluginId"] == "prometheus"

    variables = {v["name"]: v for v in dash["templating"]["list"]}
    ds = variables["datasource"]
    assert ds["type"] == "datasource" and ds["query"] == "prometheus"
    assert ds["current"]["value"] == "${DS_PROMETHEUS}"  # the data source picked at import
    for name, metric in (("department", "tokenabacus_tokens_total"), ("model", "tokenabacus_requests_total")):
        v = variables[name]
        assert v["type"] == "query" and v["datasource"]["uid"] == "${datasource}"
        query = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
        assert query == f"label_values({metric}, {name})"
        # "All" must also match series with an empty label (keys made without a department).
        assert v["includeAll"] and v["allValue"] == ".*"


def test_panels_layout():
    panels = all_panels(load_dashboard())
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    cells: dict[tuple[int, int], int] = {}
    for p in panels:
        assert p["type"] in PANEL_TYPES, (p["id"], p["type"])
        g = p["gridPos"]
        assert all(isinstance(g[k], int) for k in ("x", "y", "w", "h")), p["id"]
        assert g["x"] >= 0 and g["y"] >= 0 and g["w"] >= 1 and g["h"] >= 1, p["id"]
        assert g["x"] + g["w"] <= 24, f"panel {p['id']} ({p['title']}) is wider than 24 columns"
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"panels {cells[(x, y)]} and {p['id']} overlap at {(x, y)}"
                cells[(x, y)] = p["id"]


def test_targets_datasources_variables_units():
    dash = load_dashboard()
    defined = {v["name"] for v in dash["templating"]["list"]} | BUILTIN_VARS
    for p in all_panels(dash):
        if p["type"] in ("row", "text"):
            continue
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        assert p.get("targets"), f"{p['title']} has no query"
        for t in p["targets"]:
            assert t["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
            assert t["expr"].strip(), p["title"]
            assert t["refId"], p["title"]
        assert len({t["refId"] for t in p["targets"]}) == len(p["targets"]), p["title"]
        used = set().union(*(variables_used(t["expr"]) for t in p["targets"]), variables_used(p["title"]))
        assert used <= defined, f"{p['title']}: undefined variables {used - defined}"
        for unit in [p["fieldConfig"]["defaults"].get("unit")] + [
            prop["value"]
            for o in p["fieldConfig"].get("overrides", [])
            for prop in o["properties"]
            if prop["id"] == "unit"
        ]:
            assert unit is None or unit in UNITS or unit.startswith(CUSTOM_UNITS), f"{p['title']}: unit {unit}"
    for e in exprs(dash):
        assert variables_used(e) <= defined, e
    everything = "\n".join(exprs(dash))
    assert "$department" in everything and "$model" in everything
    for a in dash["annotations"]["list"]:
        if a.get("expr"):
            assert a["datasource"]["uid"] == "${datasource}"


# The dashboard against a real gateway -----------------------------------------------------------
@dataclass
class Scraped:
    text: str  # GET /metrics with the bearer token, once the ledger has every record
    records: list[dict]  # the ledger's records
    unauthorized: int  # the status without a token
    wrong_token: int  # and with a wrong one


def metric_value(text: str, name: str) -> float:
    m = re.search(rf"^{name} (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


@pytest.fixture(scope="module")
def scraped(tmp_path_factory) -> Scraped:
    config = {
        "metrics": {"bearer_token": TOKEN},
        "prices": [{"model": EMBEDDED, "input": 0.8, "output": 2.4, "per": "1k", "currency": "CNY"}],
    }
    gw = GatewayProc(tmp_path_factory.mktemp("dashboard") / "data", config).start()
    try:
        sent = 0
        for department, n in (("marketing", 2), ("rnd", 1)):
            client = gw.client(gw.create_key(user=f"u-{department}", department=department))
            for i in range(n):
                client.chat.completions.create(
                    model=EMBEDDED, messages=[{"role": "user", "content": f"hello {department} {i}"}], max_tokens=3
                )
                sent += 1
        url = f"http://127.0.0.1:{gw.port}/metrics"
        unauthorized = httpx.get(url, timeout=10).status_code
        wrong_token = httpx.get(url, headers={"Authorization": "Bearer nope"}, timeout=10).status_code
        store = gw.store()
        try:
            deadline = time.monotonic() + 15
            while True:  # the records reach the ledger, then the metrics sink, in the writer's cycle
                records = store.usage.latest(limit=100)
                r = httpx.get(url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
                assert r.status_code == 200, r.text
                if len(records) == sent and metric_value(r.text, "tokenabacus_ledger_records_total") == sent:
                    break
                assert time.monotonic() < deadline, f"{len(records)} of {sent} records in the ledger"
                time.sleep(0.1)
        finally:
            store.close()
        assert r.headers["content-type"].startswith("text/plain")
        return Scraped(r.text, records, unauthorized, wrong_token)
    finally:
        gw.stop()


def exported_types(text: str) -> dict[str, str]:
    """Family name -> type, from the `# TYPE` lines."""
    return dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))


def sample_names(types: dict[str, str]) -> set[str]:
    """The series names PromQL can select: counters as NAME_total, histograms as _bucket/_sum/_count."""
    out = set()
    for name, kind in types.items():
        if kind == "counter":
            out.add(name if name.endswith("_total") else name + "_total")
        elif kind == "histogram":
            out |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
        else:
            out.add(name)
    return out


def labels_by_series(text: str) -> dict[str, set[str]]:
    out: dict[str, set[str]] = defaultdict(set)
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[s.name] |= set(s.labels)
    return out


def every_label() -> dict[str, set[str]]:
    """Each series' label names, from a registry fed one record of every kind (a real gateway leaves
    the error, refusal and drift counters empty, so their labels are not visible there)."""
    m = Metrics([EMBEDDED])
    base = {
        "model": EMBEDDED,
        "department": "d",
        "project": "p",
        "prompt_tokens": 5,
        "completion_tokens": 2,
        "cached_tokens": 1,
        "cost_micros": 7,
        "currency": "CNY",
        "duration_ms": 10,
        "ttft_ms": 5,
        "usage_source": "tokenizer",
        "upstream_prompt_tokens": 6,
        "upstream_completion_tokens": 2,
    }
    for i, (status, code) in enumerate((("ok", None), ("error", "upstream_timeout"), ("rejected", "quota"))):
        m.observe({**base, "request_id": f"r{i}", "status": status, "error_code": code})
    queue = {"waiting": 1, "running": 1, "granted": 2, "waited_s": 0.5, "wait_buckets": [(0.1, 1), (1.0, 2)]}
    state = {
        "spool_segments": 1,
        "writer_lag_s": 0.5,
        "writer_error": None,
        "observers": {"kafka": {"lag_s": 1.0, "files": 2}},
        "queues": {EMBEDDED: queue},
        "ready": {EMBEDDED: True},
        "engine_drift": {EMBEDDED: {"prompt": 3, "completion": -1}},
    }
    m.registry.register(LiveState(lambda: state))
    return labels_by_series(generate_latest(m.registry).decode())


def aggregations(expr: str):
    """(by-labels, the aggregated sub-expression) for each `by (...) (...)` in expr."""
    for m in re.finditer(r"\bby\s*\(([^)]*)\)\s*\(", expr):
        depth, i = 1, m.end()
        while depth:
            depth += {"(": 1, ")": -1}.get(expr[i], 0)
            i += 1
        yield {x.strip() for x in m.group(1).split(",") if x.strip()}, expr[m.end() : i - 1]


def call_args(expr: str, func: str):
    """The top-level arguments of each call of ``func`` in expr."""
    for m in re.finditer(rf"\b{func}\s*\(", expr):
        args, depth, start, i = [], 1, m.end(), m.end()
        while depth:
            c = expr[i]
            if c == '"':
                i = expr.index('"', i + 1)
            elif c in "([{":
                depth += 1
            elif c in ")]}":
                depth -= 1
            elif c == "," and depth == 1:
                args.append(expr[start:i].strip())
                start = i + 1
            i += 1
        args.append(expr[start : i - 1].strip())
        yield args


def made_labels(expr: str) -> set[str]:
    """Labels an expression creates itself: count_values("x", ...), label_replace(v, "x", _, "y", _)
    (one that rewrites a label in place creates nothing)."""
    made = {args[0].strip('"') for args in call_args(expr, "count_values")}
    return made | {a[1].strip('"') for a in call_args(expr, "label_replace") if a[1] != a[3]}


def test_metrics_need_the_bearer_token(scraped):
    assert scraped.unauthorized == 401 and scraped.wrong_token == 401


def test_queried_metrics_are_exported(scraped):
    types = exported_types(scraped.text)
    exported = sample_names(types)
    used = {name for e in exprs(load_dashboard()) for name in METRIC.findall(e)}
    assert used, "the dashboard queries no tokenabacus metric"
    for name, (kind, _labels) in PENDING_ALERT_ENGINE.items():
        family = name.removesuffix("_total") if kind == "counter" else name
        if family in types or name in types:  # the alert engine is in: it must export what the board uses
            assert types.get(family, types.get(name)) == kind, name
            assert name in exported
    missing = used - exported - set(PENDING_ALERT_ENGINE)
    assert not missing, f"the dashboard queries metrics the gateway does not export: {sorted(missing)}"

    labels = labels_by_series(scraped.text)
    for name, more in every_label().items():
        labels[name] |= more
    for name, (_kind, names) in PENDING_ALERT_ENGINE.items():
        labels[name] |= names
    for e in exprs(load_dashboard()):
        made = made_labels(e)
        # label matchers: tokenabacus_x{label="..."} must name labels the series has
        for m in re.finditer(r"\b(tokenabacus_\w+)\s*\{([^}]*)\}", e):
            for label in re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", m.group(2)):
                assert label in labels[m.group(1)] | TARGET_LABELS, f"{m.group(1)} has no label {label!r}: {e}"
        # sum by (a, b) (...): each label must come from a series inside, or be made by the expression
        for by, inner in aggregations(e):
            inner_labels = set().union(*(labels[n] for n in METRIC.findall(inner))) | TARGET_LABELS | made
            assert by <= inner_labels, f"by ({', '.join(sorted(by - inner_labels))}) matches no label: {e}"


def test_metrics_parse_and_agree_with_the_ledger(scraped):
    families = {f.name: f for f in text_string_to_metric_families(scraped.text)}
    assert "tokenabacus_tokens" in families and families["tokenabacus_tokens"].type == "counter"

    def total(family: str, sample: str, **match: str) -> float:
        return sum(
            s.value
            for s in families[family].samples
            if s.name == sample and all(s.labels.get(k) == v for k, v in match.items())
        )

    rows = scraped.records
    assert len(rows) == 3 and all(r["status"] == "ok" for r in rows)
    for kind, field in (("prompt", "prompt_tokens"), ("completion", "completion_tokens"), ("cached", "cached_tokens")):
        ledger = sum(r[field] or 0 for r in rows)
        assert total("tokenabacus_tokens", "tokenabacus_tokens_total", type=kind) == ledger, kind
        for department in ("marketing", "rnd"):
            mine = sum(r[field] or 0 for r in rows if r["department"] == department)
            got = total("tokenabacus_tokens", "tokenabacus_tokens_total", type=kind, department=department)
            assert got == mine, (kind, department)
    # what the dashboard calls tokens (type!="cached") is the ledger's total_tokens
    not_cached = sum(
        s.value
        for s in families["tokenabacus_tokens"].samples
        if s.name == "tokenabacus_tokens_total" and s.labels["type"] != "cached"
    )
    assert not_cached == sum(r["total_tokens"] for r in rows) > 0
    assert total("tokenabacus_cost_micros", "tokenabacus_cost_micros_total", currency="CNY") == sum(
        r["cost_micros"] for r in rows
    )
    assert sum(r["cost_micros"] for r in rows) > 0
    assert total("tokenabacus_requests", "tokenabacus_requests_total", model=EMBEDDED, status="ok") == 3
    assert total("tokenabacus_request_duration_seconds", "tokenabacus_request_duration_seconds_count") == 3
    assert total("tokenabacus_ledger_up", "tokenabacus_ledger_up") == 1


# The scrape config -------------------------------------------------------------------------------
def uncomment_examples(text: str) -> str:
    """The config with its commented examples (bearer token file, second replica) switched on."""
    return re.sub(
        r"^(\s*)# ((?:authorization:|  type: Bearer|  credentials_file: |- 127\.0\.0\.1:).*)$",
        r"\1\2",
        text,
        flags=re.M,
    )


def test_prometheus_config(tmp_path):
    text = PROMETHEUS_YML.read_text()
    conf = yaml.safe_load(text)
    (job,) = [j for j in conf["scrape_configs"] if j["job_name"] == "tokenabacus"]
    assert job["metrics_path"] == "/metrics"
    assert job.get("scrape_interval", conf["global"]["scrape_interval"]) == "15s"
    targets = [t for s in job["static_configs"] for t in s["targets"]]
    assert targets == ["127.0.0.1:8000"]
    assert "authorization" not in job  # the bearer token is an example until the gateway sets one

    on = yaml.safe_load(uncomment_examples(text))
    (job,) = [j for j in on["scrape_configs"] if j["job_name"] == "tokenabacus"]
    assert job["authorization"]["type"] == "Bearer" and job["authorization"]["credentials_file"]
    assert len([t for s in job["static_configs"] for t in s["targets"]]) == 2

    promtool = shutil.which("promtool")
    if promtool:  # Debian's `prometheus` package; the YAML checks above stand without it
        token = tmp_path / "metrics.token"  # promtool checks that the credentials file exists
        token.write_text(TOKEN + "\n")
        examples = uncomment_examples(text).replace(job["authorization"]["credentials_file"], str(token))
        for name, body in (("plain.yml", text), ("examples.yml", examples)):
            path = tmp_path / name
            path.write_text(body)
            r = subprocess.run([promtool, "check", "config", str(path)], capture_output=True, text=True, timeout=30)
            assert r.returncode == 0, r.stdout + r.stderr
