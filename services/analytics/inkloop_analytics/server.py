"""gRPC glue of the analytics service: translates calls to domain objects and back. No logic lives here."""

from __future__ import annotations

from collections.abc import Sequence

import grpc

from inkloop.v1 import analytics_pb2_grpc
from inkloop_analytics.settings import AnalyticsSettings


class AnalyticsServicer(analytics_pb2_grpc.AnalyticsServiceServicer):
    """Every method still answers UNIMPLEMENTED (the base class) until ingest and queries land."""


class AnalyticsApp:
    service_names: Sequence[str] = ("inkloop.v1.AnalyticsService",)

    def __init__(self, settings: AnalyticsSettings) -> None:
        self.settings = settings

    def register(self, server: grpc.aio.Server) -> None:
        analytics_pb2_grpc.add_AnalyticsServiceServicer_to_server(AnalyticsServicer(), server)

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass
