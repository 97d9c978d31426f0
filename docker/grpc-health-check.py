"""Container health check: exits 0 when the local gRPC server reports SERVING, 1 otherwise.

Asks `grpc.health.v1.Health/Check` on 127.0.0.1 at the port the service was configured with (its
`INKLOOP_<SERVICE>_PORT` variable, else the service's default port). Service name "" (the default)
covers the whole server, as Kubernetes' gRPC probes do. Docker and Compose use it through the images'
HEALTHCHECK; Kubernetes ignores HEALTHCHECK and probes the port itself.

    python grpc-health-check.py --port-env INKLOOP_GATEWAY_PORT --default-port 50051
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port-env", required=True, help="Variable holding the gRPC port, e.g. INKLOOP_GATEWAY_PORT.")
    parser.add_argument("--default-port", type=int, required=True, help="Port when the variable is not set.")
    parser.add_argument("--service", default="", help='Health service name ("" = the whole server).')
    parser.add_argument("--timeout", type=float, default=3.0, help="Seconds to wait for the answer.")
    args = parser.parse_args(argv)

    port = int(os.environ.get(args.port_env) or args.default_port)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            response = stub.Check(health_pb2.HealthCheckRequest(service=args.service), timeout=args.timeout)
        except grpc.RpcError as error:
            print(f"unhealthy: {error.code().name}", file=sys.stderr)
            return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    print(status)
    return 0 if response.status == health_pb2.HealthCheckResponse.SERVING else 1


if __name__ == "__main__":
    sys.exit(main())
