"""What every declaration shares: the strict base model, the operator-worded error, and CIDR checks."""

from __future__ import annotations

import ipaddress

from pydantic import BaseModel, ConfigDict


class ConfigError(Exception):
    """A configuration problem, worded for the operator."""


class _Strict(BaseModel):
    # Never echo input in errors: a bad channel would print its webhook key or password.
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)


def check_cidrs(values: list[str]) -> list[str]:
    """CIDRs (IPv4 or IPv6; a bare address is a /32 or /128), normalised."""
    out = []
    for c in values:
        try:
            out.append(str(ipaddress.ip_network(c.strip(), strict=False)))
        except ValueError:
            raise ValueError(f"{c!r} is not an IP address or CIDR such as 10.0.0.0/8 or 2001:db8::/32") from None
    return out
