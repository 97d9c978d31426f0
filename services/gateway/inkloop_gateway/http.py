"""The gateway's HTTP port: the web page, image downloads and the browser event endpoint.

It is a thin bridge onto the gateway's own domain objects; no gateway logic lives here.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources

from aiohttp import web


async def _index(_request: web.Request) -> web.Response:
    page = resources.files("inkloop_gateway").joinpath("static/index.html").read_text(encoding="utf-8")
    return web.Response(text=page, content_type="text/html", charset="utf-8")


def build_app(is_ready: Callable[[], bool]) -> web.Application:
    async def healthz(_request: web.Request) -> web.Response:
        ready = is_ready()
        return web.json_response({"status": "ok" if ready else "starting"}, status=200 if ready else 503)

    app = web.Application(client_max_size=32 * 1024 * 1024)
    app.router.add_get("/", _index)
    app.router.add_get("/healthz", healthz)
    return app


class HttpServer:
    """Runs `build_app()` on host:port inside the gateway's event loop."""

    def __init__(self, host: str, port: int, is_ready: Callable[[], bool]) -> None:
        self._host = host
        self._port = port
        self._runner = web.AppRunner(build_app(is_ready), access_log=None)
        self.port = 0

    async def start(self) -> None:
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port, shutdown_timeout=5)
        await site.start()
        # aiohttp keeps the bound port only on its asyncio server; needed when port 0 was asked for.
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else self._port

    async def stop(self) -> None:
        await self._runner.cleanup()
