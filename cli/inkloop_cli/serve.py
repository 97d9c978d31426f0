"""`inkloop serve inference|gateway|analytics [FLAGS]`: run one service (what each container runs)."""

from __future__ import annotations

import asyncio
import enum

import typer


class ServiceName(enum.StrEnum):
    inference = "inference"
    gateway = "gateway"
    analytics = "analytics"


def serve(
    ctx: typer.Context,
    service: ServiceName = typer.Argument(..., help="Which service to run."),
) -> None:
    """Run one service. Its flags follow the name; `inkloop serve NAME --help` lists them."""
    # Heavy modules (torch, chdb) are imported only for the service that needs them.
    from inkloop.rpc.server import serve as run

    prog = f"inkloop serve {service.value}"
    if service is ServiceName.inference:
        from inkloop_inference.server import InferenceApp
        from inkloop_inference.settings import InferenceSettings

        inference_settings = InferenceSettings.from_args(ctx.args, prog=prog)
        asyncio.run(run(InferenceApp(inference_settings), inference_settings, "inference"))
    elif service is ServiceName.gateway:
        from inkloop_gateway.app import GatewayApp
        from inkloop_gateway.settings import GatewaySettings

        gateway_settings = GatewaySettings.from_args(ctx.args, prog=prog)
        asyncio.run(run(GatewayApp(gateway_settings), gateway_settings, "gateway"))
    else:
        from inkloop_analytics.server import AnalyticsApp
        from inkloop_analytics.settings import AnalyticsSettings

        analytics_settings = AnalyticsSettings.from_args(ctx.args, prog=prog)
        asyncio.run(run(AnalyticsApp(analytics_settings), analytics_settings, "analytics"))
