"""The inference replicas behind one variant's target: discovery, health and least-loaded choice.

A target is "host:port", a comma-separated list of them, or "dns:///name:port" (a headless service:
every address the name resolves to is one replica, re-resolved on each health round). Each replica
gets its own channel, so the gateway, not the channel's load balancer, decides where a job runs:
the healthy replica with the fewest jobs in flight. Replicas start out trusted; grpc.health.v1 is
polled every `health_interval_s`, and a call that fails with UNAVAILABLE marks its replica down at
once. A replica marked down is probed every `down_probe_interval_s` until it answers SERVING, so it
takes jobs again as soon as it is back, without waiting for traffic to try it; jobs waiting for a
replica are woken then (`wakes`). The channels' reconnect backoff is capped at the same interval:
gRPC's default (up to two minutes) would keep a restarted replica unreachable long after it is up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from inkloop import errors
from inkloop.rpc.client import open_channel
from inkloop.v1 import inference_pb2, inference_pb2_grpc
from inkloop_gateway import metrics

log = logging.getLogger(__name__)

SERVICE = "inkloop.v1.InferenceService"
_MODEL_INFO_TTL_S = 60.0


@dataclass
class Replica:
    address: str
    channel: grpc.aio.Channel
    stub: inference_pb2_grpc.InferenceServiceStub
    healthy: bool = True
    in_flight: int = 0
    failures: int = 0
    #: Health probes while the replica is marked down.
    prober: asyncio.Task[None] | None = None

    @classmethod
    def connect(
        cls, address: str, credentials: grpc.ChannelCredentials | None = None, reconnect_max_s: float = 1.0
    ) -> Replica:
        backoff_ms = max(int(reconnect_max_s * 1000), 100)
        options = [
            ("grpc.initial_reconnect_backoff_ms", min(100, backoff_ms)),
            ("grpc.max_reconnect_backoff_ms", backoff_ms),
        ]
        channel = open_channel(address, credentials=credentials, options=options)
        return cls(address, channel, inference_pb2_grpc.InferenceServiceStub(channel))

    async def check(self) -> bool:
        try:
            reply = await health_pb2_grpc.HealthStub(self.channel).Check(
                health_pb2.HealthCheckRequest(service=SERVICE), timeout=1.0
            )
        except grpc.aio.AioRpcError:
            return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def target_problem(target: str) -> str | None:
    """Why `target` is not a target this module can serve (see above), or None when it is."""
    dns = target.startswith("dns:///")
    addresses = [target.removeprefix("dns:///")] if dns else [a.strip() for a in target.split(",")]
    for address in addresses:
        host, colon, port = address.rpartition(":")
        host = host.removeprefix("[").removesuffix("]") if host.startswith("[") else host
        if not colon or not host or any(c.isspace() or c in "/,[]" for c in host):
            return f"{address!r} is not host:port (a target is host:port[,host:port…] or dns:///name:port)"
        if not port.isdigit() or not 0 < int(port) < 65536:
            return f"{address!r} has no port in 1-65535"
    return None


def _split_target(target: str) -> tuple[str, int] | None:
    """(name, port) of a dns:/// target; None for static addresses."""
    if not target.startswith("dns:///"):
        return None
    name, _, port = target.removeprefix("dns:///").rpartition(":")
    return name, int(port)


@dataclass
class ReplicaPool:
    target: str
    health_interval_s: float
    #: TLS towards the replicas (None: plaintext).
    credentials: grpc.ChannelCredentials | None = None
    #: Seconds between health probes of a replica marked down.
    down_probe_interval_s: float = 0.5
    replicas: dict[str, Replica] = field(default_factory=dict)
    _task: asyncio.Task[None] | None = None
    _info: inference_pb2.GetModelInfoResponse | None = None
    _info_at: float = 0.0
    #: time.monotonic() since which no replica is healthy; None while one is.
    down_since: float | None = None
    #: Events of jobs waiting for a replica: set when one comes up.
    _wakers: set[asyncio.Event] = field(default_factory=set)

    async def start(self) -> None:
        await self._discover()
        self._task = asyncio.create_task(self._health_loop(), name=f"health:{self.target}")

    async def stop(self) -> None:
        tasks = [t for t in [self._task, *(r.prober for r in self.replicas.values())] if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for replica in self.replicas.values():
            await replica.channel.close()
        for health in ("up", "down"):
            metrics.INFERENCE_REPLICAS.labels(self.target, health).set(0)

    @property
    def any_healthy(self) -> bool:
        return any(r.healthy for r in self.replicas.values())

    def pick(self, tried: set[str]) -> Replica | None:
        """The healthy replica with the least work in flight that was not `tried`; None when there is none."""
        candidates = [r for r in self.replicas.values() if r.healthy and r.address not in tried]
        # Ties go to the first listed, which keeps the choice predictable for operators.
        return min(candidates, key=lambda r: r.in_flight) if candidates else None

    def mark_down(self, replica: Replica) -> None:
        """Takes `replica` out of the choice until a health probe finds it SERVING again."""
        replica.failures += 1
        if replica.healthy:
            log.warning("inference replica unavailable", extra={"replica": replica.address})
        self._set_health(replica, False)

    @contextlib.contextmanager
    def wakes(self, event: asyncio.Event) -> Iterator[None]:
        """While inside, `event` is set when a replica comes up (a job waiting for one stops waiting)."""
        self._wakers.add(event)
        try:
            yield
        finally:
            self._wakers.discard(event)

    async def model_info(self) -> inference_pb2.GetModelInfoResponse:
        """GetModelInfo of this target, cached for a minute (limits and revision rarely change). While no
        replica is healthy the last answer is kept, so the gateway still validates and queues jobs."""
        if self._info is not None and (time.monotonic() - self._info_at < _MODEL_INFO_TTL_S or not self.any_healthy):
            return self._info
        try:
            return await self._fetch_model_info()
        except errors.Unavailable:
            if self._info is not None:
                return self._info
            raise

    async def _fetch_model_info(self) -> inference_pb2.GetModelInfoResponse:
        # Replicas marked down are asked last: with nothing known yet, any answer is worth the try.
        for replica in sorted(self.replicas.values(), key=lambda r: (not r.healthy, r.in_flight)):
            try:
                self._info = await replica.stub.GetModelInfo(inference_pb2.GetModelInfoRequest(), timeout=5.0)
            except grpc.aio.AioRpcError as error:
                if error.code() != grpc.StatusCode.UNAVAILABLE:
                    raise errors.Unavailable(f"inference model info failed: {error.code().name}") from None
                self.mark_down(replica)
                continue
            self._info_at = time.monotonic()
            return self._info
        if not self.replicas:
            raise errors.Unavailable(f"no inference replica behind {self.target}")
        raise errors.Unavailable("no inference replica answered; try again later")

    def _set_health(self, replica: Replica, healthy: bool) -> None:
        if replica.healthy != healthy:
            log.info("inference replica health changed", extra={"replica": replica.address, "healthy": healthy})
        replica.healthy = healthy
        if healthy:
            self._came_up()
        elif replica.prober is None or replica.prober.done():
            replica.prober = asyncio.create_task(self._probe(replica), name=f"probe:{replica.address}")
        self._count()

    async def _probe(self, replica: Replica) -> None:
        """Health checks of a replica marked down until it answers SERVING (or is marked up meanwhile)."""
        while not replica.healthy:
            await asyncio.sleep(self.down_probe_interval_s)
            if await replica.check():
                self._set_health(replica, True)

    def _came_up(self) -> None:
        for event in self._wakers:
            event.set()

    def _count(self) -> None:
        up = sum(r.healthy for r in self.replicas.values())
        if up:
            self.down_since = None
        elif self.down_since is None:
            self.down_since = time.monotonic()
        metrics.INFERENCE_REPLICAS.labels(self.target, "up").set(up)
        metrics.INFERENCE_REPLICAS.labels(self.target, "down").set(len(self.replicas) - up)

    async def _discover(self) -> None:
        dns = _split_target(self.target)
        if dns is None:
            addresses = [a.strip() for a in self.target.split(",") if a.strip()]
        else:
            name, port = dns
            try:
                infos = await asyncio.get_running_loop().getaddrinfo(name, port, type=socket.SOCK_STREAM)
            except OSError:
                log.warning("could not resolve inference target", extra={"target": self.target})
                return  # keep the replicas we know
            hosts = {str(info[4][0]) for info in infos}
            addresses = sorted(f"[{host}]:{port}" if ":" in host else f"{host}:{port}" for host in hosts)
        added = [a for a in addresses if a not in self.replicas]
        for address in added:
            self.replicas[address] = Replica.connect(address, self.credentials, self.down_probe_interval_s)
        for address in [a for a in self.replicas if a not in addresses]:
            gone = self.replicas.pop(address)
            if gone.prober is not None:
                gone.prober.cancel()
            if gone.in_flight == 0:
                await gone.channel.close()
        self._count()
        if added:
            self._came_up()  # new replicas start out trusted

    async def _health_loop(self) -> None:
        while True:
            await asyncio.sleep(self.health_interval_s)
            with contextlib.suppress(Exception):
                await self._discover()
                replicas = list(self.replicas.values())
                results = await asyncio.gather(*(r.check() for r in replicas))
                for replica, healthy in zip(replicas, results, strict=True):
                    if replica.healthy != healthy:
                        self._set_health(replica, healthy)


class Pools:
    """One pool per inference target, created on first use (variants may add targets at run time)."""

    def __init__(
        self,
        health_interval_s: float,
        credentials: grpc.ChannelCredentials | None = None,
        down_probe_interval_s: float = 0.5,
    ) -> None:
        self._health_interval_s = health_interval_s
        self._credentials = credentials
        self._down_probe_interval_s = down_probe_interval_s
        self._pools: dict[str, ReplicaPool] = {}
        self._lock = asyncio.Lock()

    def known(self, target: str) -> ReplicaPool | None:
        """The pool of `target` if one was made already (never creates one: callable anywhere)."""
        return self._pools.get(target)

    async def get(self, target: str) -> ReplicaPool:
        pool = self._pools.get(target)
        if pool is not None:
            return pool
        async with self._lock:
            if target not in self._pools:
                pool = ReplicaPool(target, self._health_interval_s, self._credentials, self._down_probe_interval_s)
                await pool.start()
                self._pools[target] = pool
            return self._pools[target]

    async def retain(self, targets: Collection[str]) -> None:
        """Stops the pools of targets not in `targets` (no variant names them any more) that run no job:
        their channels and health checks would otherwise live as long as the gateway. A job queued for
        a retired target still runs: `get` makes its pool again."""
        async with self._lock:
            retired = [
                pool
                for target, pool in self._pools.items()
                if target not in targets and not any(r.in_flight for r in pool.replicas.values())
            ]
            for pool in retired:
                del self._pools[pool.target]
        for pool in retired:
            log.info("inference target retired", extra={"target": pool.target})
            await pool.stop()

    async def stop(self) -> None:
        for pool in self._pools.values():
            await pool.stop()
        self._pools.clear()
