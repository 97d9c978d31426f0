"""gRPC glue of the gateway: translates calls to domain objects and back. No logic lives here."""

from __future__ import annotations

from collections.abc import Sequence

import grpc

from inkloop.v1 import gateway_pb2_grpc
from inkloop_gateway.http import HttpServer
from inkloop_gateway.settings import GatewaySettings


class GatewayServicer(gateway_pb2_grpc.GatewayServiceServicer):
    """Jobs API. Every method still answers UNIMPLEMENTED (the base class) until the job system lands."""


class AdminServicer(gateway_pb2_grpc.AdminServiceServicer):
    """Key and variant management. Every method still answers UNIMPLEMENTED until the key RPCs land."""


class GatewayApp:
    service_names: Sequence[str] = ("inkloop.v1.GatewayService", "inkloop.v1.AdminService")
    interceptors: Sequence[grpc.aio.ServerInterceptor] = ()

    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self.ready = False
        self.http = HttpServer(settings.host, settings.http_port, lambda: self.ready)

    def register(self, server: grpc.aio.Server) -> None:
        gateway_pb2_grpc.add_GatewayServiceServicer_to_server(GatewayServicer(), server)
        gateway_pb2_grpc.add_AdminServiceServicer_to_server(AdminServicer(), server)

    async def start(self) -> None:
        await self.http.start()
        self.ready = True

    async def stop(self) -> None:
        self.ready = False
        await self.http.stop()
