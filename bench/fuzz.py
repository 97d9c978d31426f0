"""The fuzz cases of tests/fuzz by the ten thousand, against the three services as real processes.

    .venv/bin/python bench/fuzz.py [--cases 10000] [--concurrency 8] [--timeout-s 180]

Starts `inkloop serve inference` (tiny model), `inkloop serve analytics` (a private clickhouse-server,
Debian's 18.16, fresh database) and `inkloop serve gateway` on free ports, with the gateway's rate
limits raised out of the way. Hypothesis draws the cases (random and mutated-valid requests built
from the protobuf descriptors, for every RPC and every gateway HTTP endpoint, spread evenly), then
they run with `--concurrency` in flight. Prints the number of cases, cases/s, the status histogram
per server, seconds per case (and the slowest cases), every fault (an answer no client can cause:
INTERNAL, UNKNOWN, UNAVAILABLE, DEADLINE_EXCEEDED, a job failed INTERNAL, HTTP 5xx) with its case,
the jobs that ended with such a code or never ended, and whether each service is still SERVING.
Exits 1 on any fault.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from fuzz.cases import (
    HTTP_TARGETS,
    Fuzzer,
    GrpcCase,
    HttpCase,
    Outcome,
    Stack,
    draw_grpc_case,
    draw_http_case,
    methods,
    run_all,
    seed,
    server_of,
)
from fuzz.valid import TENANT, Context
from gateway_cache import wait_serving  # type: ignore[import-not-found]

from harness import free_ports, terminate
from harness.clickhouse import ClickHouseServer, database_url, fresh_database
from inkloop_gateway.admission.keys import KeyStore, Role

Case = GrpcCase | HttpCase
_RAISED_LIMITS = {
    "rate-key-requests-per-s": "1e9",
    "rate-key-requests-burst": "1e9",
    "rate-tenant-requests-per-s": "1e9",
    "rate-tenant-requests-burst": "1e9",
    "rate-tenant-cost-per-s": "1e12",
    "rate-tenant-cost-burst": "1e12",
}


def _serve(service: str, data_dir: Path, port: int, metrics_port: int, *flags: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, f"INKLOOP_{service.upper()}_LOG_LEVEL": "error"}
    command = [sys.executable, "-m", "inkloop_cli", "serve", service, "--port", str(port)]
    command += ["--metrics-port", str(metrics_port), "--data-dir", str(data_dir / service), *flags]
    return subprocess.Popen(command, env=env)


def _keys(data_dir: Path) -> dict[str, str]:
    store = KeyStore(data_dir / "gateway" / "keys.db")
    secrets = {role.value: store.create(TENANT, role, f"fuzz {role.value}")[1] for role in Role}
    secrets["other"] = store.create("globex", Role.USER, "another tenant")[1]
    store.close()
    return secrets


def start(data_dir: Path, clickhouse_url: str) -> tuple[list[subprocess.Popen[bytes]], Stack, dict[str, str]]:
    inference, analytics, gateway, http, *metrics = free_ports(7)
    processes = [
        _serve("inference", data_dir, inference, metrics[0], "--max-queue-delay-ms", "0"),
        _serve("analytics", data_dir, analytics, metrics[1], "--clickhouse-url", clickhouse_url),
    ]
    secrets = _keys(data_dir)
    flags = [f"--{name}={value}" for name, value in _RAISED_LIMITS.items()]
    processes.append(
        _serve(
            "gateway",
            data_dir,
            gateway,
            metrics[2],
            f"--http-port={http}",
            f"--inference-target=127.0.0.1:{inference}",
            f"--analytics-target=127.0.0.1:{analytics}",
            *flags,
        )
    )
    addresses = {"inference": inference, "analytics": analytics, "gateway": gateway}
    for port in addresses.values():
        wait_serving(f"127.0.0.1:{port}")
    stack = Stack({name: f"127.0.0.1:{port}" for name, port in addresses.items()}, f"http://127.0.0.1:{http}")
    return processes, stack, secrets


def _draw(target: str, count: int, ctx: Context) -> list[Case]:
    """About `count` cases of one RPC (a method's full name) or HTTP target, drawn by hypothesis."""
    drawn: list[Case] = []
    method = next((m for m in methods() if m.full_name == target), None)

    @settings(
        max_examples=count,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(data=st.data())
    def collect(data: st.DataObject) -> None:
        drawn.append(draw_grpc_case(data, method, ctx) if method else draw_http_case(data, target, ctx))

    # Hypothesis stops early once it runs out of new inputs (a request type with no fields): then
    # the cases it found are repeated, since a repeat is still a call the servers must answer.
    collect()
    return [drawn[i % len(drawn)] for i in range(count)]


def draw_cases(total: int, ctx: Context) -> list[Case]:
    targets = [m.full_name for m in methods()] + sorted(HTTP_TARGETS)
    per_target = -(-total // len(targets))
    cases = [case for target in targets for case in _draw(target, per_target, ctx)]
    # Interleaved, so slow cases (jobs on the tiny model) are spread over the run.
    return [cases[i] for i in sorted(range(len(cases)), key=lambda i: (i % per_target, i))]


def _where(case: Case) -> str:
    return f"http:{case.target}" if isinstance(case, HttpCase) else server_of(case.method)


def report(
    cases: list[Case], outcomes: list[Outcome], elapsed_s: float, failed_jobs: list[str], not_serving: list[str]
) -> int:
    print(f"cases: {len(cases)} in {elapsed_s:.1f} s ({len(cases) / elapsed_s:.0f} cases/s)")
    by_server: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for case, outcome in zip(cases, outcomes, strict=True):
        by_server[_where(case)][outcome.label] += 1
    for server, counts in sorted(by_server.items()):
        histogram = ", ".join(f"{label} {count}" for label, count in counts.most_common())
        print(f"  {server:18} {sum(counts.values()):6}  {histogram}")
    seconds = sorted(outcome.seconds for outcome in outcomes)
    print(
        f"seconds per case: p50 {seconds[len(seconds) // 2]:.3f}, p99 {seconds[int(len(seconds) * 0.99)]:.3f}, "
        f"max {seconds[-1]:.1f}"
    )
    for case, outcome in sorted(zip(cases, outcomes, strict=True), key=lambda pair: -pair[1].seconds)[:3]:
        print(f"  {outcome.seconds:6.1f} s  {outcome.label}  {str(case)[:300]}")
    faults = [(case, outcome) for case, outcome in zip(cases, outcomes, strict=True) if outcome.fault]
    print(f"faults: {len(faults)}")
    for case, outcome in faults[:20]:
        print(f"  {outcome.label}: {outcome.detail[:200]}\n    {str(case)[:600]}")
    print(f"jobs that ended with a server fault or never ended: {len(failed_jobs)}")
    for job in failed_jobs[:20]:
        print(f"  {job}")
    print("every service SERVING afterwards" if not not_serving else f"NOT SERVING afterwards: {not_serving}")
    return 1 if faults or failed_jobs or not_serving else 0


async def fuzz(stack: Stack, secrets: dict[str, str], args: argparse.Namespace) -> int:
    ctx = Context(secrets=secrets, inference_target=stack.grpc["inference"])
    fuzzer = Fuzzer(stack, ctx, timeout_s=args.timeout_s)
    try:
        await seed(fuzzer)
        began = time.perf_counter()
        cases = draw_cases(args.cases, ctx)
        print(f"drew {len(cases)} cases in {time.perf_counter() - began:.1f} s")
        began = time.perf_counter()
        outcomes = await run_all(fuzzer, cases, args.concurrency)
        elapsed = time.perf_counter() - began
        return report(cases, outcomes, elapsed, await fuzzer.failed_jobs(), await fuzzer.not_serving())
    finally:
        await fuzzer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument(
        "--timeout-s",
        type=float,
        default=180.0,
        help="deadline of each call; with every core busy a tiny generation can wait behind a dozen others",
    )
    args = parser.parse_args()
    print(f"cores: {os.cpu_count()}; the services, ClickHouse and the fuzzer share them")
    with tempfile.TemporaryDirectory(prefix="bench-fuzz-") as directory, ExitStack() as stack:
        clickhouse = stack.enter_context(ClickHouseServer(Path(directory) / "clickhouse"))
        database = stack.enter_context(fresh_database(clickhouse.url))
        processes, addresses, secrets = start(Path(directory), database_url(clickhouse.url, database.database))
        try:
            code = asyncio.run(fuzz(addresses, secrets, args))
        finally:
            for process in processes:
                terminate(process)
    sys.exit(code)


if __name__ == "__main__":
    main()
