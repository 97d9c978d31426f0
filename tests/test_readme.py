"""The README's quick start, run as a new user would: its commands, read from the README and run
verbatim, against a real `./dev up` on the default ports.

The quick start's first block is `./dev up` (started here, in a copy of the checkout whose entries
are links to this one, so `var/` is the test's own) and `./dev test` (the command running this very
test, so it is only checked to be there); every line of the block after it must exit 0.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
#: Ports `inkloop up` uses by default: gateway, inference, analytics, web, metrics.
DEFAULT_PORTS = (50051, 50052, 50053, 8080, 9091, 9092, 9093)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def quick_start_blocks(readme: str) -> list[list[str]]:
    """The command lines of each ```sh block in the README's "Quick start" section."""
    section = readme.split("\n## Quick start", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, flags=re.DOTALL)
    return [[line for line in block.splitlines() if line.strip()] for block in blocks]


def test_the_quick_start_is_two_commands_then_client_commands() -> None:
    setup, clients = quick_start_blocks((ROOT / "README.md").read_text(encoding="utf-8"))
    assert [line.split("#")[0].strip() for line in setup] == ["./dev up", "./dev test"]
    assert clients and all(line.startswith(".venv/bin/") for line in clients)


def _busy(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def checkout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkout made of links to this one, but with a `var/` of its own."""
    copy = tmp_path_factory.mktemp("readme")
    for entry in ROOT.iterdir():
        if entry.name not in {"var", ".git"}:
            (copy / entry.name).symlink_to(entry)
    return copy


@pytest.fixture(scope="module")
def dev_up(checkout: Path) -> Iterator[Path]:
    busy = [port for port in DEFAULT_PORTS if _busy(port)]
    assert not busy, f"ports {busy} are in use: stop any running `inkloop up` before the README test"
    [setup, _clients] = quick_start_blocks((checkout / "README.md").read_text(encoding="utf-8"))
    log = checkout / "dev-up.log"
    process = subprocess.Popen(
        ["bash", "-c", setup[0]],
        cwd=checkout,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        env={**os.environ, "COLUMNS": "200"},
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 420
        while "Ctrl-C stops everything" not in log.read_text():
            assert process.poll() is None, f"./dev up exited:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"./dev up did not come up:\n{log.read_text()[-3000:]}"
            time.sleep(0.5)
        yield checkout
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)


def test_every_client_command_of_the_quick_start_works_as_written(dev_up: Path) -> None:
    [_setup, clients] = quick_start_blocks((dev_up / "README.md").read_text(encoding="utf-8"))
    env = {name: value for name, value in os.environ.items() if not name.startswith("INKLOOP_")}
    for line in clients:
        result = subprocess.run(["bash", "-c", line], cwd=dev_up, capture_output=True, text=True, timeout=240, env=env)
        assert result.returncode == 0, f"{line}\nexited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    assert (dev_up / "fox.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (dev_up / "wide.png").exists()
    assert Image.open(dev_up / "snow.png").size == Image.open(dev_up / "fox.png").size  # the edit keeps the size
    for language in ("zh", "en"):
        assert (dev_up / f"cover-{language}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        sidecar = json.loads((dev_up / f"cover-{language}.json").read_text(encoding="utf-8"))
        assert sidecar["language"] == language and sidecar["job_id"] and sidecar["prompt"]


def python_client_snippet(readme: str) -> str:
    """The ```python block of the README's "Python client" section."""
    section = readme.split("\n### Python client", 1)[1].split("\n## ", 1)[0]
    [snippet] = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)
    return snippet


def test_the_python_client_snippet_works_as_written(dev_up: Path) -> None:
    snippet = python_client_snippet((dev_up / "README.md").read_text(encoding="utf-8"))
    env = {name: value for name, value in os.environ.items() if not name.startswith("INKLOOP_")}
    result = subprocess.run(
        [".venv/bin/python", "-c", snippet], cwd=dev_up, capture_output=True, text=True, timeout=240, env=env
    )
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    assert (dev_up / "boat.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (dev_up / "lighthouse.png").exists()
