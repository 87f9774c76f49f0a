"""One settings tree, loaded from tokenabacus.yaml (or none) plus environment variables.

Validation errors name the bad field (``models.1.base_url: Field required``) so an operator can
fix the file without reading a traceback.
"""

from __future__ import annotations

import ipaddress
import os
import re
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tokenabacus.alerts.rules import AlertsConfig
from tokenabacus.auth_config import AuthBrakeConfig

DEFAULT_MODEL_NAME = "smollm2-135m-instruct"
CONFIG_ENV = "TOKENABACUS_CONFIG"


class ConfigError(Exception):
    """A configuration problem, worded for the operator."""


class _Strict(BaseModel):
    # Never echo input in errors: a bad channel would print its webhook key or password.
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)


class ServerConfig(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024)
    max_tokens_limit: int = Field(32768, ge=1)
    # On SIGTERM, in-flight requests get this long to finish; the rest are cancelled and recorded.
    shutdown_grace_s: int = Field(30, ge=0)
    # A client must send its request headers within this time (slow-header connections are closed).
    header_timeout_s: float = Field(10.0, gt=0)
    # Proxies whose X-Forwarded-For / X-Real-IP are believed (CIDRs); from anyone else the socket
    # peer is the client.
    trusted_proxies: list[str] = Field(default_factory=list)
    auth_brake: AuthBrakeConfig = AuthBrakeConfig()  # failed authentications: see auth_config.py

    @field_validator("trusted_proxies")
    @classmethod
    def _cidrs(cls, v: list[str]) -> list[str]:
        return check_cidrs(v)


def check_cidrs(values: list[str]) -> list[str]:
    """CIDRs (IPv4 or IPv6; a bare address is a /32 or /128), normalised."""
    out = []
    for c in values:
        try:
            out.append(str(ipaddress.ip_network(c.strip(), strict=False)))
        except ValueError:
            raise ValueError(f"{c!r} is not an IP address or CIDR such as 10.0.0.0/8 or 2001:db8::/32") from None
    return out


class ModelAllow(_Strict):
    """Who may use a model: a caller matching any list is allowed. Absent lists allow nobody
    through them; an absent ``allow`` allows everyone."""

    projects: list[str] = Field(default_factory=list)
    departments: list[str] = Field(default_factory=list)
    users: list[str] = Field(default_factory=list)
    keys: list[str] = Field(default_factory=list)  # key ids


class ModelPolicy(_Strict):
    """Access and scheduling settings every model entry takes."""

    allow: ModelAllow | None = None
    allow_ips: list[str] | None = None  # CIDRs; None: any address
    # At most this many requests run on the model at once; the rest wait in fair order.
    max_concurrency: int | None = Field(None, ge=1)

    @field_validator("allow_ips")
    @classmethod
    def _ips(cls, v: list[str] | None) -> list[str] | None:
        return None if v is None else check_cidrs(v)


class TimeoutConfig(_Strict):
    connect: float = Field(5.0, gt=0)
    read: float = Field(600.0, gt=0)
    total: float | None = Field(None, gt=0)


class TokenizerConfig(_Strict):
    type: Literal["hf", "gguf", "tiktoken"]
    path: str
    # hf: path to a chat template file; default is tokenizer_config.json's chat_template.
    chat_template: str | None = None
    # tiktoken: count with OpenAI's per-message rule (3 tokens a message + 3 for the reply).
    openai_chat: bool = True
    add_generation_prompt: bool = True
    # The engine renders /v1/completions prompts through the chat template as one user message
    # (ms-swift's `swift deploy` does): count them the way it really sends them.
    completions_as_chat: bool = False
    # hf: count byte-level BPE files (Qwen, Llama 3) with tiktoken's faster BPE after checking it
    # agrees with tokenizers on the file; false always uses tokenizers.
    fast_bpe: bool = True

    @field_validator("path")
    @classmethod
    def _expand(cls, v: str) -> str:
        return os.path.expanduser(v)


class EmbeddedModel(ModelPolicy):
    name: str
    engine: Literal["embedded"]
    gguf: str | None = None  # None: the SmolLM2 file installed with the project
    n_ctx: int = Field(4096, ge=128)
    n_threads: int | None = Field(None, ge=1)
    seed: int | None = None


class UpstreamModel(ModelPolicy):
    name: str
    engine: Literal["upstream"]
    base_url: str
    upstream_model: str | None = None
    api_key: str | None = None
    api_key_env: str | None = None
    timeout: TimeoutConfig = TimeoutConfig()
    max_connections: int = Field(256, ge=1)
    tokenizer: TokenizerConfig | None = None
    # Ask the upstream for usage in streams (stream_options.include_usage).
    stream_usage: bool = True
    # Which figures a record bills when both exist.
    bill: Literal["tokenizer", "upstream"] = "tokenizer"
    # The engine's Prometheus endpoint (vLLM: http://host:8000/metrics): scraped to reconcile its
    # token counters with the ledger and to show its occupancy (running, waiting, KV cache).
    metrics_url: str | None = None
    metrics_interval_s: float = Field(15.0, gt=0)

    @field_validator("base_url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not re.match(r"^https?://[^/\s]+", v):
            raise ValueError("must be an http(s) URL such as http://gpu-node-1:8000/v1")
        return v.rstrip("/")

    def resolved_api_key(self) -> str | None:
        if self.api_key_env:
            return os.environ.get(self.api_key_env)
        return self.api_key


ModelConfig = Annotated[EmbeddedModel | UpstreamModel, Field(discriminator="engine")]


class JsonlSinkConfig(_Strict):
    enabled: bool = True
    path: str | None = None  # default: <data_dir>/usage.jsonl
    rotate_bytes: int = Field(100 * 1024 * 1024, ge=1024)
    rotate_daily: bool = True
    keep: int = Field(30, ge=1)


class KafkaSinkConfig(_Strict):
    """Usage events to a Kafka topic, keyed by request_id, JSON with the ledger contract's names;
    at least once: undelivered records wait in <spool_dir>/observers/kafka (observe/backlog.py)."""

    enabled: bool = False
    bootstrap_servers: list[str] = Field(default_factory=lambda: ["127.0.0.1:9092"], min_length=1)
    topic: str = Field("tokenabacus.usage", min_length=1, max_length=249, pattern=r"^[A-Za-z0-9._-]+$")
    client_id: str = "tokenabacus"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    username: str | None = None
    password: str | None = Field(None, repr=False)
    compression: Literal["gzip"] | None = None  # lz4, zstd, snappy need aiokafka extras not installed
    request_timeout_s: float = Field(30.0, gt=0)
    # A broker that is down is retried with backoff up to this long between attempts.
    retry_max_s: float = Field(30.0, gt=0)


class SinksConfig(_Strict):
    jsonl: JsonlSinkConfig = JsonlSinkConfig()
    kafka: KafkaSinkConfig = KafkaSinkConfig()


class MetricsConfig(_Strict):
    """GET /metrics in Prometheus format, counted from the records this process wrote."""

    enabled: bool = True
    # Scrapers must send `Authorization: Bearer <token>` when set (TOKENABACUS_METRICS_TOKEN also sets it).
    bearer_token: str | None = Field(None, repr=False)
    # Users as a label: off by default, since every user is a time series of its own.
    user_label: bool = False


class LedgerConfig(_Strict):
    url: str | None = None  # default: sqlite:///<data_dir>/ledger.db
    spool_dir: str | None = None  # default: <data_dir>/spool
    flush_interval_ms: float = Field(0.0, ge=0)
    group_commit_ms: float = Field(1.0, ge=0, le=100)
    writer_interval_ms: float = Field(200.0, ge=10)


class KeyDefaults(_Strict):
    project: str | None = None
    department: str | None = None


class KeysConfig(_Strict):
    defaults: KeyDefaults = KeyDefaults()
    refresh_interval_s: float = Field(2.0, gt=0)


SCOPES = ("key", "user", "project", "department", "global")
METRICS = ("tokens", "requests", "cost")  # cost: "cost:CNY" in storage, money in micro-units
PERIODS = ("minute", "day", "week", "month", "total")


class QuotaDecl(_Strict):
    """A limit in the config file: one scope (or ``global: true``), one metric, one period."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    key: str | None = None  # a key id
    user: str | None = None
    project: str | None = None
    department: str | None = None
    global_: bool = Field(False, alias="global")
    model: str | None = None
    tokens: int | None = Field(None, ge=0)
    requests: int | None = Field(None, ge=0)
    cost: str | int | float | None = None  # money, e.g. 5000 (in ``currency``)
    currency: str = "CNY"
    period: Literal["minute", "day", "week", "month", "total"]

    @model_validator(mode="after")
    def _one_of_each(self) -> QuotaDecl:
        scopes = [s for s in ("key", "user", "project", "department") if getattr(self, s)]
        if len(scopes) + int(self.global_) != 1:
            raise ValueError("name exactly one scope: key, user, project, department or global: true")
        if sum(x is not None for x in (self.tokens, self.requests, self.cost)) != 1:
            raise ValueError("give exactly one of tokens, requests or cost")
        if self.cost is not None:
            from tokenabacus.money import check_currency, parse_amount

            parse_amount(self.cost, "cost")
            self.currency = check_currency(self.currency)
        return self

    @property
    def scope(self) -> tuple[str, str | None]:
        for s in ("key", "user", "project", "department"):
            if getattr(self, s):
                return s, getattr(self, s)
        return "global", None

    @property
    def metric(self) -> tuple[str, int]:
        """(metric, limit): tokens, requests, or ``cost:CUR`` with the limit in micro-units."""
        if self.tokens is not None:
            return "tokens", self.tokens
        if self.cost is not None:
            from tokenabacus.money import parse_amount

            return f"cost:{self.currency}", parse_amount(self.cost, "cost")
        return "requests", self.requests or 0


class RateLimitDecl(_Strict):
    """Requests and/or tokens per minute for a key, user, project, department or model."""

    key: str | None = None
    user: str | None = None
    project: str | None = None
    department: str | None = None
    model: str | None = None
    rpm: int | None = Field(None, ge=0)
    tpm: int | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _check(self) -> RateLimitDecl:
        scopes = [s for s in ("key", "user", "project", "department") if getattr(self, s)]
        if len(scopes) > 1 or not (scopes or self.model):
            raise ValueError("name one of key, user, project or department, or a model alone")
        if self.rpm is None and self.tpm is None:
            raise ValueError("give rpm, tpm or both")
        return self

    def quotas(self) -> list[QuotaDecl]:
        scope = {s: getattr(self, s) for s in ("key", "user", "project", "department") if getattr(self, s)}
        if not scope:
            scope = {"global": True}
        base = {**scope, "model": self.model, "period": "minute"}
        out = []
        if self.rpm is not None:
            out.append(QuotaDecl.model_validate({**base, "requests": self.rpm}))
        if self.tpm is not None:
            out.append(QuotaDecl.model_validate({**base, "tokens": self.tpm}))
        return out


class FairConfig(_Strict):
    weights: dict[str, float] = Field(default_factory=dict)  # project -> weight (default 1)
    queue_timeout_s: float = Field(30.0, gt=0)


class GovernanceConfig(_Strict):
    # Days, weeks (from Monday) and months start at midnight here: Asia/Shanghai cuts at Beijing midnight.
    timezone: str = "UTC"
    # What a request without max_tokens reserves (and is held to) when a token limit applies to it.
    default_max_tokens: int = Field(4096, ge=1)
    # A reservation is a lease its gateway renews while the request runs: one a dead process left
    # behind lapses this long after its last renewal (a restarted gateway reclaims its own at once).
    reservation_ttl_s: float = Field(30.0, gt=0)
    # How often every counter in use is compared with the ledger's sum and raised to it if lower.
    reconcile_interval_s: float = Field(30.0, gt=0)
    # A PostgreSQL or MariaDB ledger shared by gateways without Redis: quotas need one gateway to
    # hold the ledger's "local-counters" lease (see README "Quotas"); how long it lasts unrenewed.
    local_counters_lease_s: float = Field(30.0, gt=0)
    # How often running gateways look for quota, grant and org changes.
    refresh_interval_s: float = Field(1.0, gt=0)
    # A caller not allowed a model gets 404 as if it did not exist (true) or 403 (false).
    hide_forbidden_models: bool = False
    quotas: list[QuotaDecl] = Field(default_factory=list)
    rate_limits: list[RateLimitDecl] = Field(default_factory=list)
    fair: FairConfig = FairConfig()

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {v!r} (use an IANA name such as UTC or Asia/Shanghai)") from None
        return v

    def declared_quotas(self) -> list[QuotaDecl]:
        return [*self.quotas, *(q for r in self.rate_limits for q in r.quotas())]


class RedisConfig(_Strict):
    url: str | None = None  # redis://127.0.0.1:6379/0; None: counters live in this process
    # When Redis is unreachable: refuse limited requests (closed) or count locally (open).
    on_error: Literal["closed", "open"] = "closed"
    prefix: str = "tokenabacus:"


class PriceDecl(_Strict):
    """A price version in the config file, e.g. ``{model: qwen-7b, input: 0.8, output: 2.4,
    cached: 0.2, per: 1k, currency: CNY, from: "2026-11-01"}``. Prices are exact decimals (a YAML
    number is read as it was written); ``from`` without a zone is in governance.timezone, and an
    entry without ``from`` has always been in force. A version set at run time with the same model
    and start replaces this one (billing/prices.PriceBook)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    model: str = Field(min_length=1, max_length=200)
    input: str | int | float
    output: str | int | float
    cached: str | int | float | None = None  # None: cached input tokens at the input price
    per: str | int  # 1k or 1M tokens
    currency: str = "CNY"
    from_: str | datetime | date | None = Field(None, alias="from")
    note: str | None = None

    @model_validator(mode="after")
    def _exact(self) -> PriceDecl:
        from tokenabacus.calendar import parse_time
        from tokenabacus.money import check_currency

        self.micros()
        self.currency = check_currency(self.currency)
        if self.from_ is not None:
            parse_time(self.from_, UTC, "from")
        return self

    def micros(self) -> tuple[int, int | None, int]:
        """(input, cached, output) in micros per 1M tokens; ValueError names a bad one."""
        from tokenabacus.money import parse_price

        cached = None if self.cached is None else parse_price(self.cached, self.per, "cached")
        return parse_price(self.input, self.per, "input"), cached, parse_price(self.output, self.per, "output")


class ConsoleConfig(_Strict):
    enabled: bool = True  # the web console at /console
    session_hours: float = Field(8.0, gt=0, le=24 * 30)  # a sign-in lasts this long, then sign in again
    # Secure cookies (HTTPS only): on behind a TLS-terminating proxy; off for plain-HTTP local use.
    secure_cookies: bool = False


class Settings(_Strict):
    data_dir: str = "./tokenabacus-data"
    server: ServerConfig = ServerConfig()
    ledger: LedgerConfig = LedgerConfig()
    sinks: SinksConfig = SinksConfig()
    metrics: MetricsConfig = MetricsConfig()
    alerts: AlertsConfig = AlertsConfig()
    console: ConsoleConfig = ConsoleConfig()
    keys: KeysConfig = KeysConfig()
    governance: GovernanceConfig = GovernanceConfig()
    redis: RedisConfig = RedisConfig()
    models: list[ModelConfig] = Field(default_factory=list)
    # The price book's config versions (billing/prices.py); more are set at run time.
    prices: list[PriceDecl] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_names(self) -> Settings:
        seen: set[str] = set()
        for m in self.models:
            if m.name in seen:
                raise ValueError(f"model name {m.name!r} is declared twice")
            seen.add(m.name)
        starts: set[tuple[str, str]] = set()
        for p in self.prices:
            start = (p.model, str(p.from_))
            if start in starts:
                raise ValueError(f"prices: model {p.model!r} has two prices from {p.from_ or 'the start'}")
            starts.add(start)
        return self

    # Derived locations -------------------------------------------------------------------
    @property
    def data_path(self) -> Path:
        return Path(self.data_dir).expanduser()

    @property
    def ledger_url(self) -> str:
        return self.ledger.url or f"sqlite:///{(self.data_path / 'ledger.db').resolve()}"

    @property
    def spool_path(self) -> Path:
        return Path(self.ledger.spool_dir).expanduser() if self.ledger.spool_dir else self.data_path / "spool"

    @property
    def jsonl_path(self) -> Path:
        p = self.sinks.jsonl.path
        return Path(p).expanduser() if p else self.data_path / "usage.jsonl"


def _format_errors(err: ValidationError, source: str) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"] if not str(p).startswith(("function-", "tagged-union")))
        lines.append(f"{source}: {loc or '(top level)'}: {e['msg']}")
    return "\n".join(lines)


def load_settings(path: str | os.PathLike | None = None, **overrides: object) -> Settings:
    """Load the YAML file (explicit path, $TOKENABACUS_CONFIG, or none) and apply overrides."""
    path = path or os.environ.get(CONFIG_ENV)
    raw: dict = {}
    source = "config"
    if path:
        source = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as e:
            raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None
        try:
            raw = yaml.safe_load(text) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML: {e}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: the top level must be a mapping")
    for key, value in overrides.items():
        if value is None:
            continue
        if key in ("host", "port"):
            raw.setdefault("server", {})[key] = value
        else:
            raw[key] = value
    try:
        return Settings.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(_format_errors(e, source)) from None


def parse_upstream_flag(spec: str) -> dict:
    """``NAME=URL`` or ``NAME=URL#UPSTREAM_MODEL`` -> an upstream model entry."""
    name, sep, rest = spec.partition("=")
    if not sep or not name.strip() or not rest.strip():
        raise ConfigError(f"--upstream {spec!r}: expected NAME=URL or NAME=URL#UPSTREAM_MODEL")
    url, _, upstream_model = rest.partition("#")
    entry: dict = {"name": name.strip(), "engine": "upstream", "base_url": url.strip()}
    if upstream_model.strip():
        entry["upstream_model"] = upstream_model.strip()
    return entry


def with_models(settings: Settings, extra: list[dict]) -> Settings:
    """Return settings whose model list also holds ``extra`` (validated like the file)."""
    data = settings.model_dump()
    names = {m["name"] for m in extra}
    data["models"] = [m for m in data["models"] if m["name"] not in names] + extra
    try:
        return Settings.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format_errors(e, "--upstream")) from None


def effective_models(settings: Settings) -> list[EmbeddedModel | UpstreamModel]:
    """The configured models, or the embedded SmolLM2 when none is declared."""
    if settings.models:
        return list(settings.models)
    return [EmbeddedModel(name=DEFAULT_MODEL_NAME, engine="embedded")]
