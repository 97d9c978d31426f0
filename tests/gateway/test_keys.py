"""API keys on the SQLite storage: hashes only on disk, revocation by another process, the development key.

The rules every storage keeps (authentication, revocation, listing, tenant ids) are tested on SQLite and
Redis alike in test_keys_storage.py."""

from __future__ import annotations

import stat
import time
from pathlib import Path

import pytest

from inkloop import errors
from inkloop_gateway.admission.keys import KeyStore, Role, ensure_dev_key


@pytest.fixture
def store(tmp_path: Path) -> KeyStore:
    return KeyStore(tmp_path / "keys.db")


def test_only_the_hash_is_stored(store: KeyStore, tmp_path: Path) -> None:
    _key, secret = store.create("acme", Role.USER)
    store.close()
    stored = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("keys.db"))
    assert secret.encode() not in stored
    assert secret[17:].encode() not in stored


def test_revocation_by_another_process_takes_effect_within_the_cache_ttl(tmp_path: Path) -> None:
    gateway = KeyStore(tmp_path / "keys.db", cache_ttl_s=0.2)
    cli = KeyStore(tmp_path / "keys.db")  # `inkloop keys revoke` opens the same file
    key, secret = gateway.create("acme", Role.USER)
    gateway.authenticate(secret)
    cli.revoke(key.key_id)
    gateway.authenticate(secret)  # still cached: the documented bound, not instant
    time.sleep(0.25)
    with pytest.raises(errors.Unauthenticated):
        gateway.authenticate(secret)


def test_a_cached_key_is_not_shared_with_a_wrong_secret(store: KeyStore) -> None:
    _key, secret = store.create("acme", Role.USER)
    store.authenticate(secret)
    with pytest.raises(errors.Unauthenticated):
        store.authenticate(secret[:-1] + ("A" if secret[-1] != "A" else "B"))


def test_roles_are_ordered() -> None:
    assert Role.ADMIN.allows(Role.ANALYST) and Role.ANALYST.allows(Role.USER)
    assert not Role.USER.allows(Role.ANALYST)


def test_dev_key_is_created_once_and_private(store: KeyStore, tmp_path: Path) -> None:
    secret, created = ensure_dev_key(store, tmp_path)
    again, created_again = ensure_dev_key(store, tmp_path)
    assert created and not created_again and again == secret
    key_file = tmp_path / "dev-api-key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert store.authenticate(secret).role == Role.ADMIN


def test_dev_key_is_replaced_when_revoked(store: KeyStore, tmp_path: Path) -> None:
    secret, _ = ensure_dev_key(store, tmp_path)
    store.revoke(store.authenticate(secret).key_id)
    replacement, created = ensure_dev_key(store, tmp_path)
    assert created and replacement != secret
