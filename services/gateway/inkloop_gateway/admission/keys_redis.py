"""API keys in Redis, shared by every gateway replica (and the `inkloop keys` CLI) using that Redis.

Keys (prefix `inkloop:`): `apikey:<key id>` a hash of the key's fields, with the SHA-256 of its
secret in hex (never the secret); `apikeys` a sorted set of key ids by creation time (listings).
Creating and revoking are one Lua script each, so two replicas never half-write a key.

A blocking client: the gateway reaches the storage only on a cache miss (once per key per
`cache_ttl_s` on each replica), from a worker thread (`KeyStore.authenticate_async`); the CLI is
synchronous anyway. Short socket timeouts bound each call, and after a connection failure every
lookup answers UNAVAILABLE at once for `backoff_s` (1 s) instead of each waiting for its own
timeout. Keys still in a replica's cache, and the key file's, keep working.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar, cast

import redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from inkloop import errors
from inkloop_gateway.admission.keys import ApiKey, KeyStorage, Role, StoredKey

log = logging.getLogger(__name__)

PREFIX = "inkloop:"
_INDEX = PREFIX + "apikeys"
_SOCKET_TIMEOUT_S = 0.5
_BACKOFF_S = 1.0

_INSERT = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
redis.call('ZADD', KEYS[2], ARGV[1], ARGV[2])
return 1
"""

_REVOKE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return {} end
if redis.call('HGET', KEYS[1], 'revoked_at') == '' then redis.call('HSET', KEYS[1], 'revoked_at', ARGV[1]) end
return redis.call('HGETALL', KEYS[1])
"""

T = TypeVar("T")


def _key_name(key_id: str) -> str:
    return f"{PREFIX}apikey:{key_id}"


class RedisKeyStorage:
    """Keys in Redis. Needs one Redis primary, like the job store (not a sharded cluster)."""

    def __init__(self, url: str, *, backoff_s: float = _BACKOFF_S) -> None:
        self.backoff_s = backoff_s
        self._redis = redis.Redis.from_url(
            url, decode_responses=True, socket_timeout=_SOCKET_TIMEOUT_S, socket_connect_timeout=_SOCKET_TIMEOUT_S
        )
        self._insert = self._redis.register_script(_INSERT)
        self._revoke = self._redis.register_script(_REVOKE)
        self._unreachable_until = 0.0

    def close(self) -> None:
        self._redis.close()

    def insert(self, stored: StoredKey) -> bool:
        key = stored.key
        fields = {
            "tenant_id": key.tenant_id,
            "role": key.role.value,
            "name": key.name,
            "prefix": key.prefix,
            "created_at": repr(key.created_at),
            "revoked_at": "" if key.revoked_at is None else repr(key.revoked_at),
            "sha256": stored.secret_hash.hex(),
        }
        args = [repr(key.created_at), key.key_id, *(part for pair in fields.items() for part in pair)]
        return bool(self._call(lambda: self._insert(keys=[_key_name(key.key_id), _INDEX], args=args)))

    def get(self, key_id: str) -> StoredKey | None:
        fields = cast(dict[str, str], self._call(lambda: self._redis.hgetall(_key_name(key_id))))
        return _stored(key_id, fields) if fields else None

    def list(self, tenant_id: str, *, include_revoked: bool) -> list[StoredKey]:
        def read() -> tuple[list[str], list[Any]]:
            key_ids = cast(list[str], self._redis.zrange(_INDEX, 0, -1))
            pipe = self._redis.pipeline(transaction=False)
            for key_id in key_ids:
                pipe.hgetall(_key_name(key_id))
            return key_ids, pipe.execute()

        key_ids, rows = self._call(read)
        found = [_stored(key_id, fields) for key_id, fields in zip(key_ids, rows, strict=True) if fields]
        return [
            s
            for s in found
            if (not tenant_id or s.key.tenant_id == tenant_id) and (include_revoked or s.key.revoked_at is None)
        ]

    def revoke(self, key_id: str, at: float) -> ApiKey | None:
        flat = self._call(lambda: self._revoke(keys=[_key_name(key_id)], args=[repr(at)]))
        return _stored(key_id, dict(zip(flat[::2], flat[1::2], strict=True))).key if flat else None

    def _call(self, action: Callable[[], T]) -> T:
        if time.monotonic() < self._unreachable_until:
            raise errors.Unavailable("API key store unavailable")
        try:
            return action()
        except (RedisConnectionError, RedisTimeoutError) as error:
            self._unreachable_until = time.monotonic() + self.backoff_s
            log.warning("API key store unreachable, answering UNAVAILABLE for %.1f s: %s", self.backoff_s, error)
            raise errors.Unavailable("API key store unavailable") from error
        except RedisError as error:
            raise errors.Unavailable("API key store unavailable") from error


def _stored(key_id: str, fields: dict[str, str]) -> StoredKey:
    revoked_at = fields.get("revoked_at", "")
    key = ApiKey(
        key_id,
        fields["tenant_id"],
        Role(fields["role"]),
        fields.get("name", ""),
        fields["prefix"],
        float(fields["created_at"]),
        float(revoked_at) if revoked_at else None,
    )
    return StoredKey(key, bytes.fromhex(fields["sha256"]))


def copy_keys(source: KeyStorage, target: KeyStorage) -> int:
    """Copies the keys `target` does not know yet (revoked ones stay revoked); returns how many."""
    copied = sum(target.insert(stored) for stored in source.list("", include_revoked=True))
    if copied:
        log.info("copied %d API keys from the local key store into the shared one", copied)
    return copied
