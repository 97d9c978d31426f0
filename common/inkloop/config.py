"""Settings shared by every service: one typed object per service, from flags and environment.

Each service subclasses `ServiceSettings` with its own env prefix (`INKLOOP_INFERENCE_`,
`INKLOOP_GATEWAY_`, `INKLOOP_ANALYTICS_`), so one environment can configure all three without
clashes; flags are the field names in kebab case (`--metrics-port`). Flags beat environment beats
defaults. Settings are validated once, at start.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal, Self

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(
        cli_kebab_case=True,
        cli_implicit_flags=True,
        extra="forbid",
    )

    host: str = Field("127.0.0.1", description="Interface the gRPC server binds; 0.0.0.0 in containers.")
    port: int = Field(0, ge=0, le=65535, description="gRPC port (0 = any free port).")
    metrics_port: int = Field(
        0, ge=0, le=65535, description="Prometheus /metrics port (0 = any free port, -1 not allowed)."
    )
    data_dir: Path = Field(Path("var"), description="Directory for this service's durable state.")
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="Log level.")
    log_format: Literal["json", "text"] = Field("json", description="json for machines, text for people.")
    drain_seconds: float = Field(
        10.0, ge=0, description="On SIGTERM: health goes NOT_SERVING, then in-flight calls get this long."
    )
    reflection: bool = Field(True, description="Serve gRPC server reflection (for grpcurl).")
    max_connection_age_s: float = Field(
        0,
        ge=0,
        description="Close client connections after this long (0 = never), so clients re-resolve DNS and "
        "spread over new pods; in-flight calls get max_connection_age_grace_s to finish.",
    )
    max_connection_age_grace_s: float = Field(
        0, ge=0, description="Grace for calls still running when a connection reaches its maximum age (0 = none)."
    )
    tls_cert_file: Path | None = Field(None, description="PEM certificate: serve TLS (with tls_key_file).")
    tls_key_file: Path | None = Field(None, description="PEM private key of tls_cert_file.")
    tls_client_ca_file: Path | None = Field(
        None, description="PEM CA bundle: require client certificates signed by it (mTLS)."
    )
    otlp_endpoint: str = Field(
        "", description="OpenTelemetry collector (OTLP/gRPC, e.g. http://otel-collector:4317) for traces; empty = off."
    )

    @classmethod
    def from_args(cls, argv: Sequence[str] | None, *, prog: str) -> Self:
        """Builds the settings from command-line flags (None = environment and defaults only)."""
        if argv is None:
            return cls()
        return cls(_cli_parse_args=list(argv), _cli_prog_name=prog)
