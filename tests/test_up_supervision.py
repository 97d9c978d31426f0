"""`inkloop up` keeps the stack up: a service that dies is restarted with a backoff that doubles up to
a cap and resets once it has served for a while, the console says so, queued jobs survive a gateway
crash, and Ctrl-C still stops everything (restarted services included)."""

from __future__ import annotations

import os
import re
import signal
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from test_up import System, _children_of, _cli, running_system

from inkloop.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc

#: Short delays so restarts happen within a test; the reset must outlast a kill right after a restart.
FAST_RESTARTS = ("--restart-delay", "0.5", "--restart-max-delay", "8", "--restart-reset-after", "6")
#: Many jobs from one key in a second, run in batched matrix products: neither rate limits nor
#: byte-identical batching is what these tests are about, and both would only slow them down.
FAST_JOBS = {
    **{
        f"INKLOOP_GATEWAY_RATE_{scope}_REQUESTS_{kind}": "10000"
        for scope in ("KEY", "TENANT")
        for kind in ("PER_S", "BURST")
    },
    "INKLOOP_INFERENCE_BATCH_INVARIANT": "false",
}
TERMINAL = {gateway_pb2.JOB_STATE_SUCCEEDED, gateway_pb2.JOB_STATE_FAILED, gateway_pb2.JOB_STATE_CANCELLED}


def _eventually(check: Callable[[], bool], what: str, system: System, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    raise AssertionError(f"not within {timeout_s:.0f} s: {what}\n{_console(system)[-3000:]}")


def _console(system: System) -> str:
    """What `inkloop up` itself printed (the services' JSON log lines left out)."""
    return "\n".join(line for line in system.log.read_text().splitlines() if not line.startswith("{"))


def _service_pids(system: System) -> dict[str, int]:
    """Service name -> pid of the running `inkloop serve NAME` children of `inkloop up`."""
    pids = {}
    for pid in _children_of(system.process.pid):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"serve" in argv:  # not yet exec'd children still show the supervisor's command line
            pids[argv[argv.index(b"serve") + 1].decode()] = pid
    return pids


def _serving(address: str) -> bool:
    with grpc.insecure_channel(address) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
        except grpc.RpcError:
            return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING


def _kill_and_wait_for_restart(system: System, name: str) -> int:
    """SIGKILLs one service and waits until a new process of it is SERVING and `inkloop up` has said
    so; returns the new pid."""
    old = _service_pids(system)[name]
    announced = _console(system).count(f"{name} is SERVING again")
    os.kill(old, signal.SIGKILL)
    address = f"127.0.0.1:{getattr(system, name)}"

    def back() -> bool:
        pid = _service_pids(system).get(name)
        said = _console(system).count(f"{name} is SERVING again") > announced
        return said and pid not in (None, old) and _serving(address)

    _eventually(back, f"{name} restarted and SERVING", system)
    return _service_pids(system)[name]


def _restart_delays(system: System, name: str) -> list[float]:
    found = re.findall(rf"{name} exited with code .*?; restarting it in ([0-9.]+) s", _console(system))
    return [float(delay) for delay in found]


def _ports_closed(system: System) -> None:
    for port in (system.gateway, system.inference, system.analytics, system.http):
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still open"


def _stop_and_check_nothing_left(system: System) -> None:
    children = _children_of(system.process.pid)
    system.process.send_signal(signal.SIGINT)
    assert system.process.wait(timeout=60) == 0
    assert all(not Path(f"/proc/{pid}").exists() for pid in children), "a service outlived inkloop up"
    _ports_closed(system)


@pytest.mark.slow
def test_a_service_crashing_at_start_is_restarted_with_capped_backoff(tmp_path: Path) -> None:
    # An invalid setting makes analytics exit at every start, before it opens anything.
    crashing = System(
        tmp_path,
        args=("--restart-delay", "0.2", "--restart-max-delay", "0.4"),
        env={"INKLOOP_ANALYTICS_BATCH_ROWS": "0"},
    )
    try:
        _eventually(lambda: len(_restart_delays(crashing, "analytics")) >= 3, "three restarts", crashing)
        assert _restart_delays(crashing, "analytics")[:3] == [0.2, 0.4, 0.4]
        assert "analytics exited with code 1; restarting it in 0.2 s" in _console(crashing)
        assert "analytics started again (restart 2)" in _console(crashing)
        assert crashing.process.poll() is None, "inkloop up gave up"
        _stop_and_check_nothing_left(crashing)
    finally:
        if crashing.process.poll() is None:
            crashing.process.kill()


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    with running_system(tmp_path_factory.mktemp("up-supervised"), args=FAST_RESTARTS, env=FAST_JOBS) as running:
        yield running


@pytest.mark.slow
def test_killed_inference_is_restarted_and_generations_work_again(system: System, tmp_path: Path) -> None:
    others = {name: pid for name, pid in _service_pids(system).items() if name != "inference"}
    _kill_and_wait_for_restart(system, "inference")
    console = _console(system)
    assert "inference exited with code -9 (SIGKILL); restarting it in 0.5 s" in console
    assert "inference is SERVING again (restart 1)" in console
    assert {name: pid for name, pid in _service_pids(system).items() if name != "inference"} == others

    output = tmp_path / "after.png"
    args = ("--seed", "5", "--steps", "2", "--width", "64", "--height", "64")
    result = _cli(system, "generate", "a lighthouse at dusk", "-o", str(output), *args)
    assert result.returncode == 0, result.stderr
    assert output.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_restart_delay_doubles_on_repeated_crashes_and_resets_after_serving(system: System) -> None:
    start = len(_restart_delays(system, "analytics"))
    _kill_and_wait_for_restart(system, "analytics")
    _kill_and_wait_for_restart(system, "analytics")  # at once: still the same run of failures
    time.sleep(6.5)  # SERVING longer than --restart-reset-after
    _kill_and_wait_for_restart(system, "analytics")
    assert _restart_delays(system, "analytics")[start:] == [0.5, 1.0, 0.5]


def _job_states(
    stub: gateway_pb2_grpc.GatewayServiceStub, auth: tuple[tuple[str, str], ...], job_ids: list[str]
) -> list[int]:
    """The state of each job, UNSPECIFIED while the gateway does not answer; one call, not one per job,
    so polling does not take the CPU the jobs need."""
    try:
        listed = stub.ListJobs(gateway_pb2.ListJobsRequest(page_size=100), metadata=auth, timeout=5).jobs
    except grpc.RpcError:
        listed = []
    states = {job.job_id: job.state for job in listed}
    return [states.get(job_id, gateway_pb2.JOB_STATE_UNSPECIFIED) for job_id in job_ids]


def _submit_small_jobs(
    stub: gateway_pb2_grpc.GatewayServiceStub, auth: tuple[tuple[str, str], ...], count: int
) -> list[str]:
    job_ids = []
    for seed in range(1, count + 1):  # distinct seeds: no cache hits, every job needs inference
        parameters = common_pb2.GenerationParameters(
            prompt="a paper boat", width=64, height=64, steps=2, true_cfg_scale=1.0, seed=seed
        )
        task = common_pb2.GenerationTask(text_to_image=common_pb2.TextToImageRequest(parameters=parameters))
        reply = stub.SubmitJob(gateway_pb2.SubmitJobRequest(task=task), metadata=auth, timeout=10)
        job_ids.append(reply.job.job_id)
    return job_ids


@pytest.mark.slow
def test_killed_gateway_is_restarted_and_every_queued_job_succeeds(system: System) -> None:
    auth = (("authorization", f"Bearer {(system.data_dir / 'dev-api-key').read_text().strip()}"),)
    with grpc.insecure_channel(f"127.0.0.1:{system.gateway}") as channel:
        stub = gateway_pb2_grpc.GatewayServiceStub(channel)
        job_ids = _submit_small_jobs(stub, auth, 30)
        queued = _job_states(stub, auth, job_ids).count(gateway_pb2.JOB_STATE_QUEUED)
        _kill_and_wait_for_restart(system, "gateway")
        assert "gateway exited with code -9 (SIGKILL)" in _console(system)
        assert queued >= 10, f"only {queued} jobs were still queued when the gateway was killed"

        _eventually(
            lambda: all(state in TERMINAL for state in _job_states(stub, auth, job_ids)), "every job ended", system, 120
        )
        states = _job_states(stub, auth, job_ids)
    names = [gateway_pb2.JobState.Name(state) for state in states]
    assert names == ["JOB_STATE_SUCCEEDED"] * len(job_ids)


@pytest.mark.slow
def test_ctrl_c_after_restarts_stops_every_service(system: System) -> None:
    assert len(_service_pids(system)) == 3
    _stop_and_check_nothing_left(system)
    assert "stopping…" in _console(system)
