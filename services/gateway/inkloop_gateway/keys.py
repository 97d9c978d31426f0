"""API keys: tenants, roles, and secrets stored only as hashes.

A secret looks like `ink_<key id>_<32 random bytes, urlsafe>`. The key id inside it finds the row in
one indexed lookup; the SHA-256 of the whole secret is then compared in constant time. A plain hash is
enough (no bcrypt): secrets are 256 random bits, so there is nothing to brute-force.

Authenticated keys are remembered for `cache_ttl_s` (1 s by default), keyed by the secret's hash, so
a busy client costs a SHA-256 and a dict lookup per call instead of a SQLite read. `revoke` on this
store drops the key from the cache at once; a revocation made by another process (the
`inkloop keys revoke` CLI on the same file) takes effect within `cache_ttl_s`. Failures are never
cached: a new key works on its first call.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import re
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from inkloop import errors

_TENANT_ID = re.compile(r"^[a-z0-9_-]{1,64}$")
_SECRET = re.compile(r"^ink_([A-Za-z0-9]{12})_[A-Za-z0-9_-]{43}$")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (
    key_id      TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL,
    role        TEXT NOT NULL,
    name        TEXT NOT NULL,
    prefix      TEXT NOT NULL,
    secret_hash BLOB NOT NULL,
    created_at  REAL NOT NULL,
    revoked_at  REAL
);
CREATE INDEX IF NOT EXISTS api_keys_tenant ON api_keys (tenant_id);
"""


class Role(enum.StrEnum):
    USER = "user"
    ANALYST = "analyst"
    ADMIN = "admin"

    def allows(self, needed: Role) -> bool:
        order = [Role.USER, Role.ANALYST, Role.ADMIN]
        return order.index(self) >= order.index(needed)


@dataclass(frozen=True)
class ApiKey:
    key_id: str
    tenant_id: str
    role: Role
    name: str
    prefix: str
    created_at: float
    revoked_at: float | None = None


def _hash(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


#: Most authenticated keys remembered at once; past it the cache starts over (a cache, not a table).
_CACHE_MAX_KEYS = 10_000


class KeyStore:
    """API keys in a SQLite file. Safe to share between threads; each call is one short transaction."""

    def __init__(self, path: Path, *, cache_ttl_s: float = 1.0) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()
        self.cache_ttl_s = cache_ttl_s
        # SHA-256 of a secret -> (its active key, time.monotonic() until which that may be assumed).
        self._cache: dict[bytes, tuple[ApiKey, float]] = {}

    def close(self) -> None:
        self._db.close()

    def create(self, tenant_id: str, role: Role, name: str = "") -> tuple[ApiKey, str]:
        """Creates a key; returns it with its secret, which is not stored and cannot be shown again."""
        if not _TENANT_ID.match(tenant_id):
            raise errors.InvalidArgument("tenant_id", "must be 1-64 characters of a-z, 0-9, '_' or '-'")
        key_id = "".join(secrets.choice("ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789") for _ in range(12))
        secret = f"ink_{key_id}_{secrets.token_urlsafe(32)}"
        key = ApiKey(key_id, tenant_id, role, name, secret[:12], time.time())
        with self._lock:
            self._db.execute(
                "INSERT INTO api_keys VALUES (?, ?, ?, ?, ?, ?, ?, NULL)",
                (key.key_id, tenant_id, role.value, name, key.prefix, _hash(secret), key.created_at),
            )
        return key, secret

    def authenticate(self, secret: str) -> ApiKey:
        """The active key whose secret this is; `Unauthenticated` otherwise (never says which part was wrong)."""
        secret_hash = _hash(secret)
        cached = self._cache.get(secret_hash)
        if cached is not None and time.monotonic() < cached[1]:
            return cached[0]
        match = _SECRET.match(secret)
        if match is None:
            raise errors.Unauthenticated("invalid API key")
        with self._lock:  # held until cached, so a concurrent `revoke` cannot be overtaken
            row = self._db.execute(
                "SELECT key_id, tenant_id, role, name, prefix, created_at, revoked_at, secret_hash "
                "FROM api_keys WHERE key_id = ?",
                (match.group(1),),
            ).fetchone()
            stored_hash = row[7] if row is not None else b"\0" * 32
            # Compare even when no row matched, so timing does not tell whether a key id exists.
            valid = hmac.compare_digest(stored_hash, secret_hash)
            if row is None or not valid or row[6] is not None:
                raise errors.Unauthenticated("invalid API key")
            key = self._key(row)
            if self.cache_ttl_s > 0:
                if len(self._cache) >= _CACHE_MAX_KEYS:
                    self._cache.clear()
                self._cache[secret_hash] = (key, time.monotonic() + self.cache_ttl_s)
        return key

    def list(self, tenant_id: str = "", *, include_revoked: bool = False) -> list[ApiKey]:
        query = "SELECT key_id, tenant_id, role, name, prefix, created_at, revoked_at FROM api_keys WHERE 1=1"
        params: list[str] = []
        if tenant_id:
            query += " AND tenant_id = ?"
            params.append(tenant_id)
        if not include_revoked:
            query += " AND revoked_at IS NULL"
        with self._lock:
            rows = self._db.execute(query + " ORDER BY created_at", params).fetchall()
        return [self._key(row) for row in rows]

    def revoke(self, key_id: str) -> ApiKey:
        """Revokes a key: its next call through this store fails (other processes: within `cache_ttl_s`)."""
        with self._lock:
            self._db.execute(
                "UPDATE api_keys SET revoked_at = ? WHERE key_id = ? AND revoked_at IS NULL", (time.time(), key_id)
            )
            row = self._db.execute(
                "SELECT key_id, tenant_id, role, name, prefix, created_at, revoked_at FROM api_keys WHERE key_id = ?",
                (key_id,),
            ).fetchone()
            for secret_hash, (key, _until) in list(self._cache.items()):
                if key.key_id == key_id:
                    del self._cache[secret_hash]
        if row is None:
            raise errors.NotFound(f"API key {key_id!r} not found")
        return self._key(row)

    @staticmethod
    def _key(row: tuple) -> ApiKey:
        return ApiKey(row[0], row[1], Role(row[2]), row[3], row[4], row[5], row[6])


DEV_TENANT = "dev"
DEV_KEY_FILE = "dev-api-key"


def ensure_dev_key(store: KeyStore, data_dir: Path) -> tuple[str, bool]:
    """The development admin key of this data dir, creating it on first use; returns (secret, created)."""
    key_file = data_dir / DEV_KEY_FILE
    if key_file.exists():
        secret = key_file.read_text().strip()
        try:
            store.authenticate(secret)
            return secret, False
        except errors.Unauthenticated:
            pass  # revoked or from another store: make a new one
    _key, secret = store.create(DEV_TENANT, Role.ADMIN, "development key created by `inkloop up`")
    data_dir.mkdir(parents=True, exist_ok=True)
    key_file.touch(mode=0o600)
    key_file.write_text(secret + "\n")
    return secret, True
