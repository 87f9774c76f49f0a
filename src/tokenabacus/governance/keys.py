"""API keys: created once, stored as SHA-256 hashes, cached in memory for the hot path."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import secrets
import time
from dataclasses import dataclass

from tokenabacus.config import KeyDefaults
from tokenabacus.ledger.record import now_ms
from tokenabacus.ledger.store import Store
from tokenabacus.tasks import cancel_and_wait

log = logging.getLogger(__name__)
KEY_PREFIX = "sk-"
ADMIN_KEY_HASH = "admin_key_hash"  # the meta entry


@dataclass(frozen=True, slots=True)
class Identity:
    key_id: str
    user: str | None
    project: str | None
    department: str | None
    admin: bool = False


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


def key_owner(defaults: KeyDefaults, user: str | None, project: str | None, department: str | None) -> KeyOwner:
    """The owner of a new key, project and department falling back to ``keys.defaults``; NoOwner
    when there is still neither a user nor a project. The CLI and the admin API both ask here."""
    project = project or defaults.project
    department = department or defaults.department
    if not (user or project):
        raise NoOwner("a key needs a user or a project")
    return KeyOwner(user, project, department)


def create_key(
    store: Store, user: str | None, project: str | None, department: str | None, name: str | None = None
) -> tuple[str, dict]:
    """Create and store a key; return (the plaintext key, shown once; its stored row)."""
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
    }
    store.keys.add(row)
    return key, row


def ensure_admin_key(store: Store, env_key: str | None) -> str | None:
    """Set up the admin key. Returns the plaintext only when it was just generated (print it once)."""
    if env_key:
        store.meta.set(ADMIN_KEY_HASH, hash_key(env_key))
        return None
    if store.meta.get(ADMIN_KEY_HASH):
        return None
    key = generate_key()
    store.meta.set(ADMIN_KEY_HASH, hash_key(key))
    return key


class KeyCache:
    """Maps key hashes to identities; refreshed off the event loop when the keys change."""

    def __init__(self, store: Store, refresh_interval_s: float = 2.0, miss_interval_s: float = 0.1) -> None:
        self.store = store
        self.refresh_interval = refresh_interval_s
        self.miss_interval = miss_interval_s
        self._by_hash: dict[str, Identity] = {}
        self._revoked: dict[str, str] = {}  # hash -> key_id, so a 401 can say whose key it was
        self._admin_hash: str | None = None
        self._generation = -1
        self._last_check = 0.0
        self._loading: asyncio.Task | None = None
        self._task: asyncio.Task | None = None

    def _load_sync(self) -> tuple[int, dict[str, Identity], dict[str, str], str | None]:
        gen = self.store.keys.generation()
        rows = self.store.keys.list(include_revoked=True)
        table = {
            r["key_hash"]: Identity(r["key_id"], r["user"], r["project"], r["department"])
            for r in rows
            if r["revoked_at"] is None
        }
        revoked = {r["key_hash"]: r["key_id"] for r in rows if r["revoked_at"] is not None}
        return gen, table, revoked, self.store.meta.get(ADMIN_KEY_HASH)

    async def load(self) -> None:
        gen, table, revoked, admin = await asyncio.to_thread(self._load_sync)
        self._generation, self._by_hash, self._revoked, self._admin_hash = gen, table, revoked, admin

    async def _refresh_if_changed(self) -> None:
        gen = await asyncio.to_thread(self.store.keys.generation)
        if gen != self._generation:
            await self.load()

    async def start(self) -> None:
        await self.load()
        self._task = asyncio.create_task(self._poll(), name="key-cache")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_interval)
            try:
                await self._refresh_if_changed()
            except Exception:  # database briefly unavailable: keep serving from the cache
                log.warning("key cache refresh failed", exc_info=True)

    def lookup(self, key: str) -> Identity | None:
        return self._by_hash.get(hash_key(key))

    async def resolve(self, key: str) -> Identity | None:
        """Cache hit: no I/O. Miss: wait for the next coalesced check of the keys generation (at
        most one per miss interval), so a key created a moment ago by `tokenabacus keys create`
        works at once while random keys cannot hammer the database."""
        h = hash_key(key)
        ident = self._by_hash.get(h)
        if ident is not None:
            return ident
        if self._loading is None or self._loading.done():
            self._loading = asyncio.create_task(self._checked_reload())
        try:
            await asyncio.shield(self._loading)
        except Exception:
            log.warning("key cache reload failed", exc_info=True)
        return self._by_hash.get(h)

    async def _checked_reload(self) -> None:
        wait = self.miss_interval - (time.monotonic() - self._last_check)
        if wait > 0:
            await asyncio.sleep(wait)
        self._last_check = time.monotonic()
        await self._refresh_if_changed()

    def revoked_key_id(self, key: str) -> str | None:
        return self._revoked.get(hash_key(key))

    def is_admin(self, key: str) -> bool:
        return self._admin_hash is not None and hmac.compare_digest(hash_key(key), self._admin_hash)

    def is_admin_header(self, authorization: str | None) -> bool:
        """True if an Authorization header carries the admin key as a bearer token."""
        auth = authorization or ""
        return auth[:7].lower() == "bearer " and self.is_admin(auth[7:].strip())
