"""The key store on both storages (SQLite file, real redis-server): the same rules, and Redis shared by replicas."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from harness.redis import RedisServer
from inkloop import errors
from inkloop_gateway.admission.keys import KeyStore, Role, SqliteKeyStorage, key_store_from_settings
from inkloop_gateway.admission.keys_redis import RedisKeyStorage
from inkloop_gateway.settings import GatewaySettings


@pytest.fixture(params=["sqlite", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[KeyStore]:
    if request.param == "sqlite":
        made = KeyStore(SqliteKeyStorage(tmp_path / "keys.db"))
    else:
        made = KeyStore(RedisKeyStorage(request.getfixturevalue("redis_url")))
    yield made
    made.close()


def replica(redis_url: str, cache_ttl_s: float = 1.0) -> KeyStore:
    """A gateway replica's key store: its own cache, the shared Redis."""
    return KeyStore(RedisKeyStorage(redis_url), cache_ttl_s=cache_ttl_s)


def test_created_key_authenticates_as_its_tenant_and_role(store: KeyStore) -> None:
    key, secret = store.create("acme", Role.ANALYST, "dashboards")
    found = store.authenticate(secret)
    assert (found.key_id, found.tenant_id, found.role, found.name) == (key.key_id, "acme", Role.ANALYST, "dashboards")
    assert secret.startswith(key.prefix) and len(key.prefix) == 12


@pytest.mark.parametrize("mangle", [lambda s: s[:-1] + ("A" if s[-1] != "A" else "B"), lambda s: "", lambda s: "x"])
def test_wrong_secrets_are_unauthenticated(store: KeyStore, mangle) -> None:
    _key, secret = store.create("acme", Role.USER)
    with pytest.raises(errors.Unauthenticated):
        store.authenticate(mangle(secret))


def test_unknown_key_id_is_unauthenticated(store: KeyStore) -> None:
    _key, secret = store.create("acme", Role.USER)
    with pytest.raises(errors.Unauthenticated):
        store.authenticate("ink_ZZZZZZZZZZZZ_" + secret[-43:])


def test_revoked_key_is_unauthenticated_and_listed_only_on_request(store: KeyStore) -> None:
    key, secret = store.create("acme", Role.USER)
    kept, _ = store.create("acme", Role.USER, "kept")
    store.authenticate(secret)  # cached: revoke must still end it at once on this store
    revoked = store.revoke(key.key_id)
    assert revoked.revoked_at is not None and revoked.key_id == key.key_id
    with pytest.raises(errors.Unauthenticated):
        store.authenticate(secret)
    assert [k.key_id for k in store.list("acme")] == [kept.key_id]
    assert [k.key_id for k in store.list("acme", include_revoked=True)] == [key.key_id, kept.key_id]


def test_a_second_revoke_keeps_the_first_time(store: KeyStore) -> None:
    key, _ = store.create("acme", Role.USER)
    first = store.revoke(key.key_id)
    time.sleep(0.01)
    assert store.revoke(key.key_id).revoked_at == first.revoked_at


def test_list_filters_by_tenant_in_creation_order(store: KeyStore) -> None:
    a1, _ = store.create("acme", Role.USER)
    g1, _ = store.create("globex", Role.ADMIN)
    a2, _ = store.create("acme", Role.ANALYST)
    assert [k.key_id for k in store.list("acme")] == [a1.key_id, a2.key_id]
    assert [k.key_id for k in store.list()] == [a1.key_id, g1.key_id, a2.key_id]
    assert store.list("globex")[0].role == Role.ADMIN


def test_revoking_an_unknown_key_is_not_found(store: KeyStore) -> None:
    with pytest.raises(errors.NotFound):
        store.revoke("nosuchkey123")


def test_bad_tenant_id_is_invalid(store: KeyStore) -> None:
    with pytest.raises(errors.InvalidArgument) as caught:
        store.create("Acme Corp", Role.USER)
    assert caught.value.violations[0].field == "tenant_id"
    assert store.list(include_revoked=True) == []


def test_redis_holds_only_the_hash(redis_url: str) -> None:
    store = replica(redis_url)
    _key, secret = store.create("acme", Role.USER)
    with redis.Redis.from_url(redis_url) as client:
        stored = b"".join(
            b"".join(k + v for k, v in client.hgetall(name).items()) if client.type(name) == b"hash" else b""
            for name in client.keys("*")
        )
    assert b"acme" in stored  # the dump did read the key's fields
    assert secret.encode() not in stored and secret[17:].encode() not in stored


def test_a_key_created_on_one_replica_authenticates_on_another_at_once(redis_url: str) -> None:
    a, b = replica(redis_url), replica(redis_url)
    key, secret = a.create("acme", Role.ANALYST)
    assert b.authenticate(secret).key_id == key.key_id
    assert [k.key_id for k in b.list("acme")] == [key.key_id]


def test_a_revocation_on_one_replica_is_refused_on_another_within_the_cache_ttl(redis_url: str) -> None:
    a, b = replica(redis_url, cache_ttl_s=0.3), replica(redis_url, cache_ttl_s=0.3)
    key, secret = a.create("acme", Role.USER)
    b.authenticate(secret)
    a.revoke(key.key_id)
    with pytest.raises(errors.Unauthenticated):
        a.authenticate(secret)  # the replica that revoked: at once
    assert b.authenticate(secret).key_id == key.key_id  # the other: still cached, the documented bound
    time.sleep(0.35)
    with pytest.raises(errors.Unauthenticated):
        b.authenticate(secret)
    assert b.list("acme", include_revoked=True)[0].revoked_at is not None


def test_with_no_cache_a_revocation_elsewhere_is_refused_on_the_next_call(redis_url: str) -> None:
    a, b = replica(redis_url), replica(redis_url, cache_ttl_s=0)
    key, secret = a.create("acme", Role.USER)
    b.authenticate(secret)
    a.revoke(key.key_id)
    with pytest.raises(errors.Unauthenticated):
        b.authenticate(secret)


def test_settings_pick_redis_and_bring_the_local_keys_along(redis_url: str, tmp_path: Path) -> None:
    local = KeyStore(tmp_path / "keys.db")
    _kept, kept_secret = local.create("acme", Role.ADMIN)
    gone, gone_secret = local.create("acme", Role.USER)
    local.revoke(gone.key_id)
    local.close()
    shared = key_store_from_settings(GatewaySettings(data_dir=tmp_path, redis_url=redis_url))
    assert isinstance(shared.storage, RedisKeyStorage)
    other_replica = replica(redis_url)
    assert other_replica.authenticate(kept_secret).role == Role.ADMIN
    with pytest.raises(errors.Unauthenticated):
        other_replica.authenticate(gone_secret)  # revoked stays revoked
    again = key_store_from_settings(GatewaySettings(data_dir=tmp_path, redis_url=redis_url))  # a restart
    assert len(again.list(include_revoked=True)) == 2
    plain = key_store_from_settings(GatewaySettings(data_dir=tmp_path / "solo"))
    assert isinstance(plain.storage, SqliteKeyStorage) and plain.cache_ttl_s == 1.0


def test_redis_outage_is_unavailable_and_cached_keys_keep_working(tmp_path: Path) -> None:
    with RedisServer(tmp_path) as server:  # a private server: stopping it disturbs no other test
        store = KeyStore(RedisKeyStorage(server.url, backoff_s=0.2), cache_ttl_s=60)
        _key, cached_secret = store.create("acme", Role.USER)
        _key, other_secret = store.create("acme", Role.USER)
        store.authenticate(cached_secret)
        server.stop()
        with pytest.raises(errors.Unavailable):
            store.authenticate(other_secret)
        assert store.authenticate(cached_secret).tenant_id == "acme"
        with pytest.raises(errors.Unavailable):
            store.create("acme", Role.USER)
        server.start()  # same port; the data is gone, as after a Redis restart without persistence
        time.sleep(0.25)
        with pytest.raises(errors.Unauthenticated):
            store.authenticate(other_secret)  # asked Redis again: a real answer, not UNAVAILABLE
        assert store.create("acme", Role.USER)[0].tenant_id == "acme"


def test_after_a_connection_failure_redis_is_not_asked_again_until_the_back_off_ends(tmp_path: Path) -> None:
    with RedisServer(tmp_path) as server:
        store = KeyStore(RedisKeyStorage(server.url, backoff_s=30))
        _key, secret = store.create("acme", Role.USER)
        server.stop()
        with pytest.raises(errors.Unavailable):
            store.authenticate(secret)
        server.start()
        with pytest.raises(errors.Unavailable):
            store.list()  # Redis answers again, but each call within the back-off fails at once
