"""`inkloop keys …`: API keys in a gateway's key store, and lines for its read-only key file.

`create`, `list`, `revoke` and `export` open the store the gateway itself uses: Redis when
`--redis-url` / `INKLOOP_GATEWAY_REDIS_URL` is set (shared by every replica), else SQLite in the data
dir; `list` also shows the keys of `INKLOOP_GATEWAY_API_KEYS_FILE`. `hash` needs no store: it prints
the key-file line of a new (or given) secret on stdout and the secret itself on stderr, so
`inkloop keys hash acme --role user >> api-key-hashes.txt` never writes the secret to the file.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from inkloop_cli.client import console

if TYPE_CHECKING:
    from inkloop_gateway.admission.keys import KeyStore, Role

app = typer.Typer(help="Manage API keys in the gateway's key store (Redis or its data dir).", no_args_is_help=True)

_DATA_DIR = typer.Option(
    Path("var/gateway"), "--data-dir", envvar="INKLOOP_GATEWAY_DATA_DIR", help="The gateway's data dir (SQLite store)."
)
_REDIS_URL = typer.Option(
    "", "--redis-url", envvar="INKLOOP_GATEWAY_REDIS_URL", help="The gateway's Redis; empty = SQLite in the data dir."
)
_JSON = typer.Option(False, "--json", help="Print JSON instead of a table.")


@contextmanager
def _reported() -> Iterator[None]:
    """Domain errors end the command with their status name and message, like a failed call."""
    from inkloop import errors
    from inkloop.rpc.status import code_for

    try:
        yield
    except errors.InkloopError as error:
        console.print(f"[red]error: {code_for(error).name}: {error}[/]", highlight=False)
        raise typer.Exit(1) from None


@contextmanager
def _store(data_dir: Path, redis_url: str) -> Iterator[KeyStore]:
    """The gateway's key store, from the same settings (and other INKLOOP_GATEWAY_* variables) as the gateway."""
    from inkloop_gateway.admission.keys import key_store_from_settings
    from inkloop_gateway.settings import GatewaySettings

    with _reported():
        store = key_store_from_settings(GatewaySettings(data_dir=data_dir, redis_url=redis_url))
        try:
            yield store
        finally:
            store.close()


def _role(value: str) -> Role:
    from inkloop import errors
    from inkloop_gateway.admission.keys import Role

    try:
        return Role(value)
    except ValueError:
        raise errors.InvalidArgument("role", f"must be one of {', '.join(Role)}") from None


@app.command("create")
def create(
    tenant: str = typer.Argument(..., help="Tenant id (a-z, 0-9, '_', '-')."),
    role: str = typer.Option("user", help="user, analyst or admin."),
    name: str = typer.Option("", help="Label."),
    data_dir: Path = _DATA_DIR,
    redis_url: str = _REDIS_URL,
    as_json: bool = _JSON,
) -> None:
    """Create a key; its secret is printed once and stored only as a hash."""
    with _store(data_dir, redis_url) as store:
        key, secret = store.create(tenant, _role(role), name)
    if as_json:
        print(json.dumps({"key_id": key.key_id, "tenant_id": key.tenant_id, "role": key.role, "secret": secret}))
    else:
        print(secret)
        console.print(f"key {key.key_id} for tenant {key.tenant_id} ({key.role}); the secret is not shown again")


@app.command("list")
def list_keys(
    tenant: str = typer.Option("", help="Only this tenant."),
    include_revoked: bool = typer.Option(False, help="Include revoked keys."),
    data_dir: Path = _DATA_DIR,
    redis_url: str = _REDIS_URL,
    as_json: bool = _JSON,
) -> None:
    """List keys (never their secrets): the store's, then the key file's."""
    with _store(data_dir, redis_url) as store:
        keys = store.list(tenant, include_revoked=include_revoked)
    rows = [
        {
            "key_id": k.key_id,
            "tenant_id": k.tenant_id,
            "role": k.role,
            "name": k.name,
            "prefix": k.prefix,
            "revoked": k.revoked_at is not None,
            "source": "file" if k.from_key_file else "store",
        }
        for k in keys
    ]
    if as_json:
        print(json.dumps(rows))
        return
    table = Table("key id", "tenant", "role", "name", "prefix", "revoked", "source")
    for row in rows:
        revoked = "yes" if row["revoked"] else ""
        table.add_row(
            *(str(row[c]) for c in ("key_id", "tenant_id", "role", "name", "prefix")), revoked, str(row["source"])
        )
    console.print(table)


@app.command("revoke")
def revoke(
    key_id: str = typer.Argument(..., help="The key id (not the secret)."),
    data_dir: Path = _DATA_DIR,
    redis_url: str = _REDIS_URL,
) -> None:
    """Revoke a key: calls with it fail with UNAUTHENTICATED from then on (every replica within a second)."""
    with _store(data_dir, redis_url) as store:
        key = store.revoke(key_id)
    console.print(f"revoked {key.key_id} of tenant {key.tenant_id}")


@app.command("hash")
def hash_key(
    tenant: str = typer.Argument(..., help="Tenant id (a-z, 0-9, '_', '-')."),
    role: str = typer.Option("user", help="user, analyst or admin."),
    name: str = typer.Option("", help="Label."),
    secret_stdin: bool = typer.Option(False, "--secret-stdin", help="Hash the secret read from stdin, not a new one."),
) -> None:
    """Print the key-file line of a new secret (stdout); the secret goes to stderr, shown once."""
    import time

    from inkloop import errors
    from inkloop_gateway.admission.keys import (
        ApiKey,
        StoredKey,
        check_tenant_id,
        hash_secret,
        key_id_of,
        new_secret,
        prefix_of,
    )
    from inkloop_gateway.admission.keys_file import key_line

    with _reported():
        role_ = _role(role)
        check_tenant_id(tenant)
        if secret_stdin:
            secret = sys.stdin.readline().strip()
            key_id = key_id_of(secret)
            if key_id is None:
                raise errors.InvalidArgument("secret", "not an inkloop secret (ink_<12 letters or digits>_<43 more>)")
        else:
            key_id, secret = new_secret()
    key = ApiKey(key_id, tenant, role_, name, prefix_of(key_id), time.time())
    print(key_line(StoredKey(key, hash_secret(secret))))
    if not secret_stdin:
        console.print(f"secret of key {key_id} (give it to the client; it is not shown again):", highlight=False)
        print(secret, file=sys.stderr)


@app.command("export")
def export(
    tenant: str = typer.Option("", help="Only this tenant."),
    data_dir: Path = _DATA_DIR,
    redis_url: str = _REDIS_URL,
) -> None:
    """Print the key-file lines of the store's active keys (hashes only), to move them into the key file."""
    from inkloop_gateway.admission.keys_file import key_line

    with _store(data_dir, redis_url) as store:
        for stored in store.storage.list(tenant, include_revoked=False):
            print(key_line(stored))
