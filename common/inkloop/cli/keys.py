"""`inkloop keys create|list|revoke`: manage the API keys in a gateway's local key store."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from inkloop.cli.client import console

if TYPE_CHECKING:
    from inkloop_gateway.keys import KeyStore

app = typer.Typer(help="Manage API keys in the gateway's key store (its data dir).", no_args_is_help=True)

_DATA_DIR = typer.Option(Path("var/gateway"), "--data-dir", help="The gateway's data dir.")
_JSON = typer.Option(False, "--json", help="Print JSON instead of a table.")


def _store(data_dir: Path) -> KeyStore:
    from inkloop_gateway.keys import KeyStore
    from inkloop_gateway.settings import GatewaySettings

    return KeyStore(GatewaySettings(data_dir=data_dir).keys_db_path())


@app.command("create")
def create(
    tenant: str = typer.Argument(..., help="Tenant id (a-z, 0-9, '_', '-')."),
    role: str = typer.Option("user", help="user, analyst or admin."),
    name: str = typer.Option("", help="Label."),
    data_dir: Path = _DATA_DIR,
    as_json: bool = _JSON,
) -> None:
    """Create a key; its secret is printed once and stored only as a hash."""
    from inkloop import errors
    from inkloop_gateway.keys import Role

    try:
        key, secret = _store(data_dir).create(tenant, Role(role), name)
    except (ValueError, errors.InvalidArgument) as error:
        console.print(f"[red]error: INVALID_ARGUMENT: {error}[/]")
        raise typer.Exit(1) from None
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
    as_json: bool = _JSON,
) -> None:
    """List keys (never their secrets)."""
    keys = _store(data_dir).list(tenant, include_revoked=include_revoked)
    if as_json:
        print(
            json.dumps(
                [
                    {
                        "key_id": k.key_id,
                        "tenant_id": k.tenant_id,
                        "role": k.role,
                        "name": k.name,
                        "prefix": k.prefix,
                        "revoked": k.revoked_at is not None,
                    }
                    for k in keys
                ]
            )
        )
        return
    table = Table("key id", "tenant", "role", "name", "prefix", "revoked")
    for k in keys:
        table.add_row(k.key_id, k.tenant_id, k.role, k.name, k.prefix, "yes" if k.revoked_at else "")
    console.print(table)


@app.command("revoke")
def revoke(key_id: str = typer.Argument(..., help="The key id (not the secret)."), data_dir: Path = _DATA_DIR) -> None:
    """Revoke a key: calls with it fail with UNAUTHENTICATED from then on."""
    from inkloop import errors

    try:
        key = _store(data_dir).revoke(key_id)
    except errors.NotFound as error:
        console.print(f"[red]error: NOT_FOUND: {error}[/]")
        raise typer.Exit(1) from None
    console.print(f"revoked {key.key_id} of tenant {key.tenant_id}")
