"""Settings of the gateway (flags, or INKLOOP_GATEWAY_* environment variables)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from inkloop.config import ServiceSettings


class GatewaySettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="INKLOOP_GATEWAY_")

    port: int = Field(50051, ge=0, le=65535, description="gRPC port clients call.")
    metrics_port: int = Field(9091, ge=0, le=65535, description="Prometheus /metrics port.")
    http_port: int = Field(8080, ge=0, le=65535, description="HTTP port: web page, downloads, browser events.")
    inference_target: str = Field(
        "127.0.0.1:50052", description="Inference service: host:port or dns:///headless-service:port."
    )
    analytics_target: str = Field("127.0.0.1:50053", description="Analytics service address.")

    def keys_db_path(self) -> Path:
        return self.data_dir / "keys.db"
