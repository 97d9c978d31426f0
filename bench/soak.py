"""Soak: the whole stack (`inkloop up`, tiny model) under mixed load for a while; errors, throughput, memory.

    .venv/bin/python bench/soak.py [--seconds 600] [--warmup 30] [--keep]

Starts `inkloop up` on free 127.0.0.1 ports in a temp data dir, creates user keys and an analyst key
through AdminService with the development admin key, and runs these loops for `--warmup` seconds and
then the measured `--seconds` (each stops by itself; the closed loops finish the job they follow):

- generate ×2: Generate (submit and follow in one stream), a new seed each time, 64×64, 2 steps;
- submit+watch ×2: SubmitJob, then WatchJob until the job ends;
- cache ×2: the same request again and again (same prompt and seed, fresh request ids): cache hits;
- cancel: SubmitJob then CancelJob at once, then GetJob: CANCELLED (or SUCCEEDED when it won the race);
- tracker: POST /collect batches of page views and clicks, as the page's tracker sends them;
- dashboard: GET /v1/analytics/<panel> with the analyst key, one panel after another.

Every answer is counted by kind and status. Prints throughput and latency per kind, jobs by end state,
errors by status (a rate-limit refusal, RESOURCE_EXHAUSTED or HTTP 429, is counted apart: the default
limits stay on) and each service's RSS (VmRSS of the three children of `inkloop up`): idle after start,
at the start of the measured part (after `--warmup` seconds of load: first-use allocations, the model's
first batch, caches filling), at the end, and the peak of samples every 5 s. Goal: no error but
rate-limit refusals, RSS growth (start → end) under 10%.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from inkloop.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from harness import free_ports

HOST = "127.0.0.1"
SERVICES = ("gateway", "inference", "analytics")
PANELS = ("funnel", "discrepancy", "prompts", "adoption", "variants", "alerts")
PROMPTS = (
    "a red fox in snow",
    "一只戴草帽的狐狸 a fox in a straw hat",
    "a lighthouse at dusk",
    "山水画 misty mountains",
    "a paper boat on a pond",
)
#: Longest a single call may take: a job waits in the queue behind the others' jobs.
CALL_TIMEOUT_S = 180.0
RSS_SAMPLE_S = 5.0


# --- the stack ---------------------------------------------------------------------------------------


def _free_port_run(length: int) -> int:
    """The first of `length` consecutive free ports (`inkloop up` puts the metrics ports side by side)."""
    for _ in range(100):
        [base] = free_ports(1)
        if base + length > 65535:
            continue
        sockets = [socket.socket() for _ in range(length)]
        try:
            for offset, sock in enumerate(sockets):
                sock.bind((HOST, base + offset))
            return base
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
    raise RuntimeError("no run of free ports")


class Stack:
    """`inkloop up` in `directory`, its console and the services' logs in up.log there."""

    def __init__(self, directory: Path) -> None:
        self.gateway, self.inference, self.analytics, self.http = free_ports(4)
        self.metrics_base = _free_port_run(3)
        self.data_dir = directory / "var"
        self.log = directory / "up.log"
        command = [sys.executable, "-m", "inkloop_cli", "up", "--data-dir", str(self.data_dir), "--log-format", "json"]
        command += ["--gateway-port", str(self.gateway), "--inference-port", str(self.inference)]
        command += ["--analytics-port", str(self.analytics), "--http-port", str(self.http)]
        command += ["--metrics-port-base", str(self.metrics_base)]
        env = {**os.environ, "COLUMNS": "200", **{f"INKLOOP_{name.upper()}_LOG_LEVEL": "warning" for name in SERVICES}}
        with self.log.open("w") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=directory, env=env)

    @property
    def grpc_target(self) -> str:
        return f"{HOST}:{self.gateway}"

    @property
    def http_url(self) -> str:
        return f"http://{HOST}:{self.http}"

    def wait_ready(self, timeout_s: float = 600) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"inkloop up exited with code {self.process.returncode}:\n{self.console()[-3000:]}")
            if all(_serving(f"{HOST}:{getattr(self, name)}") for name in SERVICES) and len(self.pids()) == 3:
                return
            time.sleep(0.5)
        raise RuntimeError(f"inkloop up not SERVING after {timeout_s:.0f} s:\n{self.console()[-3000:]}")

    def admin_secret(self) -> str:
        return (self.data_dir / "dev-api-key").read_text().strip()

    def pids(self) -> dict[str, int]:
        """Service name -> pid of each `inkloop serve NAME` child of `inkloop up`."""
        found = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except (OSError, IndexError, ValueError):
                continue
            if parent == self.process.pid and b"serve" in argv:
                found[argv[argv.index(b"serve") + 1].decode()] = int(entry.name)
        return found

    def rss_mib(self) -> dict[str, float]:
        return {name: _vm_rss_mib(pid) for name, pid in self.pids().items()}

    def console(self) -> str:
        """What `inkloop up` itself printed (the services' JSON log lines left out)."""
        return "\n".join(line for line in self.log.read_text(errors="replace").splitlines() if not line.startswith("{"))

    def restarts(self) -> list[str]:
        return [line for line in self.console().splitlines() if " exited with code " in line]

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        try:
            return self.process.wait(timeout=90)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()


def _serving(address: str) -> bool:
    with grpc.insecure_channel(address) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
        except grpc.RpcError:
            return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING


def _vm_rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


# --- counting ----------------------------------------------------------------------------------------


@dataclass
class Tally:
    ok: Counter[str] = field(default_factory=Counter)
    errors: Counter[tuple[str, str]] = field(default_factory=Counter)
    refused: Counter[str] = field(default_factory=Counter)
    jobs: Counter[str] = field(default_factory=Counter)
    latencies: defaultdict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    #: time.monotonic() of each success, to see whether throughput holds over the run.
    finished_at: defaultdict[str, list[float]] = field(default_factory=lambda: defaultdict(list))

    def success(self, kind: str, started: float) -> None:
        self.ok[kind] += 1
        self.latencies[kind].append(time.perf_counter() - started)
        self.finished_at[kind].append(time.monotonic())

    def per_window(self, kinds: tuple[str, ...], began: float, window_s: float, windows: int) -> list[int]:
        counts = [0] * windows
        for kind in kinds:
            for moment in self.finished_at[kind]:
                counts[min(int((moment - began) / window_s), windows - 1)] += 1
        return counts

    def failure(self, kind: str, status: str) -> None:
        if status in ("RESOURCE_EXHAUSTED", "HTTP 429"):
            self.refused[kind] += 1
        else:
            self.errors[(kind, status)] += 1

    def job_ended(self, event: gateway_pb2.JobEvent | None) -> None:
        """Counts a job's terminal event; raises `_BadAnswer` for a failed job or a stream that ended without one."""
        which = event.WhichOneof("event") if event is not None else None
        self.jobs[which or "unfinished"] += 1
        if which == "failed":
            assert event is not None
            raise _BadAnswer(f"job FAILED {event.failed.code}")
        if which not in ("succeeded", "cancelled"):
            raise _BadAnswer("stream ended before the job did")


class _BadAnswer(Exception):
    """An answer that is not what the call should get (an HTTP status, a failed job); its text is the status counted."""


# --- the load ----------------------------------------------------------------------------------------


def _task(prompt: str, seed: int) -> common_pb2.GenerationTask:
    parameters = common_pb2.GenerationParameters(prompt=prompt, width=64, height=64, steps=2, seed=seed)
    return common_pb2.GenerationTask(text_to_image=common_pb2.TextToImageRequest(parameters=parameters))


def _fresh_task(rng: random.Random) -> common_pb2.GenerationTask:
    return _task(rng.choice(PROMPTS), rng.randrange(1, 2**63))


def _auth(secret: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {secret}"),)


async def _last_event(call: grpc.aio.UnaryStreamCall) -> gateway_pb2.JobEvent | None:
    last = None
    async for event in call:
        last = event
        if event.WhichOneof("event") in ("succeeded", "failed", "cancelled"):
            return event
    return last


class Load:
    """The request loops; each runs until `deadline` (time.monotonic()) and records into `tally`."""

    def __init__(self, stack: Stack, channel: grpc.aio.Channel, http: aiohttp.ClientSession, deadline: float) -> None:
        self.stack = stack
        self.jobs = gateway_pb2_grpc.GatewayServiceStub(channel)
        self.http = http
        self.began = time.monotonic()
        self.deadline = deadline
        self.tally = Tally()
        #: (time.monotonic(), service -> RSS MiB) every RSS_SAMPLE_S.
        self.rss_samples: list[tuple[float, dict[str, float]]] = []
        #: Request ids of recent jobs, which the tracker's click events carry (as the page's do).
        self.recent_request_ids: list[str] = []

    async def _loop(self, kind: str, once: Callable[[], Awaitable[None]], pause_s: float) -> None:
        while time.monotonic() < self.deadline:
            started = time.perf_counter()
            try:
                await once()
            except grpc.aio.AioRpcError as error:
                self.tally.failure(kind, error.code().name)
            except _BadAnswer as error:
                self.tally.failure(kind, str(error))
            except (aiohttp.ClientError, TimeoutError) as error:
                self.tally.failure(kind, type(error).__name__)
            else:
                self.tally.success(kind, started)
            await asyncio.sleep(pause_s)

    def generate(self, secret: str, rng: random.Random) -> Awaitable[None]:
        async def once() -> None:
            request = gateway_pb2.GenerateRequest(request_id=uuid.uuid4().hex, task=_fresh_task(rng))
            self._remember(request.request_id)
            call = self.jobs.Generate(request, metadata=_auth(secret), timeout=CALL_TIMEOUT_S)
            self.tally.job_ended(await _last_event(call))

        return self._loop("generate", once, 0.0)

    def submit_and_watch(self, secret: str, rng: random.Random) -> Awaitable[None]:
        async def once() -> None:
            request = gateway_pb2.SubmitJobRequest(request_id=uuid.uuid4().hex, task=_fresh_task(rng))
            self._remember(request.request_id)
            reply = await self.jobs.SubmitJob(request, metadata=_auth(secret), timeout=CALL_TIMEOUT_S)
            watch = gateway_pb2.WatchJobRequest(job_id=reply.job.job_id)
            call = self.jobs.WatchJob(watch, metadata=_auth(secret), timeout=CALL_TIMEOUT_S)
            self.tally.job_ended(await _last_event(call))

        return self._loop("submit+watch", once, 0.0)

    def cache_hits(self, secret: str, task: common_pb2.GenerationTask) -> Awaitable[None]:
        async def once() -> None:
            request = gateway_pb2.SubmitJobRequest(request_id=uuid.uuid4().hex, task=task)
            reply = await self.jobs.SubmitJob(request, metadata=_auth(secret), timeout=CALL_TIMEOUT_S)
            self.tally.jobs["cache hit" if reply.job.cache_hit else "cache miss"] += 1

        return self._loop("cache hit", once, 0.125)  # under the default 10 requests/s of one key

    def cancels(self, secret: str, rng: random.Random) -> Awaitable[None]:
        async def once() -> None:
            request = gateway_pb2.SubmitJobRequest(request_id=uuid.uuid4().hex, task=_fresh_task(rng))
            reply = await self.jobs.SubmitJob(request, metadata=_auth(secret), timeout=CALL_TIMEOUT_S)
            job_id = reply.job.job_id
            await self.jobs.CancelJob(gateway_pb2.CancelJobRequest(job_id=job_id), metadata=_auth(secret), timeout=30)
            state = await self._settled_state(secret, job_id)
            self.tally.jobs[f"cancel → {gateway_pb2.JobState.Name(state).removeprefix('JOB_STATE_')}"] += 1
            if state not in (gateway_pb2.JOB_STATE_CANCELLED, gateway_pb2.JOB_STATE_SUCCEEDED):
                raise _BadAnswer(f"job ended {gateway_pb2.JobState.Name(state)}")

        return self._loop("cancel", once, 1.0)

    async def _settled_state(self, secret: str, job_id: str) -> int:
        """The job's state once it is terminal (a cancel stops a running job at its next step)."""
        state = gateway_pb2.JOB_STATE_UNSPECIFIED
        for _ in range(60):
            reply = await self.jobs.GetJob(gateway_pb2.GetJobRequest(job_id=job_id), metadata=_auth(secret), timeout=10)
            state = reply.job.state
            if state not in (gateway_pb2.JOB_STATE_QUEUED, gateway_pb2.JOB_STATE_RUNNING):
                break
            await asyncio.sleep(0.5)
        return state

    def tracker(self, rng: random.Random) -> Awaitable[None]:
        session, user = uuid.uuid4().hex, f"soak-{rng.randrange(1000)}"

        async def once() -> None:
            now_ms = time.time() * 1000
            page = {"id": str(uuid.uuid4()), "t": now_ms, "type": "pv", "url": f"{self.stack.http_url}/"}
            clicks = [
                {
                    "id": str(uuid.uuid4()),
                    "t": now_ms,
                    "type": "ev",
                    "c": "generate",
                    "a": action,
                    "l": "soak",
                    "rid": rid,
                }
                for action in ("exposure", "click")
                for rid in self.recent_request_ids[-4:]
            ]
            body = {"sid": session, "uid": user, "lang": "en", "scr": "1280x720", "ev": [page, *clicks]}
            async with self.http.post(f"{self.stack.http_url}/collect", json=body) as reply:
                await reply.read()
                _raise_for(reply.status, expected=204)

        return self._loop("tracker batch", once, 0.5)

    def dashboard(self, secret: str) -> Awaitable[None]:
        panels = iter(PANELS * 100_000)
        headers = {"Authorization": f"Bearer {secret}"}

        async def once() -> None:
            url = f"{self.stack.http_url}/v1/analytics/{next(panels)}?hours=1"
            async with self.http.get(url, headers=headers) as reply:
                await reply.json()
                _raise_for(reply.status, expected=200)

        return self._loop("dashboard query", once, 2.0)

    def _remember(self, request_id: str) -> None:
        self.recent_request_ids.append(request_id)
        del self.recent_request_ids[:-16]


def _raise_for(status: int, *, expected: int) -> None:
    if status != expected:
        raise _BadAnswer(f"HTTP {status}")


# --- the run -----------------------------------------------------------------------------------------


async def _create_keys(stack: Stack) -> dict[str, str]:
    """A user key per client loop (rate limits are per key) and an analyst key, all in the dev tenant."""
    roles = {**{f"user{i}": gateway_pb2.ROLE_USER for i in range(7)}, "analyst": gateway_pb2.ROLE_ANALYST}
    async with grpc.aio.insecure_channel(stack.grpc_target) as channel:
        admin = gateway_pb2_grpc.AdminServiceStub(channel)
        keys = {}
        for name, role in roles.items():
            request = gateway_pb2.CreateApiKeyRequest(tenant_id="dev", role=role, name=f"soak {name}")
            reply = await admin.CreateApiKey(request, metadata=_auth(stack.admin_secret()), timeout=10)
            keys[name] = reply.secret
    return keys


async def _sample_rss(stack: Stack, samples: list[tuple[float, dict[str, float]]], until: float) -> None:
    while time.monotonic() < until:
        samples.append((time.monotonic(), stack.rss_mib()))
        await asyncio.sleep(RSS_SAMPLE_S)


async def _kept_image_mib(http: aiohttp.ClientSession, stack: Stack) -> float:
    """The gateway's bounded cache of recent images (inkloop_gateway_kept_image_bytes), in MiB."""
    async with http.get(f"http://127.0.0.1:{stack.metrics_base}/metrics") as reply:
        text = await reply.text()
    [value] = [line.split()[-1] for line in text.splitlines() if line.startswith("inkloop_gateway_kept_image_bytes ")]
    return float(value) / 2**20


async def run_load(
    stack: Stack, seconds: float, warmup_s: float
) -> tuple[Load, float, dict[str, dict[str, float]], dict[str, float]]:
    """Runs every loop for `warmup_s` + `seconds`; returns them, the elapsed time, the RSS snapshots and the
    gateway's kept-image MiB at the start and the end of the measured part."""
    keys = await _create_keys(stack)
    rss = {"idle": stack.rss_mib()}
    kept: dict[str, float] = {}
    rng = random.Random(12)
    cached_task = _task("the soak's cached request", 7)
    async with (
        grpc.aio.insecure_channel(stack.grpc_target) as channel,
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http,
    ):
        began = time.monotonic()
        load = Load(stack, channel, http, began + warmup_s + seconds)
        # The cached request runs once on inference first, so the cache loops hit from their first call.
        prime = gateway_pb2.GenerateRequest(task=cached_task)
        load.tally.job_ended(await _last_event(load.jobs.Generate(prime, metadata=_auth(keys["user0"]))))
        samples = load.rss_samples
        loops = [
            load.generate(keys["user0"], random.Random(rng.random())),
            load.generate(keys["user1"], random.Random(rng.random())),
            load.submit_and_watch(keys["user2"], random.Random(rng.random())),
            load.submit_and_watch(keys["user3"], random.Random(rng.random())),
            load.cache_hits(keys["user4"], cached_task),
            load.cache_hits(keys["user5"], cached_task),
            load.cancels(keys["user6"], random.Random(rng.random())),
            load.tracker(random.Random(rng.random())),
            load.dashboard(keys["analyst"]),
            _sample_rss(stack, samples, began + warmup_s + seconds),
        ]
        tasks = [asyncio.ensure_future(loop) for loop in loops]
        await asyncio.sleep(warmup_s)
        rss["start"] = stack.rss_mib()
        kept["start"] = await _kept_image_mib(http, stack)
        await asyncio.gather(*tasks)
        elapsed = time.monotonic() - began
        kept["end"] = await _kept_image_mib(http, stack)
    rss["end"] = stack.rss_mib()
    every = [sample for _, sample in samples] + [rss["end"]]
    rss["peak"] = {name: max(sample.get(name, 0.0) for sample in every) for name in SERVICES}
    return load, elapsed, rss, kept


def _last_before(samples: list[tuple[float, dict[str, float]]], moment: float) -> dict[str, float]:
    before = [sample for at, sample in samples if at <= moment]
    return before[-1] if before else samples[0][1]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)]


def report(
    load: Load,
    elapsed: float,
    rss: dict[str, dict[str, float]],
    kept: dict[str, float],
    stack: Stack,
    warmup_s: float,
    baseline_load: float,
) -> None:
    tally = load.tally
    print(f"\n{elapsed:.0f} s of mixed load; cores: {os.cpu_count()} (services and clients share them)")
    print(f"load average (1 min) before the stack started: {baseline_load:.2f}; at the end: {os.getloadavg()[0]:.2f}")
    print(f"{'requests':<18}{'ok':>8}{'per s':>9}{'p50 ms':>10}{'p99 ms':>10}")
    for kind, count in tally.ok.items():
        latencies = tally.latencies[kind]
        p50, p99 = statistics.median(latencies) * 1000, percentile(latencies, 0.99) * 1000
        print(f"{kind:<18}{count:>8}{count / elapsed:>9.2f}{p50:>10.1f}{p99:>10.1f}")
    print(f"{'all':<18}{sum(tally.ok.values()):>8}{sum(tally.ok.values()) / elapsed:>9.2f}")
    windows = 5
    window_s = elapsed / windows
    for label, kinds in (("generations", ("generate", "submit+watch")), ("all requests", tuple(tally.ok))):
        counts = tally.per_window(kinds, load.began, window_s, windows)
        print(f"{label} per {window_s:.0f} s window, first to last: {', '.join(map(str, counts))}")
    print(f"jobs: {dict(sorted(tally.jobs.items()))}")
    print(f"rate-limit refusals: {dict(tally.refused) or 'none'}")
    print("errors by status: " + (", ".join(f"{k} {s}: {n}" for (k, s), n in tally.errors.items()) or "none"))
    print(
        f"\n{'RSS MiB':<12}{'idle':>9}{'start':>9}{'end':>9}{'peak':>9}{'growth':>9}   (start = after {warmup_s:.0f} s)"
    )
    growths = []
    for name in SERVICES:
        start, end = rss["start"].get(name, float("nan")), rss["end"].get(name, float("nan"))
        growth = (end - start) / start * 100
        growths.append(growth)
        row = [rss[moment].get(name, float("nan")) for moment in ("idle", "start", "end", "peak")]
        print(f"{name:<12}" + "".join(f"{value:>9.1f}" for value in row) + f"{growth:>+8.1f}%")
    ends = [load.began + window_s * (index + 1) for index in range(windows)]
    at_ends = [_last_before(load.rss_samples, end) for end in ends]
    for name in SERVICES:
        values = ", ".join(f"{sample.get(name, float('nan')):.1f}" for sample in at_ends)
        print(f"{name} RSS at the end of each window: {values}")
    print(
        f"gateway's kept images (a cache bounded at 16 MiB): {kept['start']:.1f} MiB at the start,"
        f" {kept['end']:.1f} at the end"
    )
    restarts = stack.restarts()
    print("service restarts: " + ("; ".join(restarts) if restarts else "none"))
    clean = not tally.errors and not restarts
    print(f"\ngoal: no error but rate-limit refusals: {'met' if clean else 'NOT met'}")
    print(f"goal: RSS growth under 10%: {'met' if max(growths) < 10 else 'NOT met'} (largest {max(growths):+.1f}%)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=600.0, help="how long the load runs")
    parser.add_argument(
        "--warmup", type=float, default=30.0, help="seconds of load before the measured --seconds (the start RSS)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (data and up.log) and print its path")
    args = parser.parse_args()
    # Work already running on the machine (other than this soak) slows everything the figures measure.
    baseline_load = os.getloadavg()[0]
    directory = Path(tempfile.mkdtemp(prefix="inkloop-soak-"))
    stack = Stack(directory)
    try:
        started = time.monotonic()
        stack.wait_ready()
        print(
            f"inkloop up SERVING after {time.monotonic() - started:.0f} s; load for {args.warmup:.0f} s of warm-up,"
            f" then {args.seconds:.0f} s measured"
        )
        load, elapsed, rss, kept = asyncio.run(run_load(stack, args.seconds, args.warmup))
        report(load, elapsed, rss, kept, stack, args.warmup, baseline_load)
    finally:
        code = stack.stop()
        print(f"inkloop up stopped with code {code}")
        if args.keep:
            print(f"kept {directory}")
        else:
            shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
