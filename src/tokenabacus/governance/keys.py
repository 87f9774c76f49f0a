"""API keys: created once, stored as SHA-256 hashes, cached in memory for the hot path."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import logging
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING

import orjson

from tokenabacus.calendar import now_ms
from tokenabacus.config import KeyDefaults
from tokenabacus.governance.keystrength import check_admin_key
from tokenabacus.ledger.admin_events import Actor
from tokenabacus.ledger.reloader import Reloader
from tokenabacus.ledger.store import Store

if TYPE_CHECKING:
    from tokenabacus.ledger.org import OrgStore

log = logging.getLogger(__name__)
KEY_PREFIX = "sk-"
ADMIN_KEY_HASH = "admin_key_hash"  # the meta entry


ADMIN, VIEWER, MEMBER = "admin", "viewer", "member"
ROLES = (ADMIN, VIEWER, MEMBER)
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class Identity:
    """Who is calling. ``role``: admin (everything), viewer (reads the data of one department or
    project: ``scope_kind``/``scope_value``), member (calls /v1, reads its own usage and quotas)."""

    key_id: str
    user: str | None
    project: str | None
    department: str | None
    role: str = MEMBER
    scope_kind: str | None = None
    scope_value: str | None = None
    allow_ips: tuple[IPNetwork, ...] | None = None  # None: any address
    name: str | None = None
    expires_at: int | None = None  # UTC ms from which the key is refused; None: never

    def expired(self, at_ms: int) -> bool:
        return self.expires_at is not None and at_ms >= self.expires_at

    @property
    def admin(self) -> bool:
        return self.role == ADMIN


# The bootstrap key (TOKENABACUS_ADMIN_KEY or the one generated at first start).
BOOTSTRAP_ADMIN = Identity("admin", "admin", None, None, role=ADMIN, name="bootstrap")


def parse_networks(raw: str | None) -> tuple[IPNetwork, ...] | None:
    if not raw:
        return None
    return tuple(ipaddress.ip_network(c, strict=False) for c in orjson.loads(raw))


def identity_of(r: dict) -> Identity:
    return Identity(
        r["key_id"],
        r["user"],
        r["project"],
        r["department"],
        role=r.get("role") or MEMBER,
        scope_kind=r.get("scope_kind"),
        scope_value=r.get("scope_value"),
        allow_ips=parse_networks(r.get("allow_ips")),
        name=r.get("name"),
        expires_at=r.get("expires_at"),
    )


def hash_key(key: str) -> str:
    # Keys carry 256 random bits, so a fast hash is enough; no salt or KDF is needed.
    return hashlib.sha256(key.encode()).hexdigest()


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


@dataclass(frozen=True, slots=True)
class KeyOwner:
    """Who a new key's usage is billed to."""

    user: str | None
    project: str | None
    department: str | None


class NoOwner(ValueError):
    """A key with neither a user nor a project: nobody its usage could be billed to."""


def key_owner(
    defaults: KeyDefaults,
    user: str | None,
    project: str | None,
    department: str | None,
    org: OrgStore | None = None,
    role: str = MEMBER,
) -> KeyOwner:
    """The owner of a new key. Names given win; then, with ``org``, what the organization knows
    (org_placement); then, for a member key, ``keys.defaults``. A member key with still neither a
    user nor a project raises NoOwner; viewer and admin keys may have no owner (they are not
    billed to a default). The CLI and the admin API both ask here."""
    if org is not None:
        project, department = org_placement(org, user, project, department)
    if role != MEMBER:
        return KeyOwner(user, project, department)
    project = project or defaults.project
    department = department or defaults.department
    if not (user or project):
        raise NoOwner("a key needs a user or a project")
    return KeyOwner(user, project, department)


def org_placement(
    org: OrgStore, user: str | None, project: str | None, department: str | None
) -> tuple[str | None, str | None]:
    """(project, department) completed and checked by the organization (placement.place)."""
    from tokenabacus.governance.placement import place

    return place(org, user, project, department)


def create_key(
    store: Store,
    user: str | None,
    project: str | None,
    department: str | None,
    name: str | None = None,
    role: str = MEMBER,
    scope: tuple[str, str] | None = None,
    allow_ips: list[str] | None = None,
    expires_at: int | None = None,
    actor: Actor | None = None,
) -> tuple[str, dict]:
    """Create and store a key; return (the plaintext key, shown once; its stored row).
    ``allow_ips``: normalised CIDRs (config.check_cidrs). ``expires_at``: UTC ms it is refused
    from (governance.keylife). With ``actor``, the creation is an admin event."""
    key = generate_key()
    row = {
        "key_id": "key_" + secrets.token_hex(8),
        "key_hash": hash_key(key),
        "prefix": key[:8],
        "user": user,
        "project": project,
        "department": department,
        "name": name,
        "created_at": now_ms(),
        "revoked_at": None,
        "role": role,
        "scope_kind": scope[0] if scope else None,
        "scope_value": scope[1] if scope else None,
        "allow_ips": orjson.dumps(allow_ips).decode() if allow_ips else None,
    }
    if expires_at is not None:  # only then: a row as it was before key lifetimes existed
        row["expires_at"] = expires_at
    store.keys.add(row, actor)
    return key, row


def ensure_admin_key(store: Store, env_key: str | None) -> str | None:
    """Set up the admin key. Returns the plaintext only when it was just generated (print it once).
    A chosen key that is too weak raises WeakAdminKey before anything is stored."""
    if env_key:
        check_admin_key(env_key)
        store.meta.set(ADMIN_KEY_HASH, hash_key(env_key))
        return None
    if store.meta.get(ADMIN_KEY_HASH):
        return None
    key = generate_key()
    store.meta.set(ADMIN_KEY_HASH, hash_key(key))
    return key


class KeyCache:
    """Maps key hashes to identities; reloaded off the event loop when the keys change (its
    Reloader polls the keys generation)."""

    def __init__(self, store: Store, refresh_interval_s: float = 2.0, miss_interval_s: float = 0.1) -> None:
        self.store = store
        self._by_hash: dict[str, Identity] = {}
        self._revoked: dict[str, str] = {}  # hash -> key_id, so a 401 can say whose key it was
        # A rotated key's old secret: hash -> (the key, the UTC ms it is refused from).
        self._previous: dict[str, tuple[Identity, int]] = {}
        self._admin_hash: str | None = None
        self.reloader = Reloader(
            "key cache", store.keys.generation, self.load, refresh_interval_s, miss_interval_s, logger=log
        )

    def _load_sync(self) -> tuple[dict[str, Identity], dict[str, str], dict[str, tuple[Identity, int]], str | None]:
        rows = self.store.keys.list(include_revoked=True)
        table = {r["key_hash"]: identity_of(r) for r in rows if r["revoked_at"] is None}
        revoked = {r["key_hash"]: r["key_id"] for r in rows if r["revoked_at"] is not None}
        previous: dict[str, tuple[Identity, int]] = {}
        for r in rows:
            if r.get("previous_hash"):
                if r["revoked_at"] is None:
                    previous[r["previous_hash"]] = (table[r["key_hash"]], r["previous_until"] or 0)
                else:
                    revoked[r["previous_hash"]] = r["key_id"]
        return table, revoked, previous, self.store.meta.get(ADMIN_KEY_HASH)

    async def load(self) -> None:
        self._by_hash, self._revoked, self._previous, self._admin_hash = await asyncio.to_thread(self._load_sync)

    def _live(self, key_hash: str) -> Identity | None:
        """The key holding this hash, while it may be used: not expired, and an old secret only
        during its rotation's grace period. Time passes without a reload, so this is asked each time."""
        ident = self._by_hash.get(key_hash)
        now = now_ms()
        if ident is None:
            old = self._previous.get(key_hash)
            if old is None or now >= old[1]:
                return None
            ident = old[0]
        return None if ident.expired(now) else ident

    async def start(self) -> None:
        await self.reloader.start()

    async def stop(self) -> None:
        await self.reloader.stop()

    def lookup(self, key: str) -> Identity | None:
        return self._live(hash_key(key))

    async def identify(self, key: str) -> Identity | None:
        """Who a key is: its own row (a named admin key keeps its id), else the bootstrap admin
        key (which has no row), else a fresh look at the keys (``resolve``). /v1 and /admin alike."""
        h = hash_key(key)
        ident = self._live(h)
        if ident is not None:
            return ident
        if self._admin_hash is not None and hmac.compare_digest(h, self._admin_hash):
            return BOOTSTRAP_ADMIN
        if self.refused_key_id(h) is not None:  # known and refused: no reload needed
            return None
        return await self.resolve(key)

    async def resolve(self, key: str) -> Identity | None:
        """Cache hit: no I/O. Miss: wait for the next coalesced check of the keys generation (at
        most one per miss interval), so a key created a moment ago by `tokenabacus keys create`
        works at once while random keys cannot hammer the database."""
        h = hash_key(key)
        ident = self._live(h)
        if ident is not None:
            return ident
        try:
            await self.reloader.check_soon()
        except Exception:
            log.warning("key cache reload failed", exc_info=True)
        return self._live(h)

    def holder(self, key_hash: str) -> Identity | None:
        """Who the key with this hash is while it is live (a console session acts as it): None
        once it is revoked, or for the bootstrap key once it has been replaced."""
        ident = self._live(key_hash)
        if ident is not None:
            return ident
        if self._admin_hash is not None and hmac.compare_digest(key_hash, self._admin_hash):
            return BOOTSTRAP_ADMIN
        return None

    def refused_key_id(self, key_hash: str) -> str | None:
        """The id of a known key this hash may no longer use: revoked, expired, or an old secret
        past its rotation's grace period. None for a live key or one nobody holds."""
        if key_hash in self._revoked:
            return self._revoked[key_hash]
        ident = self._by_hash.get(key_hash)
        if ident is None and key_hash in self._previous:
            ident = self._previous[key_hash][0]
        if ident is not None and self._live(key_hash) is None:
            return ident.key_id
        return None

    def revoked_key_id(self, key: str) -> str | None:
        """Whose key this was, when it is refused (revoked, expired or rotated away): its use is
        recorded under that id and is not counted as a guess."""
        return self.refused_key_id(hash_key(key))

    def expired_at(self, key: str) -> int | None:
        """When the key was refused from, if it is refused because it expired (its own secret or
        an old one in grace); else None."""
        h = hash_key(key)
        if h in self._revoked:
            return None
        ident = self._by_hash.get(h)
        if ident is None and h in self._previous:
            ident, until = self._previous[h]
            if now_ms() >= until:
                return None  # rotated away: refused like a revoked secret
        if ident is not None and ident.expired(now_ms()):
            return ident.expires_at
        return None

    def is_admin(self, key: str) -> bool:
        """The bootstrap admin key, or a named key with the admin role."""
        h = hash_key(key)
        if self._admin_hash is not None and hmac.compare_digest(h, self._admin_hash):
            return True
        ident = self._live(h)
        return ident is not None and ident.role == ADMIN
