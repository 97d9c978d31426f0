"""`inkloop up`: the whole system on one machine, each service in its own process.

The supervisor starts analytics and inference, then the gateway, waits until each reports SERVING on
grpc.health.v1, and on Ctrl-C (or SIGTERM) stops the gateway first, then the rest, each with a
graceful drain. Children run in their own session, so the terminal's Ctrl-C reaches only the
supervisor and the shutdown order holds; and they die with it if it is killed outright.
"""

from __future__ import annotations

import ctypes
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import typer
from grpc_health.v1 import health_pb2, health_pb2_grpc
from rich.console import Console
from rich.table import Table

console = Console(stderr=True)

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Runs in the child before exec: SIGTERM it when the supervisor dies, however it dies."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class Child:
    name: str
    grpc_address: str
    metrics_port: int
    args: list[str]
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [sys.executable, "-m", "inkloop", "serve", self.name, *self.args]
        self.process = subprocess.Popen(
            command, start_new_session=True, preexec_fn=_die_with_parent, env={**os.environ, **self.env}
        )

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
            self.process.kill()
            self.process.wait()


class _Stop(Exception):
    pass


def _raise_stop(_signum: int, _frame: object) -> None:
    # Only the first signal interrupts; later ones must not cut the drain short.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)
    raise _Stop


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
    log_format: str = typer.Option("text", help="Log format of the services: text or json."),
    start_timeout: float = typer.Option(600, help="Seconds each service may take to become SERVING."),
) -> None:
    """Run the whole system on this machine with embedded defaults; Ctrl-C stops all of it."""
    from inkloop_gateway.keys import ensure_dev_key, ensure_page_key, key_store_from_settings
    from inkloop_gateway.settings import GatewaySettings

    data_dir = data_dir.resolve()
    common = ["--host", host, "--log-format", log_format]
    inference_args = [
        *common,
        "--port",
        str(inference_port),
        "--metrics-port",
        str(metrics_port_base + 1),
        "--data-dir",
        str(data_dir / "inference"),
        "--model",
        model,
    ]
    if model_path is not None:
        inference_args += ["--model-path", str(model_path)]
    gateway_data = data_dir / "gateway"
    page_key_file = gateway_data / "web-page-key"
    # One prompt-hash salt for both services, so front-end and back-end hashes of a prompt match; passed
    # in the environment, not on command lines that `ps` shows.
    salt = _stored_secret(data_dir / "prompt-hash-salt")
    children = [
        Child(
            "analytics",
            f"{host}:{analytics_port}",
            metrics_port_base + 2,
            [
                *common,
                "--port",
                str(analytics_port),
                "--metrics-port",
                str(metrics_port_base + 2),
                "--data-dir",
                str(data_dir / "analytics"),
            ],
            {"INKLOOP_ANALYTICS_PRIVACY_SALT": salt},
        ),
        Child("inference", f"{host}:{inference_port}", metrics_port_base + 1, inference_args),
        Child(
            "gateway",
            f"{host}:{gateway_port}",
            metrics_port_base,
            [
                *common,
                "--port",
                str(gateway_port),
                "--metrics-port",
                str(metrics_port_base),
                "--http-port",
                str(http_port),
                "--data-dir",
                str(gateway_data),
                "--inference-target",
                f"{host}:{inference_port}",
                "--analytics-target",
                f"{host}:{analytics_port}",
                # The local page works at once: a user-role key of the dev tenant, never an admin one.
                "--web-page-key-file",
                str(page_key_file),
            ],
            {"INKLOOP_GATEWAY_PROMPT_HASH_SALT": salt},
        ),
    ]

    # The store the gateway will use (its Redis when INKLOOP_GATEWAY_REDIS_URL is set).
    store = key_store_from_settings(GatewaySettings(data_dir=gateway_data))
    secret, created = ensure_dev_key(store, data_dir)
    ensure_page_key(store, page_key_file)
    store.close()

    previous = {s: signal.signal(s, _raise_stop) for s in (signal.SIGINT, signal.SIGTERM)}
    exit_code = 0
    try:
        for child in children:
            child.start()
        _wait_until_serving(children, start_timeout)
        _print_summary(children, host, http_port, data_dir, secret, created)
        while all(child.exited() is None for child in children):
            time.sleep(0.5)
        crashed = next(child for child in children if child.exited() is not None)
        console.print(f"[red]{crashed.name} exited with code {crashed.exited()}; stopping the rest[/]")
        exit_code = 1
    except _Stop:
        console.print("stopping…")
    except RuntimeError as error:
        console.print(f"[red]{error}[/]")
        exit_code = 1
    finally:
        for signum in previous:
            signal.signal(signum, signal.SIG_IGN)
        # Gateway first so no new work reaches the others while they drain.
        for child in reversed(children):
            child.terminate()
            child.wait(timeout_s=30)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    raise typer.Exit(exit_code)


def _stored_secret(path: Path) -> str:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(secrets.token_hex(16))
    return path.read_text().strip()


def _wait_until_serving(children: list[Child], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    pending = list(children)
    with console.status("starting services…") as status:
        while pending:
            for child in list(pending):
                code = child.exited()
                if code is not None:
                    raise RuntimeError(f"{child.name} exited with code {code} while starting")
                if child.health() == "SERVING":
                    pending.remove(child)
            if time.monotonic() > deadline:
                names = ", ".join(child.name for child in pending)
                raise RuntimeError(f"not SERVING after {timeout_s:.0f} s: {names}")
            status.update(f"starting services… waiting for {', '.join(child.name for child in pending)}")
            time.sleep(0.2)


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
    console.print("Ctrl-C stops everything.")
