"""One settings tree, loaded from tokenabacus.yaml (or none) plus environment variables.

Validation errors name the bad field (``models.1.base_url: Field required``) so an operator can
fix the file without reading a traceback.
"""

from __future__ import annotations

import os
from datetime import tzinfo
from pathlib import Path
from typing import Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from tokenabacus.calendar import zone_named
from tokenabacus.config.alerts import AlertsConfig
from tokenabacus.config.auth import AuthBrakeConfig
from tokenabacus.config.base import ConfigError, _Strict, check_cidrs
from tokenabacus.config.models import DEFAULT_MODEL_NAME, EmbeddedModel, ModelConfig, UpstreamModel, check_names
from tokenabacus.config.prices import PriceDecl
from tokenabacus.config.quotas import GovernanceConfig

CONFIG_ENV = "TOKENABACUS_CONFIG"


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
    auth_brake: AuthBrakeConfig = AuthBrakeConfig()  # failed authentications: see config/auth.py

    @field_validator("trusted_proxies")
    @classmethod
    def _cidrs(cls, v: list[str]) -> list[str]:
        return check_cidrs(v)


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


class RedisConfig(_Strict):
    url: str | None = None  # redis://127.0.0.1:6379/0; None: counters live in this process
    # When Redis is unreachable: refuse limited requests (closed) or count locally (open).
    on_error: Literal["closed", "open"] = "closed"
    prefix: str = "tokenabacus:"


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
        check_names(self.models)  # names and aliases: each means one model
        starts: set[tuple[str, str]] = set()
        for p in self.prices:
            start = (p.model, str(p.from_))
            if start in starts:
                raise ValueError(f"prices: model {p.model!r} has two prices from {p.from_ or 'the start'}")
            starts.add(start)
        return self

    @property
    def zone(self) -> tzinfo:
        """governance.timezone as a zone: where days, weeks and months are cut by default."""
        return zone_named(self.governance.timezone)

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
