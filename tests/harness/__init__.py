"""Real ClickHouse and Redis servers for tests, each private to one test session (or xdist worker).

Tests never mock these: `ClickHouseServer` runs Debian's clickhouse-server 18.16 and `RedisServer`
runs redis-server 7, each on free ports with all state in a temporary directory. Both can be
stopped and started again on the same ports and data, which is how outage handling is tested.

The servers live in `harness.clickhouse` and `harness.redis`; this module holds what they share.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Self

INSTALL_HINT = "install the test dependencies with the test command in README.md, then run the tests again"


class HarnessError(RuntimeError):
    """A test server could not be started; tests that need it must fail, never skip."""


def require_binary(path: str) -> str:
    if not os.access(path, os.X_OK):
        raise HarnessError(f"{path} is missing: {INSTALL_HINT}")
    return path


def free_ports(count: int) -> list[int]:
    """Distinct ports nothing listens on now; the kernel picks them so parallel workers don't collide."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in sockets:  # all bound at once, so the kernel cannot hand out one port twice
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def terminate(process: subprocess.Popen[bytes], grace_s: float = 15.0) -> None:
    """SIGTERM for a clean shutdown (flushes data), SIGKILL if the process hangs."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def log_tail(*paths: Path, lines: int = 40) -> str:
    """The end of each log that exists, for failure messages."""
    parts = []
    for path in paths:
        if path.exists():
            text = path.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"--- {path} ---\n" + "\n".join(text))
    return "\n".join(parts) or "(no log written)"


class ServerProcess(ABC):
    """Start/stop/restart of one server process whose ports and data directory outlive restarts.

    Subclasses say how to launch the server (`command`), how to tell it is ready (`answers`) and
    which logs explain a failure (`logs`).
    """

    name = "server"
    startup_timeout_s = 30.0

    def __init__(self, base_dir: Path | None = None) -> None:
        # A directory we made is ours to delete on exit; one handed in (pytest's tmp_path) is not.
        self._owns_base_dir = base_dir is None
        self.base_dir = Path(tempfile.mkdtemp(prefix=f"inkloop-{self.name}-")) if base_dir is None else base_dir
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self._process: subprocess.Popen[bytes] | None = None

    @abstractmethod
    def command(self) -> list[str]: ...

    @abstractmethod
    def answers(self) -> bool:
        """One readiness probe; False (not an exception) while the server is still coming up."""

    def logs(self) -> list[Path]:
        return [self.console_log]

    @property
    def console_log(self) -> Path:
        return self.base_dir / f"{self.name}.console.log"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int:
        assert self._process is not None, f"{self.name} is not running"
        return self._process.pid

    @property
    def exited_by_itself(self) -> bool:
        """It was started and has ended, neither stopped nor killed by the harness (a crash)."""
        return self._process is not None and self._process.poll() is not None

    def start(self) -> None:
        if self.running:
            return
        with self.console_log.open("ab") as console:
            self._process = subprocess.Popen(
                self.command(),
                stdout=console,
                stderr=subprocess.STDOUT,
                cwd=self.base_dir,
                # Its own process group, so Ctrl-C in pytest does not kill it before teardown runs.
                start_new_session=True,
            )
        self._wait_until_ready()

    def stop(self) -> None:
        if self._process is not None:
            terminate(self._process)
            self._process = None

    def kill(self) -> None:
        """SIGKILL, as a crash or an OOM kill would end it: nothing is flushed or closed."""
        if self._process is not None:
            if self._process.poll() is None:
                self._process.kill()
            self._process.wait()
            self._process = None

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                raise HarnessError(
                    f"{self.name} exited with status {self._process.returncode} while starting\n"
                    + log_tail(*self.logs())
                )
            if self.answers():
                return
            time.sleep(0.05)
        self.stop()
        raise HarnessError(
            f"{self.name} did not answer within {self.startup_timeout_s:.0f} s\n" + log_tail(*self.logs())
        )

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
        if self._owns_base_dir:
            shutil.rmtree(self.base_dir, ignore_errors=True)
