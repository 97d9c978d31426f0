"""Back-end events: spooled on disk while analytics is unreachable, then delivered to the real
analytics service (ClickHouse 18.16 server) in order, with their ids, once it is up."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from prometheus_client import REGISTRY

from harness import free_ports
from harness.clickhouse import ClickHouseServer, database_url, fresh_database
from inkloop.rpc.server import start_server
from inkloop.v1 import analytics_pb2, gateway_pb2

from .conftest import Gateway, StartGateway, finished, spooled_events, text_task
from .test_validation import inpaint, png

T = analytics_pb2.BackendEventType


async def _until(condition: Callable[[], bool], timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.1)


async def test_events_wait_on_disk_then_reach_analytics_in_order(
    start_gateway: StartGateway, clickhouse_server: ClickHouseServer, tmp_path: Path
) -> None:
    from inkloop_analytics.server import AnalyticsApp
    from inkloop_analytics.settings import AnalyticsSettings

    [port] = free_ports(1)
    gateway = await start_gateway(analytics_target=f"127.0.0.1:{port}")
    spooled_before = REGISTRY.get_sample_value("inkloop_gateway_events_spooled_total") or 0.0
    sent_before = REGISTRY.get_sample_value("inkloop_gateway_events_sent_total") or 0.0
    job = (
        await gateway.jobs.SubmitJob(
            gateway_pb2.SubmitJobRequest(task=text_task("call me at 13812345678, a cat"), request_id="ev-1"),
            metadata=gateway.auth(),
        )
    ).job
    await finished(gateway, job.job_id)
    with pytest.raises(grpc.aio.AioRpcError):
        await gateway.jobs.SubmitJob(
            gateway_pb2.SubmitJobRequest(task=text_task("child porn"), request_id="ev-2"), metadata=gateway.auth()
        )
    spool = gateway.app.events.spool
    await _until(lambda: len(spooled_events(spool)) >= 5)
    spooled = spooled_events(spool)
    mine = [e for e in spooled if e.request_id == "ev-1"]
    assert [e.type for e in mine] == [
        T.BACKEND_EVENT_TYPE_REQUESTED,
        T.BACKEND_EVENT_TYPE_QUEUED,
        T.BACKEND_EVENT_TYPE_STARTED,
        T.BACKEND_EVENT_TYPE_SUCCEEDED,
    ]
    assert all(e.job_id == job.job_id and e.variant == "default" and e.tenant_id == "acme" for e in mine)
    assert mine[-1].latency_s > 0 and mine[0].width == 64 and mine[0].steps == 2 and mine[0].seed > 0
    assert mine[0].prompt.length == len("call me at 13812345678, a cat") and len(mine[0].prompt.hash) == 64
    assert "13812345678" not in mine[0].prompt.redacted
    [refused] = [e for e in spooled if e.request_id == "ev-2" and e.type == T.BACKEND_EVENT_TYPE_REJECTED_BY_POLICY]
    assert refused.policy == "sexual-minors" and refused.error_code == "FAILED_PRECONDITION"
    raw = b"".join(path.read_bytes() for path in spool.directory.iterdir())
    assert b"porn" not in raw and b"13812345678" not in raw
    assert (REGISTRY.get_sample_value("inkloop_gateway_events_spooled_total") or 0.0) - spooled_before >= len(spooled)

    # Analytics comes up on that address: the spool drains, oldest first, same ids.
    with fresh_database(clickhouse_server.url) as clickhouse:
        settings = AnalyticsSettings(
            port=port,
            data_dir=tmp_path / "analytics",
            clickhouse_url=database_url(clickhouse_server.url, clickhouse.database),
            alert_interval_s=3600,
        )
        app = AnalyticsApp(settings)
        if not hasattr(app, "interceptors"):  # the analytics App lacks it while being built
            app.interceptors = ()  # type: ignore[attr-defined]
        running = await start_server(app, "127.0.0.1", port)
        await app.start()
        try:
            await _until(spool.empty)
            ids = [e.event_id for e in spooled]

            def stored() -> list[str]:
                rows = clickhouse.query("SELECT event_id FROM backend_events")
                return [str(row[0]) for row in rows]

            await _until(lambda: set(ids) <= set(stored()))
            sent = (REGISTRY.get_sample_value("inkloop_gateway_events_sent_total") or 0.0) - sent_before
            assert sent >= len(ids)
        finally:
            await running.server.stop(0)
            await app.stop()


async def test_batches_spooled_by_an_earlier_version_join_the_spool_in_order(
    start_gateway: StartGateway, tmp_path: Path
) -> None:
    """Versions before the shared spool wrote one serialized IngestRequest per `.batch` file."""
    spool_dir = tmp_path / "gateway" / "events-spool"
    spool_dir.mkdir(parents=True)
    old = [
        analytics_pb2.BackendEvent(event_id=f"00000000-0000-4000-8000-00000000000{i}", request_id=f"old-{i}")
        for i in range(3)
    ]
    for i, event in enumerate(old):
        batch = analytics_pb2.IngestRequest(backend=[event], batch_id=f"b{i}")
        (spool_dir / f"{i:020d}-00000000.batch").write_bytes(batch.SerializeToString())
    gateway = await start_gateway()  # analytics unreachable: everything stays on disk
    assert [e.event_id for e in spooled_events(gateway.app.events.spool)][:3] == [e.event_id for e in old]
    assert not list(spool_dir.glob("*.batch"))


async def test_repainting_a_result_names_the_request_that_made_it(gateway: Gateway) -> None:
    """The base of an edit accepts the request whose image it is (analytics' outcomes): the gateway
    finds it by the image's bytes in the tenant's store; another tenant's or a foreign image names none."""
    first = await gateway.jobs.SubmitJob(
        gateway_pb2.SubmitJobRequest(task=text_task("a red kite", seed=3), request_id="made-it"),
        metadata=gateway.auth(),
    )
    end = await finished(gateway, first.job.job_id)
    made = end.succeeded.images[0].data
    mask = png(64, 64, colour=(255, 255, 255), mode="RGB")
    for request_id, image, who in (
        ("repaint", made, "acme"),
        ("foreign", png(64, 64), "acme"),
        ("other", made, "globex"),
    ):
        job = await gateway.jobs.SubmitJob(
            gateway_pb2.SubmitJobRequest(
                task=inpaint(image, mask, width=64, height=64, steps=2), request_id=request_id
            ),
            metadata=gateway.auth(who),
        )
        await finished(gateway, job.job.job_id, who=who)
    assert not await gateway.app.events.flush()  # analytics is unreachable: every event goes to disk now
    requested = {
        e.request_id: e.base_request_id
        for e in spooled_events(gateway.app.events.spool)
        if e.type == T.BACKEND_EVENT_TYPE_REQUESTED
    }
    assert requested == {"made-it": "", "repaint": "made-it", "foreign": "", "other": ""}
