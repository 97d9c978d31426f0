"""`inkloop keys …` against the store the gateway uses (Redis from the same environment), and key-file lines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from inkloop import errors
from inkloop_cli.keys import app
from inkloop_gateway.admission.keys import KeyStore, Role, hash_secret, key_id_of
from inkloop_gateway.admission.keys_file import KeyFile, parse_keys
from inkloop_gateway.admission.keys_redis import RedisKeyStorage


@pytest.fixture
def env(redis_url: str, tmp_path: Path) -> dict[str, str]:
    """What a gateway pod's environment gives the CLI."""
    return {"INKLOOP_GATEWAY_REDIS_URL": redis_url, "INKLOOP_GATEWAY_DATA_DIR": str(tmp_path / "data")}


def run(*args: str, env: dict[str, str], stdin: str | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args), env=env, input=stdin)
    return result.exit_code, result.stdout, result.stderr


def test_create_list_revoke_go_to_the_gateways_redis(env: dict[str, str], redis_url: str, tmp_path: Path) -> None:
    code, out, _ = run("create", "acme", "--role", "analyst", "--name", "ci", "--json", env=env)
    assert code == 0
    created = json.loads(out)
    gateway = KeyStore(RedisKeyStorage(redis_url), cache_ttl_s=0)  # a replica, not the CLI's store
    assert gateway.authenticate(created["secret"]).role == Role.ANALYST
    assert not (tmp_path / "data" / "keys.db").exists()  # nothing went to SQLite
    code, out, _ = run("list", "--json", env=env)
    assert [(k["key_id"], k["name"], k["source"]) for k in json.loads(out)] == [(created["key_id"], "ci", "store")]
    code, _, err = run("revoke", created["key_id"], env=env)
    assert code == 0 and f"revoked {created['key_id']}" in err
    with pytest.raises(errors.Unauthenticated):
        gateway.authenticate(created["secret"])


def test_without_redis_the_data_dir_sqlite_store_is_used(tmp_path: Path) -> None:
    code, out, _ = run("create", "acme", "--data-dir", str(tmp_path), env={"INKLOOP_GATEWAY_REDIS_URL": ""})
    assert code == 0
    assert KeyStore(tmp_path / "keys.db").authenticate(out.strip()).tenant_id == "acme"


def test_errors_exit_non_zero_with_their_status(env: dict[str, str]) -> None:
    code, _, err = run("revoke", "nosuchkey123", env=env)
    assert code == 1 and "NOT_FOUND" in err
    code, _, err = run("create", "acme", "--role", "root", env=env)
    assert code == 1 and "INVALID_ARGUMENT" in err and "role" in err
    code, _, err = run("create", "Acme Corp", env=env)
    assert code == 1 and "tenant_id" in err


def test_hash_prints_the_line_on_stdout_and_the_secret_only_on_stderr(env: dict[str, str], tmp_path: Path) -> None:
    code, out, err = run("hash", "globex", "--role", "admin", "--name", "ops", env=env)
    assert code == 0
    [secret] = [word for word in err.split() if key_id_of(word)]
    assert secret not in out and secret[17:] not in out
    path = tmp_path / "api-key-hashes.txt"
    path.write_text(out)
    store = KeyStore(tmp_path / "keys.db", key_file=KeyFile(path))
    assert (store.authenticate(secret).tenant_id, store.authenticate(secret).role) == ("globex", Role.ADMIN)
    code, listed, _ = run("list", "--json", env={**env, "INKLOOP_GATEWAY_API_KEYS_FILE": str(path)})
    assert [(k["tenant_id"], k["source"]) for k in json.loads(listed)] == [("globex", "file")]


def test_hash_of_a_given_secret_and_bad_input(env: dict[str, str]) -> None:
    _, out, _ = run("create", "acme", "--json", env=env)
    secret = json.loads(out)["secret"]
    code, line, err = run("hash", "acme", "--secret-stdin", env=env, stdin=secret + "\n")
    assert code == 0 and secret not in err
    [stored] = parse_keys(line)[0].values()
    assert stored.secret_hash == hash_secret(secret)
    code, _, err = run("hash", "acme", "--secret-stdin", env=env, stdin="hunter2\n")
    assert code == 1 and "not an inkloop secret" in err


def test_export_writes_the_lines_of_the_active_keys(env: dict[str, str], tmp_path: Path) -> None:
    secrets = [json.loads(run("create", tenant, "--json", env=env)[1])["secret"] for tenant in ("acme", "globex")]
    revoked = json.loads(run("create", "acme", "--json", env=env)[1])
    run("revoke", revoked["key_id"], env=env)
    code, out, _ = run("export", env=env)
    keys, problems = parse_keys(out)
    assert code == 0 and problems == []
    assert sorted(keys) == sorted(key_id_of(s) for s in secrets)
    assert all(secret not in out for secret in secrets)
    path = tmp_path / "exported.txt"
    path.write_text(out)
    store = KeyStore(tmp_path / "keys.db", key_file=KeyFile(path))
    assert [store.authenticate(s).tenant_id for s in secrets] == ["acme", "globex"]
