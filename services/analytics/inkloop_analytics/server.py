"""gRPC glue of the analytics service: translates calls to domain objects and back. No logic lives here."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import grpc

from inkloop.v1 import analytics_pb2_grpc
from inkloop_analytics.migrations import migrate
from inkloop_analytics.settings import AnalyticsSettings
from inkloop_analytics.storage import ClickHouse, connect

log = logging.getLogger(__name__)


class AnalyticsServicer(analytics_pb2_grpc.AnalyticsServiceServicer):
    """Every method still answers UNIMPLEMENTED (the base class) until ingest and queries land."""


class AnalyticsApp:
    service_names: Sequence[str] = ("inkloop.v1.AnalyticsService",)
    interceptors: Sequence[grpc.aio.ServerInterceptor] = ()

    def __init__(self, settings: AnalyticsSettings) -> None:
        self.settings = settings
        self.storage: ClickHouse | None = None

    def register(self, server: grpc.aio.Server) -> None:
        analytics_pb2_grpc.add_AnalyticsServiceServicer_to_server(AnalyticsServicer(), server)

    async def start(self) -> None:
        url = self.settings.resolved_clickhouse_url()
        if url.startswith("chdb://"):
            (self.settings.data_dir / "clickhouse").mkdir(parents=True, exist_ok=True)
        self.storage = await asyncio.to_thread(connect, url)
        applied = await asyncio.to_thread(migrate, self.storage)
        log.info("schema ready", extra={"applied_migrations": applied})

    async def stop(self) -> None:
        if self.storage is not None:
            self.storage.close()
