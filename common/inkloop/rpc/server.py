"""Runs one service: a grpc.aio server with health, reflection, metrics and a graceful drain.

Life cycle, in order:
1. the port is bound and every service reports NOT_SERVING (so probes see "alive, not ready");
2. `app.start()` does the slow work (load the model, run migrations, warm up);
3. every service reports SERVING;
4. on SIGTERM or SIGINT: NOT_SERVING at once (load balancers stop sending), in-flight calls get
   `drain_seconds` to finish, then `app.stop()` releases resources.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Sequence
from typing import Protocol

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from opentelemetry.instrumentation.grpc import aio_server_interceptor

from inkloop.config import ServiceSettings
from inkloop.logs import configure_logging
from inkloop.metrics import SERVICE_READY, serve_metrics
from inkloop.rpc.interceptors import ServerInterceptor
from inkloop.tracing import configure_tracing

log = logging.getLogger("inkloop.server")

SERVER_OPTIONS: list[tuple[str, int]] = [
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
]


class App(Protocol):
    """What a service provides to the runner: its servicers and its start/stop work."""

    #: Full names of the gRPC services it serves, e.g. "inkloop.v1.InferenceService".
    service_names: Sequence[str]
    #: Interceptors run inside the common one (which maps their domain errors to statuses), e.g. auth.
    interceptors: Sequence[grpc.aio.ServerInterceptor]

    def register(self, server: grpc.aio.Server) -> None: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class RunningServer:
    """A started server, its bound port and its health servicer."""

    def __init__(
        self,
        server: grpc.aio.Server,
        port: int,
        health_servicer: health.aio.HealthServicer,
        service_names: Sequence[str],
    ) -> None:
        self.server = server
        self.port = port
        self.health = health_servicer
        self.service_names = list(service_names)

    async def set_serving(self, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        # "" is the whole server: what Kubernetes' gRPC probes ask for by default.
        for name in ["", *self.service_names]:
            await self.health.set(name, status)
        for name in self.service_names:
            SERVICE_READY.labels(name).set(1 if serving else 0)

    async def drain(self, grace_s: float) -> None:
        await self.set_serving(False)
        await self.server.stop(grace_s)


def server_options(settings: ServiceSettings) -> list[tuple[str, int]]:
    options = list(SERVER_OPTIONS)
    if settings.max_connection_age_s > 0:
        options.append(("grpc.max_connection_age_ms", int(settings.max_connection_age_s * 1000)))
        options.append(("grpc.max_connection_age_grace_ms", int(settings.max_connection_age_grace_s * 1000)))
    return options


def tls_credentials(settings: ServiceSettings) -> grpc.ServerCredentials | None:
    """TLS from the settings' PEM files (mTLS when a client CA is given), or None for plaintext."""
    if settings.tls_cert_file is None and settings.tls_key_file is None:
        return None
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        raise ValueError("TLS needs both tls_cert_file and tls_key_file")
    client_ca = settings.tls_client_ca_file.read_bytes() if settings.tls_client_ca_file else None
    return grpc.ssl_server_credentials(
        [(settings.tls_key_file.read_bytes(), settings.tls_cert_file.read_bytes())],
        root_certificates=client_ca,
        require_client_auth=client_ca is not None,
    )


async def start_server(
    app: App,
    host: str,
    port: int,
    *,
    reflection_enabled: bool = True,
    server_credentials: grpc.ServerCredentials | None = None,
    options: Sequence[tuple[str, int]] = SERVER_OPTIONS,
) -> RunningServer:
    """Binds and starts the server with every service NOT_SERVING; returns it with its bound port."""
    # The trace context first, so request-id logging and the app's interceptors run inside the call's span.
    interceptors = [aio_server_interceptor(), ServerInterceptor(), *app.interceptors]
    server = grpc.aio.server(interceptors=interceptors, options=list(options))
    app.register(server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if reflection_enabled:
        names = [*app.service_names, health.SERVICE_NAME, reflection.SERVICE_NAME]
        reflection.enable_server_reflection(names, server)
    address = f"{host}:{port}"
    if server_credentials is None:
        bound = server.add_insecure_port(address)
    else:
        bound = server.add_secure_port(address, server_credentials)
    if bound == 0:
        raise OSError(f"could not bind gRPC port {address}")
    await server.start()
    running = RunningServer(server, bound, health_servicer, app.service_names)
    await running.set_serving(False)
    return running


async def serve(app: App, settings: ServiceSettings, service: str) -> None:
    """Runs `app` until SIGTERM/SIGINT, following the life cycle in the module docstring."""
    configure_logging(service, settings.log_level, settings.log_format)
    configure_tracing(service, settings.otlp_endpoint)
    metrics_port = serve_metrics(settings.host, settings.metrics_port)
    running = await start_server(
        app,
        settings.host,
        settings.port,
        reflection_enabled=settings.reflection,
        server_credentials=tls_credentials(settings),
        options=server_options(settings),
    )
    log.info("listening", extra={"grpc_port": running.port, "metrics_port": metrics_port})

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    starting = asyncio.create_task(app.start())
    stopped = asyncio.create_task(stop.wait())
    await asyncio.wait({starting, stopped}, return_when=asyncio.FIRST_COMPLETED)
    try:
        if starting.done():
            starting.result()  # a failed start ends the process with its error
            await running.set_serving(True)
            log.info("ready", extra={"grpc_port": running.port})
            await stopped
        else:
            starting.cancel()
        log.info("draining", extra={"grace_s": settings.drain_seconds})
        await running.drain(settings.drain_seconds)
    finally:
        await app.stop()
        log.info("stopped")
