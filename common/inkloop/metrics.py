"""Prometheus metrics shared by every service, and the /metrics HTTP endpoint."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

GRPC_REQUESTS = Counter(
    "inkloop_grpc_requests_total", "gRPC calls handled, by method and status code.", ["method", "code"]
)
GRPC_LATENCY = Histogram(
    "inkloop_grpc_request_seconds",
    "gRPC call duration in seconds (for streams: until the last message).",
    ["method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
GRPC_IN_FLIGHT = Gauge("inkloop_grpc_in_flight", "gRPC calls being handled.", ["method"])
SERVICE_READY = Gauge("inkloop_ready", "1 when the service reports SERVING, else 0.", ["service"])


def serve_metrics(host: str, port: int) -> int:
    """Starts the /metrics endpoint in a background thread; returns the bound port."""
    server, _thread = start_http_server(port, addr=host)
    return int(server.server_port)
