"""The inference replicas behind one variant's target: discovery, health and least-loaded choice.

A target is "host:port", a comma-separated list of them, or "dns:///name:port" (a headless service:
every address the name resolves to is one replica, re-resolved on each health round). Each replica
gets its own channel, so the gateway, not the channel's load balancer, decides where a job runs:
the healthy replica with the fewest jobs in flight. Replicas start out trusted; grpc.health.v1 is
polled every `health_interval_s`, and a call that fails with UNAVAILABLE marks its replica unhealthy
at once until the next successful check.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from inkloop import errors
from inkloop.rpc.client import open_channel
from inkloop.v1 import inference_pb2, inference_pb2_grpc

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

    @classmethod
    def connect(cls, address: str, credentials: grpc.ChannelCredentials | None = None) -> Replica:
        channel = open_channel(address, credentials=credentials)
        return cls(address, channel, inference_pb2_grpc.InferenceServiceStub(channel))

    async def check(self) -> bool:
        try:
            reply = await health_pb2_grpc.HealthStub(self.channel).Check(
                health_pb2.HealthCheckRequest(service=SERVICE), timeout=1.0
            )
        except grpc.aio.AioRpcError:
            return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


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
    replicas: dict[str, Replica] = field(default_factory=dict)
    _task: asyncio.Task[None] | None = None
    _info: inference_pb2.GetModelInfoResponse | None = None
    _info_at: float = 0.0

    async def start(self) -> None:
        await self._discover()
        self._task = asyncio.create_task(self._health_loop(), name=f"health:{self.target}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for replica in self.replicas.values():
            await replica.channel.close()

    def pick(self, tried: set[str]) -> Replica:
        """The healthy replica with the least work in flight, preferring ones not `tried` for this job."""
        if not self.replicas:
            raise errors.Unavailable(f"no inference replica behind {self.target}")
        # Ties go to the first listed, which keeps the choice predictable for operators.
        for candidates in (
            [r for r in self.replicas.values() if r.healthy and r.address not in tried],
            [r for r in self.replicas.values() if r.healthy],
            list(self.replicas.values()),  # all marked down: try anyway, the call will tell
        ):
            if candidates:
                return min(candidates, key=lambda r: r.in_flight)
        raise AssertionError("unreachable")

    def mark_down(self, replica: Replica) -> None:
        replica.healthy = False
        replica.failures += 1
        log.warning("inference replica unavailable", extra={"replica": replica.address})

    async def model_info(self) -> inference_pb2.GetModelInfoResponse:
        """GetModelInfo of this target, cached for a minute (limits and revision rarely change)."""
        if self._info is not None and time.monotonic() - self._info_at < _MODEL_INFO_TTL_S:
            return self._info
        tried: set[str] = set()
        for _ in range(len(self.replicas) or 1):
            replica = self.pick(tried)
            tried.add(replica.address)
            try:
                self._info = await replica.stub.GetModelInfo(inference_pb2.GetModelInfoRequest(), timeout=5.0)
            except grpc.aio.AioRpcError as error:
                if error.code() != grpc.StatusCode.UNAVAILABLE:
                    raise errors.Unavailable(f"inference model info failed: {error.code().name}") from None
                self.mark_down(replica)
                continue
            self._info_at = time.monotonic()
            return self._info
        raise errors.Unavailable("no inference replica answered; try again later")

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
        for address in addresses:
            if address not in self.replicas:
                self.replicas[address] = Replica.connect(address, self.credentials)
        for address in [a for a in self.replicas if a not in addresses]:
            gone = self.replicas.pop(address)
            if gone.in_flight == 0:
                await gone.channel.close()

    async def _health_loop(self) -> None:
        while True:
            await asyncio.sleep(self.health_interval_s)
            with contextlib.suppress(Exception):
                await self._discover()
                replicas = list(self.replicas.values())
                results = await asyncio.gather(*(r.check() for r in replicas))
                for replica, healthy in zip(replicas, results, strict=True):
                    if replica.healthy != healthy:
                        log.info(
                            "inference replica health changed", extra={"replica": replica.address, "healthy": healthy}
                        )
                    replica.healthy = healthy


class Pools:
    """One pool per inference target, created on first use (variants may add targets at run time)."""

    def __init__(self, health_interval_s: float, credentials: grpc.ChannelCredentials | None = None) -> None:
        self._health_interval_s = health_interval_s
        self._credentials = credentials
        self._pools: dict[str, ReplicaPool] = {}
        self._lock = asyncio.Lock()

    async def get(self, target: str) -> ReplicaPool:
        pool = self._pools.get(target)
        if pool is not None:
            return pool
        async with self._lock:
            if target not in self._pools:
                pool = ReplicaPool(target, self._health_interval_s, self._credentials)
                await pool.start()
                self._pools[target] = pool
            return self._pools[target]

    async def stop(self) -> None:
        for pool in self._pools.values():
            await pool.stop()
        self._pools.clear()
