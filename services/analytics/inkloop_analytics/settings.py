"""Settings of the analytics service (flags, or INKLOOP_ANALYTICS_* environment variables)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from inkloop.config import ServiceSettings


class AnalyticsSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="INKLOOP_ANALYTICS_")

    port: int = Field(50053, ge=0, le=65535, description="gRPC port.")
    metrics_port: int = Field(9093, ge=0, le=65535, description="Prometheus /metrics port.")
    clickhouse_url: str = Field(
        "",
        description="clickhouse://user:password@host:9000/db (server) or chdb://PATH (embedded); "
        "empty = chdb://<data-dir>/clickhouse.",
    )

    def resolved_clickhouse_url(self) -> str:
        return self.clickhouse_url or f"chdb://{(self.data_dir / 'clickhouse').resolve()}"
