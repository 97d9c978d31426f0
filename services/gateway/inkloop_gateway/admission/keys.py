"""API keys: tenants, roles, and secrets stored only as hashes.

A secret looks like `ink_<key id>_<32 random bytes, urlsafe>`. The key id inside it finds the key in
one lookup; the SHA-256 of the whole secret is then compared in constant time. A plain hash is enough
(no bcrypt): secrets are 256 random bits, so there is nothing to brute-force.

`KeyStore` holds every rule (secret format, hashing, comparison, roles, tenant ids, caching) once;
where keys live is a `KeyStorage`: a SQLite file (`SqliteKeyStorage`, one gateway) or Redis
(`inkloop_gateway.admission.keys_redis`, shared by replicas). A read-only `KeyFile` of hashes (a mounted
Secret, `inkloop_gateway.admission.keys_file`) adds keys that authenticate besides the storage's.

Authenticated keys are remembered for `cache_ttl_s` (1 s by default), keyed by the secret's hash, so
a busy client costs a SHA-256 and a dict lookup per call instead of a storage read. `revoke` on this
store drops the key from the cache at once; a revocation made elsewhere (another replica, the
`inkloop keys revoke` CLI) takes effect within `cache_ttl_s`. Failures are never cached: a new key
works on its first call, on every replica.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import hmac
import logging
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from inkloop import errors

if TYPE_CHECKING:
    from inkloop_gateway.admission.keys_file import KeyFile
    from inkloop_gateway.settings import GatewaySettings

log = logging.getLogger(__name__)

TENANT_ID = re.compile(r"^[a-z0-9_-]{1,64}$")
KEY_ID = re.compile(r"^[A-Za-z0-9]{12}$")
_SECRET = re.compile(r"^ink_([A-Za-z0-9]{12})_[A-Za-z0-9_-]{43}$")
_KEY_ID_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789"


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
    #: Read from the key file (a mounted Secret): removing its line is how it is revoked.
    from_key_file: bool = False


@dataclass(frozen=True)
class StoredKey:
    """A key as a storage or the key file holds it: the key and the SHA-256 of its secret."""

    key: ApiKey
    secret_hash: bytes


def hash_secret(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def new_secret() -> tuple[str, str]:
    """A fresh (key id, secret) pair."""
    key_id = "".join(secrets.choice(_KEY_ID_ALPHABET) for _ in range(12))
    return key_id, f"ink_{key_id}_{secrets.token_urlsafe(32)}"


def key_id_of(secret: str) -> str | None:
    """The key id inside a well-formed secret; None for anything else."""
    match = _SECRET.match(secret)
    return match.group(1) if match else None


def prefix_of(key_id: str) -> str:
    """What listings show of a secret: its first 12 characters, which hold no secret part."""
    return f"ink_{key_id}"[:12]


def check_tenant_id(tenant_id: str) -> None:
    if not TENANT_ID.match(tenant_id):
        raise errors.InvalidArgument("tenant_id", "must be 1-64 characters of a-z, 0-9, '_' or '-'")


class KeyStorage(Protocol):
    """Where keys live. Rules are `KeyStore`'s; a storage only keeps rows. Errors reaching the
    storage itself are `errors.Unavailable`."""

    def insert(self, stored: StoredKey) -> bool:
        """Adds a key; False (and nothing written) if its key id is taken."""
        ...

    def get(self, key_id: str) -> StoredKey | None: ...

    def list(self, tenant_id: str, *, include_revoked: bool) -> Sequence[StoredKey]:
        """Keys in creation order, of one tenant ("" = all)."""
        ...

    def revoke(self, key_id: str, at: float) -> ApiKey | None:
        """Marks a key revoked (once: a second revoke keeps the first time); None if unknown."""
        ...

    def close(self) -> None: ...


#: Most authenticated keys remembered at once; past it the cache starts over (a cache, not a table).
_CACHE_MAX_KEYS = 10_000
#: Compared against when no key matched, so timing does not tell whether a key id exists.
_NO_HASH = b"\0" * 32


class KeyStore:
    """API keys: create, list, revoke in a `KeyStorage`; authenticate against it and a `KeyFile`.

    Safe to share between threads. `storage` may be a path, meaning a SQLite file there.
    """

    def __init__(
        self, storage: Path | KeyStorage, *, cache_ttl_s: float = 1.0, key_file: KeyFile | None = None
    ) -> None:
        self.storage: KeyStorage = SqliteKeyStorage(storage) if isinstance(storage, Path) else storage
        self.key_file = key_file
        self.cache_ttl_s = cache_ttl_s
        self._lock = threading.Lock()
        # SHA-256 of a secret -> (its active key, time.monotonic() until which that may be assumed).
        self._cache: dict[bytes, tuple[ApiKey, float]] = {}
        # Bumped by every revoke: a lookup that overlapped one does not cache what it read.
        self._revocations = 0

    def close(self) -> None:
        self.storage.close()

    def create(self, tenant_id: str, role: Role, name: str = "") -> tuple[ApiKey, str]:
        """Creates a key; returns it with its secret, which is not stored and cannot be shown again."""
        check_tenant_id(tenant_id)
        while True:  # a taken key id (one chance in 57**12) just draws another
            key_id, secret = new_secret()
            key = ApiKey(key_id, tenant_id, role, name, prefix_of(key_id), time.time())
            if self.storage.insert(StoredKey(key, hash_secret(secret))):
                return key, secret

    def authenticate(self, secret: str) -> ApiKey:
        """The active key whose secret this is; `Unauthenticated` otherwise (never says which part was wrong)."""
        known, secret_hash, key_id = self._known(secret)
        if known is not None:
            return known
        revocations = self._revocations
        return self._checked(self.storage.get(key_id), secret_hash, revocations)

    async def authenticate_async(self, secret: str) -> ApiKey:
        """`authenticate` for the event loop: a key in the cache or the key file is answered at once; a
        storage lookup (a Redis round trip, a SQLite read) runs in a worker thread, so a slow store or
        a flood of unknown keys never holds the loop."""
        known, secret_hash, key_id = self._known(secret)
        if known is not None:
            return known
        revocations = self._revocations
        return self._checked(await asyncio.to_thread(self.storage.get, key_id), secret_hash, revocations)

    def _known(self, secret: str) -> tuple[ApiKey | None, bytes, str]:
        """(the key if the cache or the key file knows it, the secret's hash, its key id)."""
        secret_hash = hash_secret(secret)
        cached = self._cache.get(secret_hash)
        if cached is not None and time.monotonic() < cached[1]:
            return cached[0], secret_hash, ""
        key_id = key_id_of(secret)
        if key_id is None:
            raise errors.Unauthenticated("invalid API key")
        # The file's keys are in memory already (and re-read when it changes): never cached here, so
        # a line removed from the file stops working as soon as the change is seen.
        from_file = self.key_file.find(key_id) if self.key_file is not None else None
        matches_file = hmac.compare_digest(from_file.secret_hash if from_file else _NO_HASH, secret_hash)
        if from_file is not None and matches_file:
            return from_file.key, secret_hash, key_id
        return None, secret_hash, key_id

    def _checked(self, stored: StoredKey | None, secret_hash: bytes, revocations: int) -> ApiKey:
        """The stored key if the secret matches and it is not revoked; cached unless a revocation happened
        while it was being looked up (`revocations` is the count from before the lookup)."""
        valid = hmac.compare_digest(stored.secret_hash if stored else _NO_HASH, secret_hash)
        if stored is None or not valid or stored.key.revoked_at is not None:
            raise errors.Unauthenticated("invalid API key")
        if self.cache_ttl_s > 0:
            with self._lock:
                if revocations == self._revocations:
                    if len(self._cache) >= _CACHE_MAX_KEYS:
                        self._cache.clear()
                    self._cache[secret_hash] = (stored.key, time.monotonic() + self.cache_ttl_s)
        return stored.key

    def list(self, tenant_id: str = "", *, include_revoked: bool = False) -> list[ApiKey]:
        """The storage's keys, then the key file's (read-only, never revoked), each in creation order."""
        keys = [stored.key for stored in self.storage.list(tenant_id, include_revoked=include_revoked)]
        if self.key_file is not None:
            keys += [s.key for s in self.key_file.entries() if not tenant_id or s.key.tenant_id == tenant_id]
        return keys

    def revoke(self, key_id: str) -> ApiKey:
        """Revokes a key: its next call through this store fails (other replicas: within `cache_ttl_s`)."""
        key = self.storage.revoke(key_id, time.time())
        with self._lock:
            self._revocations += 1
            for secret_hash, (cached, _until) in list(self._cache.items()):
                if cached.key_id == key_id:
                    del self._cache[secret_hash]
        if key is not None:
            return key
        if self.key_file is not None and self.key_file.find(key_id) is not None:
            raise errors.FailedPrecondition(
                f"API key {key_id!r} comes from the key file {self.key_file.path}: remove its line there"
            )
        raise errors.NotFound(f"API key {key_id!r} not found")


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
_COLUMNS = "key_id, tenant_id, role, name, prefix, created_at, revoked_at, secret_hash"


class SqliteKeyStorage:
    """Keys in a SQLite file: one gateway (and the CLI on the same file). Each call is one short transaction."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()

    def close(self) -> None:
        self._db.close()

    def insert(self, stored: StoredKey) -> bool:
        key = stored.key
        row = (key.key_id, key.tenant_id, key.role.value, key.name, key.prefix, key.created_at, key.revoked_at)
        with self._lock:
            try:
                self._db.execute(
                    f"INSERT INTO api_keys ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (*row, stored.secret_hash)
                )
            except sqlite3.IntegrityError:
                return False
        return True

    def get(self, key_id: str) -> StoredKey | None:
        with self._lock:
            row = self._db.execute(f"SELECT {_COLUMNS} FROM api_keys WHERE key_id = ?", (key_id,)).fetchone()
        return _stored(row) if row is not None else None

    def list(self, tenant_id: str, *, include_revoked: bool) -> list[StoredKey]:
        query = f"SELECT {_COLUMNS} FROM api_keys WHERE 1=1"
        params: list[str] = []
        if tenant_id:
            query += " AND tenant_id = ?"
            params.append(tenant_id)
        if not include_revoked:
            query += " AND revoked_at IS NULL"
        with self._lock:
            rows = self._db.execute(query + " ORDER BY created_at", params).fetchall()
        return [_stored(row) for row in rows]

    def revoke(self, key_id: str, at: float) -> ApiKey | None:
        with self._lock:
            self._db.execute("UPDATE api_keys SET revoked_at = ? WHERE key_id = ? AND revoked_at IS NULL", (at, key_id))
            row = self._db.execute(f"SELECT {_COLUMNS} FROM api_keys WHERE key_id = ?", (key_id,)).fetchone()
        return _stored(row).key if row is not None else None


def _stored(row: tuple) -> StoredKey:
    return StoredKey(ApiKey(row[0], row[1], Role(row[2]), row[3], row[4], row[5], row[6]), row[7])


def key_store_from_settings(settings: GatewaySettings) -> KeyStore:
    """Redis when the gateway has a Redis URL (keys shared by every replica), else SQLite in its data dir;
    plus the read-only key file when one is configured."""
    from inkloop_gateway.admission.keys_file import KeyFile
    from inkloop_gateway.admission.keys_redis import RedisKeyStorage, copy_keys

    storage: KeyStorage
    if settings.redis_url:
        storage = RedisKeyStorage(settings.redis_url)
        local = settings.keys_db_path()
        if local.exists():  # keys made before Redis was configured keep working, now on every replica
            legacy = SqliteKeyStorage(local)
            try:
                copy_keys(legacy, storage)
            except errors.Unavailable:
                log.warning("could not copy the keys of %s into Redis; trying again at the next start", local)
            finally:
                legacy.close()
    else:
        storage = SqliteKeyStorage(settings.keys_db_path())
    key_file = KeyFile(settings.api_keys_file) if settings.api_keys_file else None
    return KeyStore(storage, cache_ttl_s=settings.api_keys_cache_ttl_s, key_file=key_file)


DEV_TENANT = "dev"
DEV_KEY_FILE = "dev-api-key"


def ensure_dev_key(store: KeyStore, data_dir: Path) -> tuple[str, bool]:
    """The development admin key of this data dir, creating it on first use; returns (secret, created)."""
    return _ensure_key(store, data_dir / DEV_KEY_FILE, Role.ADMIN, "development key created by `inkloop up`")


def ensure_page_key(store: KeyStore, key_file: Path) -> tuple[str, bool]:
    """A user-role key of the development tenant for the local page (`web_page_key_file`).

    Only `inkloop up` makes one: a production gateway hands the page no key unless configured to.
    """
    return _ensure_key(store, key_file, Role.USER, "web page key created by `inkloop up`")


def _ensure_key(store: KeyStore, key_file: Path, role: Role, name: str) -> tuple[str, bool]:
    if key_file.exists():
        secret = key_file.read_text().strip()
        try:
            if store.authenticate(secret).role == role:
                return secret, False
        except errors.Unauthenticated:
            pass  # revoked or from another store: make a new one
    _key, secret = store.create(DEV_TENANT, role, name)
    key_file.parent.mkdir(parents=True, exist_ok=True)
    key_file.touch(mode=0o600)
    key_file.write_text(secret + "\n")
    return secret, True
