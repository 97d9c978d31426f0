"""The real inference service (tiny model, in-process, port 0) and real gateways started against it."""

from __future__ import annotations

import base64
import contextlib
import itertools
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from aiohttp import web

from inkloop.rpc.server import RunningServer, start_server
from inkloop.spool import Spool
from inkloop.v1 import analytics_pb2, common_pb2, gateway_pb2, gateway_pb2_grpc
from inkloop_gateway.admission.keys import KeyStore, Role
from inkloop_gateway.app import GatewayApp
from inkloop_gateway.jobs.store import JobStore
from inkloop_gateway.jobs.store_redis import RedisJobStore
from inkloop_gateway.jobs.store_sqlite import SqliteJobStore
from inkloop_gateway.settings import GatewaySettings


@dataclass
class Inference:
    app: object
    running: RunningServer

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.running.port}"


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from inkloop_inference.presets import ensure_preset

    return ensure_preset("tiny", tmp_path_factory.mktemp("model"))


@contextlib.asynccontextmanager
async def running_inference(model_dir: Path, **settings: object) -> AsyncIterator[Inference]:
    """A real inference service on the tiny model, on a free port, until the block ends."""
    from inkloop_inference.server import InferenceApp
    from inkloop_inference.settings import InferenceSettings

    app = InferenceApp(
        InferenceSettings(**{"model_path": model_dir, "port": 0, "warmup": False, "max_queue_delay_ms": 0, **settings})
    )
    running = await start_server(app, "127.0.0.1", 0)
    await app.start()
    await running.set_serving(True)
    try:
        yield Inference(app, running)
    finally:
        await running.server.stop(0)
        await app.stop()


@pytest.fixture(scope="session")
def tiny_edit_dir(tiny_model_dir: Path) -> Path:
    from inkloop_inference.presets import ensure_preset

    return ensure_preset("tiny", tiny_model_dir.parent.parent, edit=True)


@pytest.fixture(scope="session")
async def inference(tiny_model_dir: Path, tiny_edit_dir: Path) -> AsyncIterator[Inference]:
    """The session's inference service: the tiny model and its edit companion."""
    async with running_inference(tiny_model_dir, edit_model_path=tiny_edit_dir) as service:
        yield service


def edit_task(image: bytes, instruction: str = "make the sky pink", **fields: object) -> common_pb2.GenerationTask:
    values: dict[str, object] = {"steps": 2, "true_cfg_scale": 1.0, **fields}
    parameters = common_pb2.GenerationParameters(prompt=instruction, **values)  # type: ignore[arg-type]
    return common_pb2.GenerationTask(edit=common_pb2.EditRequest(parameters=parameters, image=image))


def spooled_events(spool: Spool) -> list[analytics_pb2.BackendEvent]:
    """Every back-end event in the gateway's spool, oldest first (records: base64 of IngestRequests)."""
    segments = sorted(spool.directory.glob("*.jsonl"))
    records = [record for segment in segments for record in spool.read(segment)]
    return [e for record in records for e in analytics_pb2.IngestRequest.FromString(base64.b64decode(record)).backend]


#: Ports below Linux's ephemeral range (32768+): no server a test starts on port 0 can be given one.
_DEAD_PORTS = itertools.count(20_000)


def dead_address() -> str:
    """A real address nothing listens on: connecting is refused, calls end UNAVAILABLE. Not an ephemeral
    port, which a server started later on port 0 could be handed (then the address would answer)."""
    for port in _DEAD_PORTS:
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        return f"127.0.0.1:{port}"
    raise AssertionError("unreachable: the count is endless")


@dataclass
class Gateway:
    app: GatewayApp
    running: RunningServer
    channel: grpc.aio.Channel
    secrets: dict[str, str] = field(default_factory=dict)

    @property
    def jobs(self) -> gateway_pb2_grpc.GatewayServiceStub:
        return gateway_pb2_grpc.GatewayServiceStub(self.channel)

    @property
    def admin(self) -> gateway_pb2_grpc.AdminServiceStub:
        return gateway_pb2_grpc.AdminServiceStub(self.channel)

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.app.http.port}"

    def auth(self, who: str = "acme") -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.secrets[who]}"),)

    async def stop(self) -> None:
        await self.channel.close()
        await self.running.server.stop(0)
        await self.app.stop()


#: Test defaults: fast polling, generous rate limits, analytics unreachable unless a test says otherwise.
TEST_SETTINGS: dict[str, object] = {
    "port": 0,
    "http_port": 0,
    "poll_interval_s": 0.05,
    "health_interval_s": 30.0,
    "events_flush_interval_s": 0.1,
    "rate_key_requests_per_s": 1000.0,
    "rate_key_requests_burst": 1000.0,
    "rate_tenant_requests_per_s": 1000.0,
    "rate_tenant_requests_burst": 1000.0,
}

StartGateway = Callable[..., Awaitable[Gateway]]


def ensure_keys(data_dir: Path) -> dict[str, str]:
    """Keys of this data dir (created once, kept in a file so a restarted gateway finds them)."""
    saved = data_dir / "test-keys"
    if saved.exists():
        return dict(line.split(" ", 1) for line in saved.read_text().splitlines())
    store = KeyStore(data_dir / "keys.db")
    keys = {
        "admin": store.create("acme", Role.ADMIN, "admin")[1],
        "acme": store.create("acme", Role.USER, "user")[1],
        "globex": store.create("globex", Role.USER, "other tenant")[1],
    }
    store.close()
    saved.write_text("\n".join(f"{who} {secret}" for who, secret in keys.items()))
    return keys


@pytest.fixture
async def start_gateway(inference: Inference, tmp_path: Path) -> AsyncIterator[StartGateway]:
    """Starts gateways (default: on this test's data dir, against the session's inference service, gRPC on a
    free port; `port=N` binds that one)."""
    started: list[Gateway] = []

    async def start(data_dir: Path | None = None, **overrides: object) -> Gateway:
        data_dir = data_dir or tmp_path / "gateway"
        data_dir.mkdir(parents=True, exist_ok=True)
        keys = ensure_keys(data_dir)
        values = {
            **TEST_SETTINGS,
            "data_dir": data_dir,
            "inference_target": inference.target,
            "analytics_target": dead_address(),
            **overrides,
        }
        settings = GatewaySettings(**values)  # type: ignore[arg-type]
        app = GatewayApp(settings)
        running = await start_server(app, "127.0.0.1", settings.port)
        await app.start()
        await running.set_serving(True)
        gateway = Gateway(app, running, grpc.aio.insecure_channel(f"127.0.0.1:{running.port}"), keys)
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        if gateway.app.ready:
            await gateway.stop()


@pytest.fixture
async def gateway(start_gateway: StartGateway) -> Gateway:
    return await start_gateway()


def text_task(prompt: str = "a red fox in snow", **fields: object) -> common_pb2.GenerationTask:
    values: dict[str, object] = {"width": 64, "height": 64, "steps": 2, **fields}
    parameters = common_pb2.GenerationParameters(prompt=prompt, **values)  # type: ignore[arg-type]
    return common_pb2.GenerationTask(text_to_image=common_pb2.TextToImageRequest(parameters=parameters))


async def events_of(call: grpc.aio.UnaryStreamCall) -> list[gateway_pb2.JobEvent]:
    return [event async for event in call]


async def finished(gateway: Gateway, job_id: str, who: str = "acme") -> gateway_pb2.JobEvent:
    """The terminal event of a job, following it with WatchJob."""
    events = await events_of(
        gateway.jobs.WatchJob(gateway_pb2.WatchJobRequest(job_id=job_id), metadata=gateway.auth(who))
    )
    return events[-1]


@dataclass
class Receiver:
    """A local webhook receiver; `answers` says what each next request gets (then 200)."""

    url: str = ""
    answers: list[int] = field(default_factory=list)
    received: list[tuple[str, dict[str, str], bytes]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.received.append((request.path_qs, dict(request.headers), body))
        status = self.answers.pop(0) if self.answers else 200
        if status == 302:
            return web.Response(status=302, headers={"Location": self.url.rsplit("/", 1)[0] + "/elsewhere"})
        return web.Response(status=status, text="ok" if status < 300 else "no")


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    found = Receiver()
    app = web.Application()
    app.router.add_post("/{tail:.*}", found.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    found.url = f"http://127.0.0.1:{port}/hooks/inkloop"
    yield found
    await runner.cleanup()


@pytest.fixture(params=["sqlite", "redis"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[JobStore]:
    """A job store on each backend: a SQLite file and the session's real redis-server."""
    opened: JobStore
    if request.param == "sqlite":
        opened = SqliteJobStore(tmp_path / "jobs.db")
    else:
        opened = RedisJobStore(request.getfixturevalue("redis_url"))
    yield opened
    await opened.close()
