"""How CLI commands reach the gateway: address and API key from INKLOOP_* variables or the dev key file."""

from __future__ import annotations

from pathlib import Path

import grpc
import typer
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from rich.console import Console

from inkloop.rpc.status import field_violations, retry_delay_s

console = Console(stderr=True)


class ClientSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="INKLOOP_")

    gateway: str = Field("127.0.0.1:50051", description="Gateway gRPC address.")
    api_key: str = Field("", description="API key; empty = the development key in DATA_DIR/dev-api-key.")
    data_dir: Path = Field(Path("var"), description="Where `inkloop up` keeps its state.")

    def resolved_api_key(self) -> str:
        if self.api_key:
            return self.api_key
        key_file = self.data_dir / "dev-api-key"
        if key_file.exists():
            return key_file.read_text().strip()
        console.print(f"[red]no API key: set INKLOOP_API_KEY or run `inkloop up` to create {key_file}[/]")
        raise typer.Exit(2)

    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.resolved_api_key()}"),)


def fail(error: grpc.RpcError) -> typer.Exit:
    """Prints a failed call's status, the fields at fault and the retry delay; returns the exit to raise."""
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    details = error.details() if hasattr(error, "details") else str(error)
    console.print(f"[red]error: {code.name}: {details}[/]")
    for field, description in field_violations(error):
        console.print(f"  field [bold]{field}[/]: {description}")
    delay = retry_delay_s(error)
    if delay is not None:
        console.print(f"  retry after {delay:.1f} s")
    return typer.Exit(1)
