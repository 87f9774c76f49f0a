"""Who may use which model, and from where: model allow lists, IP allowlists (per model and per
key), and the client address those are judged on."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from functools import lru_cache

from tokenabacus.config import ModelPolicy
from tokenabacus.governance.errors import Forbidden
from tokenabacus.governance.keys import Identity, IPNetwork


def networks(cidrs: list[str] | None) -> tuple[IPNetwork, ...] | None:
    return None if cidrs is None else tuple(ipaddress.ip_network(c, strict=False) for c in cidrs)


@lru_cache(maxsize=4096)
def parse_ip(addr: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if not addr:
        return None
    try:
        ip = ipaddress.ip_address(addr.strip().strip("[]"))
    except ValueError:
        return None
    # An IPv4 client on a dual-stack socket arrives as ::ffff:a.b.c.d: judge the IPv4 address.
    mapped = getattr(ip, "ipv4_mapped", None)
    return mapped or ip


def within(addr: str | None, nets: tuple[IPNetwork, ...]) -> bool:
    ip = parse_ip(addr)
    return ip is not None and any(ip.version == n.version and ip in n for n in nets)


class ClientAddress:
    """The client IP: the socket peer, unless the peer is a trusted proxy; then the rightmost
    X-Forwarded-For hop that is not a trusted proxy (or X-Real-IP). Headers from anyone else are
    ignored, so a client cannot pick the address its policy is judged on."""

    def __init__(self, trusted: list[str]) -> None:
        self.trusted = networks(trusted) or ()

    def resolve(self, peer: str | None, forwarded_for: str | None, real_ip: str | None) -> str | None:
        if not self.trusted or not within(peer, self.trusted):
            return peer
        if forwarded_for:
            hops = [h.strip() for h in forwarded_for.split(",") if h.strip()]
            for hop in reversed(hops):
                if parse_ip(hop) is None:
                    return peer  # a garbled chain: trust only what we saw
                if not within(hop, self.trusted):
                    return str(parse_ip(hop))
            return str(parse_ip(hops[0])) if hops else peer
        if real_ip and parse_ip(real_ip) is not None:
            return str(parse_ip(real_ip))
        return peer


@dataclass(frozen=True, slots=True)
class ModelAccess:
    """One model's access policy, judged before anything is reserved."""

    name: str
    allow: ModelPolicy
    hide: bool
    allow_nets: tuple[IPNetwork, ...] | None

    @classmethod
    def of(cls, name: str, policy: ModelPolicy, hide: bool) -> ModelAccess:
        return cls(name, policy, hide, networks(policy.allow_ips))

    def may_use(self, ident: Identity) -> bool:
        a = self.allow.allow
        if a is None or ident.admin:
            return True
        return (
            (ident.project is not None and ident.project in a.projects)
            or (ident.department is not None and ident.department in a.departments)
            or (ident.user is not None and ident.user in a.users)
            or ident.key_id in a.keys
        )

    def check(self, ident: Identity, client_ip: str | None) -> None:
        if not self.may_use(ident):
            raise Forbidden(
                f"Your key may not use the model '{self.name}'. Ask an administrator for access.",
                "model_not_allowed",
                hide=self.hide,
            )
        if self.allow_nets is not None and not within(client_ip, self.allow_nets):
            raise Forbidden(
                f"The model '{self.name}' may not be used from {client_ip or 'an unknown address'}.",
                "ip_not_allowed",
            )


def check_key_ip(ident: Identity, client_ip: str | None) -> None:
    if ident.allow_ips is not None and not within(client_ip, ident.allow_ips):
        raise Forbidden(f"This API key may not be used from {client_ip or 'an unknown address'}.", "ip_not_allowed")
