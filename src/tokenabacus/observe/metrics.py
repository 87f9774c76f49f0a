"""Prometheus metrics counted from the ledger records this process wrote, not from HTTP
middleware (the /v1 fast path has none): the ledger writer hands ``Metrics.write`` the records
that reached the database, so every figure agrees with the ledger. Each gateway process counts
only its own records, so ``sum()`` across processes and replicas is exact.

Labels stay bounded: models are the configured ones (anything else is "other"), departments and
projects come from keys an admin made, error codes from a fixed set; users and keys are not
labels unless ``metrics.user_label`` is on. Live state (spool depth, writer and observer lag,
admission queues, engine drift) is read at scrape time by a collector.
"""

from __future__ import annotations

import re
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

OTHER = "other"
NONE = ""  # a missing department or project
DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300)
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30)
TOKEN_TYPES = ("prompt", "completion", "cached")
SEEN = 200_000  # request_ids remembered for dedupe: a replayed segment is not counted twice
MAX_LABEL = 100  # longer department/project names are cut (they are admin-made, so rarely)
MAX_FLAGGED = 20
MAX_CODES = 50
_CODE = re.compile(r"[a-z0-9_.-]{1,40}")


class Metrics:
    """The registry /metrics serves, and the ledger sink that fills it."""

    def __init__(self, models: Iterable[str], user_label: bool = False) -> None:
        self.registry = CollectorRegistry()  # no auto-describe: LiveState reads state only at scrape time
        self.models = frozenset(models)
        self.user_label = user_label
        r = self.registry
        who = ["model", "department", "project", *(["user"] if user_label else [])]
        self.tokens = Counter(
            "tokenabacus_tokens",
            "Tokens billed, by type: prompt, completion, and cached (a part of prompt: do not add it again).",
            [*who, "type"],
            registry=r,
        )
        self.requests = Counter(
            "tokenabacus_requests", "Requests recorded, by outcome (ok, error, cancelled, rejected).",
            [*who, "status"], registry=r,
        )  # fmt: skip
        self.cost = Counter(
            "tokenabacus_cost_micros", "Cost charged, in micro-units of the currency.", [*who, "currency"], registry=r
        )
        self.duration = Histogram(
            "tokenabacus_request_duration_seconds", "Request duration, start to last byte.", ["model"],
            buckets=DURATION_BUCKETS, registry=r,
        )  # fmt: skip
        self.ttft = Histogram(
            "tokenabacus_time_to_first_token_seconds", "Time to the first generated token.", ["model"],
            buckets=TTFT_BUCKETS, registry=r,
        )  # fmt: skip
        self.rejections = Counter(
            "tokenabacus_rejections", "Requests refused by admission (quota, rate limit, access, queue), by reason.",
            ["model", "reason"], registry=r,
        )  # fmt: skip
        self.upstream_errors = Counter(
            "tokenabacus_errors", "Requests that failed (upstream errors, timeouts), by error code.",
            ["model", "code"], registry=r,
        )  # fmt: skip
        self.compared = Counter(
            "tokenabacus_compared_tokens",
            "Tokens of records that kept both counts: ours (or a capped claim's bill) and the upstream's "
            "(drift = ours - upstream).",
            ["model", "side", "type"], registry=r,
        )  # fmt: skip
        self.capped = Counter(
            "tokenabacus_capped_claims",
            "Records billed from an upstream's figures whose claim was more than the request could use "
            "(max_tokens x n; a prompt's size when there is no tokenizer): billed at that bound, by type.",
            ["model", "type"], registry=r,
        )  # fmt: skip
        self.mismatched = Counter(
            "tokenabacus_mismatched_requests", "Records whose count differed from the upstream's.", ["model"],
            registry=r,
        )  # fmt: skip
        self.records = Counter("tokenabacus_ledger_records", "Records this process wrote to the ledger.", registry=r)
        self.alerts = Counter(
            "tokenabacus_alerts_fired", "Alerts fired, by rule and severity.", ["rule", "severity"], registry=r
        )
        self.alerts_dropped = Counter(
            "tokenabacus_alert_deliveries_dropped",
            "Alert deliveries dropped because the channel's queue was full (alerts.delivery_queue).",
            ["channel"], registry=r,
        )  # fmt: skip
        self.suspicious = Gauge(
            "tokenabacus_suspicious_caller_ratio",
            "Callers flagged by a burst rule today: their busiest minute over the rule's threshold.",
            ["by", "caller"], registry=r,
        )  # fmt: skip
        self._flagged: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._codes: set[str] = set()

    # The ledger sink ----------------------------------------------------------------------------
    def write(self, lines: list[bytes]) -> None:
        for line in lines:
            try:
                self.observe(orjson.loads(line))
            except (orjson.JSONDecodeError, TypeError, ValueError, KeyError):
                continue  # the writer checked them already; a metric never stops the ledger

    def close(self) -> None:
        pass

    def observe(self, r: dict[str, Any]) -> None:
        rid = str(r.get("request_id"))
        if rid in self._seen:
            return
        self._seen[rid] = None
        if len(self._seen) > SEEN:
            self._seen.popitem(last=False)
        model = self._model(r.get("model"))
        status = r.get("status") or OTHER
        self.records.inc()
        who = [model, _cut(r.get("department")), _cut(r.get("project"))]
        if self.user_label:
            who.append(_cut(r.get("user")))
        self.requests.labels(*who, status).inc()
        for kind, field in (
            ("prompt", "prompt_tokens"),
            ("completion", "completion_tokens"),
            ("cached", "cached_tokens"),
        ):
            n = r.get(field)
            if n:
                self.tokens.labels(*who, kind).inc(n)
        if r.get("cost_micros") is not None and r.get("currency"):
            self.cost.labels(*who, r["currency"]).inc(r["cost_micros"])
        if r.get("duration_ms") is not None and status != "rejected":
            self.duration.labels(model).observe(r["duration_ms"] / 1000)
        if r.get("ttft_ms") is not None:
            self.ttft.labels(model).observe(r["ttft_ms"] / 1000)
        code = self._code(r.get("error_code"))
        if status == "rejected":
            self.rejections.labels(model, code).inc()
        elif status == "error":
            self.upstream_errors.labels(model, code).inc()
        self._compare(r, model)

    def _compare(self, r: dict[str, Any], model: str) -> None:
        """Our count against the upstream's, as the drift report compares them (ledger.rollups):
        records billed from our tokenizer, and those billed below an upstream's capped claim."""
        up_p, up_c = r.get("upstream_prompt_tokens"), r.get("upstream_completion_tokens")
        source = r.get("usage_source")
        if up_p is None or up_c is None or source not in ("tokenizer", "upstream"):
            return
        ours_p, ours_c = r.get("prompt_tokens") or 0, r.get("completion_tokens") or 0
        differs = (ours_p, ours_c) != (up_p, up_c)
        if source == "upstream":
            if not differs:
                return
            for kind, ours, theirs in (("prompt", ours_p, up_p), ("completion", ours_c, up_c)):
                if ours < theirs:
                    self.capped.labels(model, kind).inc()
        self.compared.labels(model, "ours", "prompt").inc(ours_p)
        self.compared.labels(model, "ours", "completion").inc(ours_c)
        self.compared.labels(model, "upstream", "prompt").inc(up_p)
        self.compared.labels(model, "upstream", "completion").inc(up_c)
        if differs:
            self.mismatched.labels(model).inc()

    def alert_dropped(self, channel: str) -> None:
        self.alerts_dropped.labels(channel).inc()  # channel names come from the config: bounded

    def alert_fired(self, kind: str, rule: str, severity: str, scope: str, figure: float, threshold: float) -> None:
        """An alert fired (alerts/engine.py): counted, and a burst's caller shown as suspicious
        (the last ``MAX_FLAGGED`` callers only: a label per caller must stay bounded)."""
        self.alerts.labels(rule, severity).inc()
        if kind != "burst" or "=" not in scope:
            return
        by, caller = scope.split("=", 1)
        key = (by, caller[:MAX_LABEL])
        self._flagged[key] = None
        self._flagged.move_to_end(key)
        self.suspicious.labels(*key).set(round(figure / threshold, 2) if threshold else figure)
        while len(self._flagged) > MAX_FLAGGED:
            old, _ = self._flagged.popitem(last=False)
            self.suspicious.remove(*old)

    def _code(self, code: Any) -> str:
        """An error code as a label: its kind (``quota_exceeded:q_1f`` counts as ``quota_exceeded``:
        one series per kind, not per quota). Ours are a fixed set, but an upstream's own codes pass
        through, so odd ones and any past the first ``MAX_CODES`` become "other"."""
        if not isinstance(code, str):
            return OTHER
        code = code.partition(":")[0]
        if not _CODE.fullmatch(code):
            return OTHER
        if code not in self._codes:
            if len(self._codes) >= MAX_CODES:
                return OTHER
            self._codes.add(code)
        return code

    def _model(self, name: Any) -> str:
        return name if isinstance(name, str) and name in self.models else OTHER


def _cut(v: Any) -> str:
    return v[:MAX_LABEL] if isinstance(v, str) else NONE


class LiveState(Collector):
    """What is true now, read at scrape time: the spool's depth, how far the writer and each
    observer are behind, the admission queues and the engines' own counters against ours."""

    def __init__(self, read: Callable[[], dict[str, Any]]) -> None:
        self.read = read

    def collect(self) -> Iterable[Any]:
        s = self.read()
        spool = GaugeMetricFamily("tokenabacus_spool_segments", "Spool segments not yet in the database.")
        spool.add_metric([], s["spool_segments"])
        yield spool
        lag = GaugeMetricFamily(
            "tokenabacus_writer_lag_seconds", "Age of the oldest spooled record not yet in the database."
        )
        lag.add_metric([], s["writer_lag_s"])
        yield lag
        up = GaugeMetricFamily("tokenabacus_ledger_up", "1 when the ledger writer's last cycle succeeded.")
        up.add_metric([], 0 if s["writer_error"] else 1)
        yield up
        ob = GaugeMetricFamily(
            "tokenabacus_observer_lag_seconds", "Age of the oldest record waiting for an observer.", labels=["observer"]
        )
        files = GaugeMetricFamily(
            "tokenabacus_observer_backlog_files", "Files of records waiting for an observer.", labels=["observer"]
        )
        for name, o in s["observers"].items():
            ob.add_metric([name], o["lag_s"])
            files.add_metric([name], o["files"])
        yield ob
        yield files
        q = GaugeMetricFamily("tokenabacus_admission_queue_length", "Requests waiting for a slot.", labels=["model"])
        run = GaugeMetricFamily("tokenabacus_admission_running", "Requests holding a slot.", labels=["model"])
        wait = HistogramMetricFamily(
            "tokenabacus_admission_wait_seconds", "Time requests waited for a slot.", labels=["model"]
        )
        for model, st in s["queues"].items():
            q.add_metric([model], st["waiting"])
            run.add_metric([model], st["running"])
            buckets = [(str(b), n) for b, n in st["wait_buckets"]] + [("+Inf", st["granted"])]
            wait.add_metric([model], buckets, st["waited_s"])
        yield q
        yield run
        yield wait
        ready = GaugeMetricFamily("tokenabacus_model_ready", "1 when the model's engine is ready.", labels=["model"])
        for model, ok in s["ready"].items():
            ready.add_metric([model], 1 if ok else 0)
        yield ready
        eng = GaugeMetricFamily(
            "tokenabacus_engine_drift_tokens",
            "The engine's own token counter minus what the ledger billed for it (metrics_url).",
            labels=["model", "type"],
        )
        for model, d in s["engine_drift"].items():
            for kind, v in d.items():
                if v is not None:
                    eng.add_metric([model, kind], v)
        yield eng
        fixes = CounterMetricFamily(
            "tokenabacus_quota_counter_corrections",
            "Quota counters found below the ledger's sum and raised to it, by scope kind.",
            labels=["scope"],
        )
        fixed = CounterMetricFamily(
            "tokenabacus_quota_counter_corrected_amount",
            "What those corrections added (tokens, requests or micro-units), by scope kind.",
            labels=["scope"],
        )
        for scope, (n, amount) in s.get("quota_corrections", {}).items():
            fixes.add_metric([scope], n)
            fixed.add_metric([scope], amount)
        yield fixes
        yield fixed


def segment_age_s(paths: list[Any]) -> float:
    """Seconds since the oldest of these files was last written (0 when none)."""
    oldest = None
    for p in paths:
        try:
            m = p.stat().st_mtime
        except FileNotFoundError:
            continue
        oldest = m if oldest is None else min(oldest, m)
    return 0.0 if oldest is None else max(0.0, time.time() - oldest)
