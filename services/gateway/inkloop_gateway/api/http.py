"""The gateway's HTTP port: the web page, image downloads and the browser event endpoint.

It is a thin bridge onto the gateway's own domain objects; no gateway logic lives here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

from inkloop import errors, tracing
from inkloop_gateway.admission.auth import authenticate_header
from inkloop_gateway.admission.keys import KeyStore
from inkloop_gateway.api.analyst import AnalyticsClient
from inkloop_gateway.api.bridge import JobsBridge, PageConfig, page_key
from inkloop_gateway.api.collect import Collector
from inkloop_gateway.api.dashboard import Dashboard
from inkloop_gateway.api.http_json import Handler, json_errors
from inkloop_gateway.api.nudges import PageNudges
from inkloop_gateway.api.openai_images import OpenAIImages
from inkloop_gateway.events.sender import EventFacts, EventSender, EventType
from inkloop_gateway.media.images import FORMATS, ImageStore, convert, load_or_create_secret

if TYPE_CHECKING:
    from inkloop_gateway.jobs.service import JobService
    from inkloop_gateway.settings import GatewaySettings

# Image ids are content hashes, so a URL's bytes never change: browsers may keep them for good.
_CACHE_CONTROL = "private, max-age=31536000, immutable"


STATIC_DIR = Path(str(resources.files("inkloop_gateway").joinpath("static")))


def _page(name: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def serve(_request: web.Request) -> web.Response:
        page = (STATIC_DIR / name).read_text(encoding="utf-8")
        return web.Response(text=page, content_type="text/html", charset="utf-8", headers={"Cache-Control": "no-cache"})

    return serve


class ImageDownloads:
    """`GET /v1/images/<id>.<png|jpg|webp>`: with `authorization: Bearer <key>` for the key's tenant, or
    with a signed URL's `tenant`, `expires` and `sig`. Anything not the caller's is 404."""

    def __init__(self, keys: KeyStore, images: ImageStore, events: EventSender) -> None:
        self.keys = keys
        self.images = images
        self.events = events

    async def get(self, request: web.Request) -> web.Response:
        image_id, _, extension = request.match_info["name"].partition(".")
        if extension == "jpeg":
            extension = "jpg"
        if extension not in FORMATS:
            raise web.HTTPNotFound(text="unknown image format")
        try:
            tenant_id = await self._tenant(request, image_id)
        except errors.Unauthenticated as error:
            raise web.HTTPUnauthorized(text=str(error), headers={"WWW-Authenticate": "Bearer"}) from None
        try:
            stored = await asyncio.to_thread(self.images.load, tenant_id, image_id)
        except errors.NotFound:
            raise web.HTTPNotFound(text="image not found") from None
        etag = f'"{image_id}.{extension}"'
        if request.headers.get("If-None-Match") == etag:
            return web.Response(status=304, headers={"ETag": etag, "Cache-Control": _CACHE_CONTROL})
        data = (
            stored.data if stored.extension == extension else await asyncio.to_thread(convert, stored.data, extension)
        )
        attachment = "download" in request.query
        # A display (the page's <img>, a thumbnail: a signed URL) is a view; a download is what a user asked
        # to keep: the attachment link, or a key-authenticated fetch by an API client.
        downloaded = attachment or "sig" not in request.query
        kind = EventType.BACKEND_EVENT_TYPE_DOWNLOADED if downloaded else EventType.BACKEND_EVENT_TYPE_VIEWED
        self.events.emit(EventFacts.of_download(tenant_id, stored.origin).event(kind))
        headers = {"ETag": etag, "Cache-Control": _CACHE_CONTROL}
        if attachment:
            headers["Content-Disposition"] = f'attachment; filename="{image_id}.{extension}"'
        return web.Response(body=data, content_type=FORMATS[extension][1], headers=headers)

    async def _tenant(self, request: web.Request, image_id: str) -> str:
        query = request.query
        if "sig" in query:
            tenant_id = query.get("tenant", "")
            if not self.images.verify(tenant_id, image_id, query.get("expires", ""), query["sig"]):
                raise errors.Unauthenticated("invalid or expired signed URL")
            return tenant_id
        return (await authenticate_header(self.keys, request.headers.get("Authorization"))).tenant_id


def routes(
    keys: KeyStore,
    jobs: JobService,
    images: ImageStore,
    events: EventSender,
    analytics: AnalyticsClient,
    settings: GatewaySettings,
) -> list[web.RouteDef]:
    """Every route but the page's files: the jobs bridge, page config and nudges, downloads, collect and
    dashboard."""
    secret = settings.web_visitor_secret or load_or_create_secret(settings.data_dir / "visitor-secret").decode()
    collector = Collector(
        analytics.stub, tenant_id=settings.web_tenant_id, secret=secret, max_events=settings.web_collect_max_events
    )
    return [
        *JobsBridge(keys, jobs).routes(),
        *Dashboard(keys, analytics).routes(),
        web.get("/v1/images/{name}", ImageDownloads(keys, images, events).get),
        web.post("/collect", collector.collect),
        web.get("/v1/web/config", PageConfig(page_key(keys, settings.web_page_key_file), jobs).get),
        *PageNudges(analytics, tenant_id=settings.web_tenant_id, visitor_secret=secret).routes(),
        *OpenAIImages(keys, jobs).routes(),
    ]


@web.middleware
async def traced(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A server span per request, continuing the caller's `traceparent` (named by route, not path)."""
    route = request.match_info.route.resource.canonical if request.match_info.route.resource else request.path
    with tracing.server_span(f"{request.method} {route}", request.headers, **{"http.method": request.method}) as span:
        response = await handler(request)
        span.set_attribute("http.status_code", response.status)
        return response


def build_app(is_ready: Callable[[], bool], routes: Sequence[web.RouteDef] = ()) -> web.Application:
    async def healthz(_request: web.Request) -> web.Response:
        ready = is_ready()
        return web.json_response({"status": "ok" if ready else "starting"}, status=200 if ready else 503)

    app = web.Application(client_max_size=32 * 1024 * 1024, middlewares=[traced, json_errors])
    app.router.add_get("/", _page("index.html"))
    app.router.add_get("/dashboard", _page("dashboard.html"))
    app.router.add_get("/hm.js", _script("hm.js"))
    app.router.add_static("/static/", STATIC_DIR)
    app.router.add_get("/healthz", healthz)
    app.router.add_routes(routes)
    return app


def _script(name: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def serve(_request: web.Request) -> web.Response:
        text = (STATIC_DIR / name).read_text(encoding="utf-8")
        return web.Response(text=text, content_type="text/javascript", headers={"Cache-Control": "max-age=300"})

    return serve


class HttpServer:
    """Runs an aiohttp application on host:port inside the gateway's event loop."""

    def __init__(self, host: str, port: int) -> None:
        self._host = host
        self._port = port
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def start(self, app: web.Application) -> None:
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        # aiohttp keeps the bound port only on its asyncio server; needed when port 0 was asked for.
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else self._port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
