"""The brake on guessing keys, as declared in the config (``server.auth_brake``).

Pure declarations, like the rest of the config package."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class AuthBrakeConfig(BaseModel):
    """After ``max_failures`` failed authentications within ``window_s`` seconds from one client
    IP, or with one key prefix, that IP or prefix is locked out for ``lockout_s`` seconds."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    enabled: bool = True
    max_failures: int = Field(20, ge=1)
    window_s: float = Field(60.0, gt=0)
    lockout_s: float = Field(60.0, gt=0)
    # Client IPs and key prefixes remembered at once: memory stays bounded under an attack from
    # many addresses (the least recently failing are forgotten first).
    max_tracked: int = Field(50_000, ge=100)
