"""The read-only key file: its format, bad lines, reloads (kubelet's symlink swap included), and how its
keys join the key store's."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import pytest

from inkloop import errors
from inkloop_gateway.admission.keys import (
    ApiKey,
    KeyStore,
    Role,
    StoredKey,
    hash_secret,
    key_id_of,
    new_secret,
    prefix_of,
)
from inkloop_gateway.admission.keys_file import KeyFile, key_line, parse_keys

ROOT = Path(__file__).resolve().parents[2]
#: The development key of k8s/overlays/dev (documented there and in docs/deploy.md; never for real use).
DEV_OVERLAY_SECRET = "ink_devonlyadmin_dev-only-not-a-secret-never-use-outside-dev"


def line_for(tenant: str, role: Role, name: str = "") -> tuple[str, str]:
    """(a key-file line, its secret), as `inkloop keys hash` makes them."""
    key_id, secret = new_secret()
    key = ApiKey(key_id, tenant, role, name, prefix_of(key_id), 1_700_000_000.0)
    return key_line(StoredKey(key, hash_secret(secret))), secret


def test_a_line_round_trips_without_the_secret() -> None:
    line, secret = line_for("acme", Role.ANALYST, "batch jobs")
    assert secret not in line and secret[17:] not in line
    keys, problems = parse_keys(f"# a comment\n\n{line}\n")
    assert problems == []
    [stored] = keys.values()
    assert (stored.key.key_id, stored.key.tenant_id, stored.key.role, stored.key.name) == (
        key_id_of(secret),
        "acme",
        Role.ANALYST,
        "batch jobs",
    )
    assert stored.secret_hash == hash_secret(secret) and stored.key.created_at == 1_700_000_000.0


def test_bad_lines_are_reported_by_number_and_skipped() -> None:
    good, _ = line_for("acme", Role.USER)
    entry = json.loads(good)
    text = "\n".join(
        [
            good,  # 1
            "{not json",  # 2
            json.dumps({**entry, "role": "root"}),  # 3
            json.dumps({k: v for k, v in entry.items() if k != "sha256"}),  # 4
            json.dumps({**entry, "key_id": "short"}),  # 5
            json.dumps({**entry, "sha256": "ab" * 31}),  # 6
            json.dumps({**entry, "tenant": "acme"}),  # 7
            good,  # 8: duplicate
            "[1, 2]",  # 9
            json.dumps({**entry, "role": ["admin"]}),  # 10
        ]
    )
    keys, problems = parse_keys(text)
    assert list(keys) == [entry["key_id"]]
    assert [p.split(":")[0] for p in problems] == [f"line {n}" for n in range(2, 11)]
    assert "role must be one of user, analyst, admin" in problems[1]
    assert "missing sha256" in problems[2]
    assert "unknown tenant" in problems[5]
    assert "already on line 1" in problems[6]


def test_a_pasted_secret_is_refused_without_being_repeated() -> None:
    _, secret = line_for("acme", Role.USER)
    keys, problems = parse_keys(secret)
    assert keys == {}
    assert "this is a secret, not its hash" in problems[0] and secret not in problems[0]


def test_the_dev_overlay_file_is_valid_and_holds_the_documented_dev_key() -> None:
    text = (ROOT / "k8s/overlays/dev/api-key-hashes.txt").read_text(encoding="utf-8")
    keys, problems = parse_keys(text)
    assert problems == []
    stored = keys[key_id_of(DEV_OVERLAY_SECRET) or ""]
    assert stored.secret_hash == hash_secret(DEV_OVERLAY_SECRET) and stored.key.role == Role.ADMIN
    assert DEV_OVERLAY_SECRET not in text
    assert DEV_OVERLAY_SECRET in (ROOT / "docs/deploy.md").read_text(encoding="utf-8")


def test_file_keys_authenticate_besides_the_store_and_are_listed(tmp_path: Path) -> None:
    line, secret = line_for("globex", Role.ANALYST, "from the secret")
    path = tmp_path / "api-key-hashes.txt"
    path.write_text(line + "\n")
    store = KeyStore(tmp_path / "keys.db", key_file=KeyFile(path))
    _key, store_secret = store.create("acme", Role.USER)
    found = store.authenticate(secret)
    assert (found.tenant_id, found.role, found.name) == ("globex", Role.ANALYST, "from the secret")
    assert store.authenticate(store_secret).tenant_id == "acme"
    assert [k.tenant_id for k in store.list()] == ["acme", "globex"]
    assert [k.key_id for k in store.list("globex")] == [found.key_id]
    with pytest.raises(errors.Unauthenticated):
        store.authenticate(secret[:-1] + ("A" if secret[-1] != "A" else "B"))


def test_file_keys_cannot_be_revoked_through_the_store(tmp_path: Path) -> None:
    line, secret = line_for("acme", Role.USER)
    path = tmp_path / "keys.jsonl"
    path.write_text(line)
    store = KeyStore(tmp_path / "keys.db", key_file=KeyFile(path))
    with pytest.raises(errors.FailedPrecondition, match="remove its line"):
        store.revoke(key_id_of(secret) or "")
    assert store.authenticate(secret).tenant_id == "acme"


def test_a_changed_file_is_picked_up_and_a_removed_line_stops_working(tmp_path: Path) -> None:
    first, first_secret = line_for("acme", Role.USER)
    second, second_secret = line_for("acme", Role.ADMIN)
    path = tmp_path / "keys.jsonl"
    path.write_text(first + "\n")
    store = KeyStore(tmp_path / "keys.db", key_file=KeyFile(path, check_interval_s=0.1))
    store.authenticate(first_secret)
    path.write_text(second + "\n")
    time.sleep(0.15)
    assert store.authenticate(second_secret).role == Role.ADMIN
    with pytest.raises(errors.Unauthenticated):
        store.authenticate(first_secret)


def test_kubelet_symlink_swap_is_picked_up(tmp_path: Path) -> None:
    """A Secret volume: `key` -> `..data/key`, `..data` -> `..<timestamp>/`; an update swaps `..data`."""
    mount = tmp_path / "api-keys"
    mount.mkdir()
    first, first_secret = line_for("acme", Role.USER)
    second, second_secret = line_for("globex", Role.USER)
    (mount / "..2024_01").mkdir()
    (mount / "..2024_01" / "api-key-hashes.txt").write_text(first + "\n")
    os.symlink("..2024_01", mount / "..data")
    os.symlink("..data/api-key-hashes.txt", mount / "api-key-hashes.txt")
    key_file = KeyFile(mount / "api-key-hashes.txt", check_interval_s=0)
    store = KeyStore(tmp_path / "keys.db", key_file=key_file)
    assert store.authenticate(first_secret).tenant_id == "acme"
    (mount / "..2024_02").mkdir()
    (mount / "..2024_02" / "api-key-hashes.txt").write_text(second + "\n")
    os.symlink("..2024_02", mount / "..data_tmp")
    os.replace(mount / "..data_tmp", mount / "..data")  # atomic, as kubelet does
    assert store.authenticate(second_secret).tenant_id == "globex"
    with pytest.raises(errors.Unauthenticated):
        store.authenticate(first_secret)


def test_bad_lines_are_logged_and_the_good_ones_still_work(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    good, secret = line_for("acme", Role.USER)
    path = tmp_path / "keys.jsonl"
    path.write_text(f'{good}\n{{"key_id": 1}}\n')
    with caplog.at_level(logging.ERROR, logger="inkloop_gateway.admission.keys_file"):
        key_file = KeyFile(path)
    assert any(f"{path}, line 2:" in r.getMessage() and "line skipped" in r.getMessage() for r in caplog.records)
    assert key_file.problems and key_file.problems[0].startswith("line 2: missing tenant_id, role, sha256")
    assert KeyStore(tmp_path / "keys.db", key_file=key_file).authenticate(secret).tenant_id == "acme"


def test_a_missing_file_means_no_keys_and_is_logged_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    line, secret = line_for("acme", Role.USER)
    path = tmp_path / "keys.jsonl"
    path.write_text(line)
    key_file = KeyFile(path, check_interval_s=0)
    store = KeyStore(tmp_path / "keys.db", key_file=key_file)
    store.authenticate(secret)
    path.unlink()
    with caplog.at_level(logging.ERROR, logger="inkloop_gateway.admission.keys_file"):
        for _ in range(3):
            with pytest.raises(errors.Unauthenticated):
                store.authenticate(secret)
    assert [r.getMessage() for r in caplog.records] == [
        f"API key file {path} not found: no keys from it until it appears"
    ]
    path.write_text(line)
    assert store.authenticate(secret).tenant_id == "acme"


def test_an_unreadable_file_keeps_the_keys_read_before(tmp_path: Path) -> None:
    line, secret = line_for("acme", Role.USER)
    path = tmp_path / "keys.jsonl"
    path.write_text(line)
    key_file = KeyFile(path, check_interval_s=0)
    path.write_bytes(b"\xff\xfe not utf-8")
    key_file.refresh()
    assert key_file.find(key_id_of(secret) or "") is not None
