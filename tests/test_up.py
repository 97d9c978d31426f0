"""`inkloop up` end to end: three healthy services seen through grpcurl, the web port, the dev key,
and nothing left behind after Ctrl-C."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import pytest

GRPCURL = str(Path(sys.executable).parent / "grpcurl")
INKLOOP = str(Path(sys.executable).parent / "inkloop")


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _grpcurl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([GRPCURL, "-plaintext", *args], capture_output=True, text=True, timeout=30)


def _children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


class System:
    """`inkloop up` on free ports in a temp dir, its console in `log`; `args` and `env` add to its command."""

    def __init__(self, tmp_path: Path, args: Sequence[str] = (), env: Mapping[str, str] | None = None) -> None:
        self.gateway, self.inference, self.analytics, self.http, metrics = _free_ports(5)
        self.metrics_base = metrics
        self.data_dir = tmp_path / "var"
        self.log = tmp_path / "up.log"
        # Metrics ports are base, base+1, base+2: make sure the two above are free too.
        self.process = subprocess.Popen(
            [
                INKLOOP,
                "up",
                "--data-dir",
                str(self.data_dir),
                "--gateway-port",
                str(self.gateway),
                "--inference-port",
                str(self.inference),
                "--analytics-port",
                str(self.analytics),
                "--http-port",
                str(self.http),
                "--metrics-port-base",
                str(self.metrics_base),
                "--log-format",
                "json",
                *args,
            ],
            stdout=self.log.open("w"),
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
            env={**os.environ, "COLUMNS": "200", **(env or {})},
        )

    def wait_ready(self, timeout_s: float = 180) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if "Ctrl-C stops everything" in self.log.read_text():
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.2)
        raise AssertionError(f"inkloop up did not come up:\n{self.log.read_text()[-3000:]}")


@contextlib.contextmanager
def running_system(directory: Path, args: Sequence[str] = (), env: Mapping[str, str] | None = None) -> Iterator[System]:
    """`inkloop up` in `directory`, ready, until the block ends (then killed if it still runs)."""
    running = System(directory, args=args, env=env)
    try:
        running.wait_ready()
        yield running
    finally:
        if running.process.poll() is None:
            running.process.kill()


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    with running_system(tmp_path_factory.mktemp("up")) as running:
        yield running


@pytest.mark.slow
@pytest.mark.parametrize(
    ("port_name", "service"),
    [
        ("gateway", "inkloop.v1.GatewayService"),
        ("inference", "inkloop.v1.InferenceService"),
        ("analytics", "inkloop.v1.AnalyticsService"),
    ],
)
def test_each_service_is_serving_and_listed_by_reflection(system: System, port_name: str, service: str) -> None:
    address = f"127.0.0.1:{getattr(system, port_name)}"
    health = _grpcurl(address, "grpc.health.v1.Health/Check")
    assert json.loads(health.stdout) == {"status": "SERVING"}, health.stderr
    named = _grpcurl("-d", json.dumps({"service": service}), address, "grpc.health.v1.Health/Check")
    assert json.loads(named.stdout) == {"status": "SERVING"}, named.stderr
    listed = _grpcurl(address, "list").stdout.split()
    assert service in listed and "grpc.health.v1.Health" in listed


@pytest.mark.slow
def test_web_port_and_metrics_answer(system: System) -> None:
    with urllib.request.urlopen(f"http://127.0.0.1:{system.http}/healthz", timeout=5) as reply:
        assert json.load(reply) == {"status": "ok"}
    with urllib.request.urlopen(f"http://127.0.0.1:{system.http}/", timeout=5) as reply:
        page = reply.read().decode()
        assert "<title>inkloop" in page and 'src="/hm.js"' in page
    with urllib.request.urlopen(f"http://127.0.0.1:{system.metrics_base}/metrics", timeout=5) as reply:
        assert 'inkloop_ready{service="inkloop.v1.GatewayService"} 1.0' in reply.read().decode()


@pytest.mark.slow
def test_dev_key_is_printed_and_stored(system: System) -> None:
    secret = (system.data_dir / "dev-api-key").read_text().strip()
    assert secret.startswith("ink_")
    assert secret in system.log.read_text()


@pytest.mark.slow
def test_service_logs_are_json_with_request_ids(system: System) -> None:
    _grpcurl("-H", "x-request-id: trace-me-42", f"127.0.0.1:{system.inference}", "grpc.health.v1.Health/Check")
    time.sleep(0.5)
    records = [json.loads(line) for line in system.log.read_text().splitlines() if line.startswith("{")]
    assert {r["service"] for r in records} >= {"gateway", "inference", "analytics"}
    assert all({"time", "level", "message", "request_id"} <= r.keys() for r in records)


def _cli(system: System, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "INKLOOP_GATEWAY": f"127.0.0.1:{system.gateway}",
        "INKLOOP_ANALYTICS": f"127.0.0.1:{system.analytics}",
        "INKLOOP_DATA_DIR": str(system.data_dir),
    }
    return subprocess.run([INKLOOP, *args], capture_output=True, text=True, timeout=120, env=env)


@pytest.mark.slow
def test_generate_through_the_whole_system_writes_the_image(system: System, tmp_path: Path) -> None:
    output = tmp_path / "fox.png"
    result = _cli(
        system,
        "generate",
        "一只狐狸 a fox",
        "-o",
        str(output),
        "--seed",
        "4",
        "--steps",
        "3",
        "--width",
        "64",
        "--height",
        "64",
    )
    assert result.returncode == 0, result.stderr
    assert output.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "seed 4" in result.stderr


@pytest.mark.slow
def test_cli_errors_name_the_status_and_field(system: System, tmp_path: Path) -> None:
    result = _cli(system, "generate", "a fox", "-o", str(tmp_path / "x.png"), "--width", "100")
    assert result.returncode == 1
    assert "INVALID_ARGUMENT" in result.stderr and "width" in result.stderr


@pytest.mark.slow
def test_analytics_cli_answers_with_json(system: System) -> None:
    result = _cli(system, "analytics", "variants", "--json")
    assert result.returncode == 0, result.stderr
    assert isinstance(json.loads(result.stdout), (dict, list))


@pytest.mark.slow
def test_ctrl_c_stops_everything(system: System) -> None:
    children = _children_of(system.process.pid)
    assert len(children) == 3
    system.process.send_signal(signal.SIGINT)
    assert system.process.wait(timeout=60) == 0
    assert all(not Path(f"/proc/{pid}").exists() for pid in children), "a service outlived inkloop up"
    for port in (system.gateway, system.inference, system.analytics, system.http):
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still open"
    assert "stopped" in system.log.read_text()
