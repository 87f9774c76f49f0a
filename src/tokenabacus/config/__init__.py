"""The ground floor's declarations: what tokenabacus.yaml may say, validated, and nothing else.

Pure (no I/O beyond reading the file in ``load_settings``) and importing no feature package:
settings, models, quotas, prices, alert rules and channels each in a module of their own, and
every name re-exported here so ``from tokenabacus.config import Settings`` keeps working.
"""

from tokenabacus.config.alerts import AlertsConfig
from tokenabacus.config.auth import AuthBrakeConfig
from tokenabacus.config.base import ConfigError, check_cidrs
from tokenabacus.config.models import (
    DEFAULT_MODEL_NAME,
    EmbeddedModel,
    ModelAllow,
    ModelConfig,
    ModelPolicy,
    TimeoutConfig,
    TokenizerConfig,
    UpstreamModel,
)
from tokenabacus.config.prices import PriceDecl
from tokenabacus.config.quotas import (
    METRICS,
    PERIODS,
    SCOPES,
    FairConfig,
    GovernanceConfig,
    QuotaDecl,
    RateLimitDecl,
)
from tokenabacus.config.settings import (
    CONFIG_ENV,
    ConsoleConfig,
    JsonlSinkConfig,
    KafkaSinkConfig,
    KeyDefaults,
    KeysConfig,
    LedgerConfig,
    MetricsConfig,
    RedisConfig,
    ServerConfig,
    Settings,
    SinksConfig,
    effective_models,
    load_settings,
    parse_upstream_flag,
    with_models,
)

__all__ = [
    "CONFIG_ENV",
    "DEFAULT_MODEL_NAME",
    "METRICS",
    "PERIODS",
    "SCOPES",
    "AlertsConfig",
    "AuthBrakeConfig",
    "ConfigError",
    "ConsoleConfig",
    "EmbeddedModel",
    "FairConfig",
    "GovernanceConfig",
    "JsonlSinkConfig",
    "KafkaSinkConfig",
    "KeyDefaults",
    "KeysConfig",
    "LedgerConfig",
    "MetricsConfig",
    "ModelAllow",
    "ModelConfig",
    "ModelPolicy",
    "PriceDecl",
    "QuotaDecl",
    "RateLimitDecl",
    "RedisConfig",
    "ServerConfig",
    "Settings",
    "SinksConfig",
    "TimeoutConfig",
    "TokenizerConfig",
    "UpstreamModel",
    "check_cidrs",
    "effective_models",
    "load_settings",
    "parse_upstream_flag",
    "with_models",
]
