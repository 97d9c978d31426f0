"""The analytics service over real gRPC on port 0: ingest (unary and streaming), queries, errors,
health, and start-up while ClickHouse is down."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from harness.clickhouse import ClickHouseServer
from inkloop.rpc.server import RunningServer, start_server
from inkloop.rpc.status import field_violations
from inkloop.v1 import analytics_pb2 as pb
from inkloop.v1 import analytics_pb2_grpc
from inkloop_analytics.server import AnalyticsApp
from inkloop_analytics.storage import connect

from .builders import backend, page_view, timestamp, track
from .generator import NOW, T0

RANGE = pb.TimeRange(start=timestamp(T0), end=timestamp(T0 + timedelta(hours=1)))


class Running:
    def __init__(self, app: AnalyticsApp, server: RunningServer, channel: grpc.aio.Channel) -> None:
        self.app = app
        self.server = server
        self.channel = channel
        self.stub = analytics_pb2_grpc.AnalyticsServiceStub(channel)
        self.health = health_pb2_grpc.HealthStub(channel)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.port}"

    async def health_status(self) -> int:
        response = await self.health.Check(health_pb2.HealthCheckRequest(service="inkloop.v1.AnalyticsService"))
        return response.status

    async def close(self) -> None:
        await self.channel.close()
        await self.server.server.stop(0)
        await self.app.stop()


async def launch(settings) -> tuple[Running, asyncio.Task[None]]:
    """Starts like `inkloop serve`: port bound and NOT_SERVING, then start() in the background."""
    app = AnalyticsApp(settings)
    app.analytics.clock = lambda: NOW
    app.analytics.ingestor._clock = lambda: NOW
    server = await start_server(app, "127.0.0.1", 0)
    running = Running(app, server, grpc.aio.insecure_channel(f"127.0.0.1:{server.port}"))

    async def start() -> None:
        await app.start()
        await server.set_serving(True)

    return running, asyncio.create_task(start())


@pytest.fixture
async def service(clickhouse_url: str, make_settings) -> AsyncIterator[Running]:
    running, starting = await launch(make_settings(clickhouse_url))
    await asyncio.wait_for(starting, 60)
    yield running
    await running.close()


async def test_ingest_acks_each_event(service: Running) -> None:
    front = [page_view(T0, "v1"), page_view(T0, "v1", event_id="nope")]
    back = [backend(T0, pb.BACKEND_EVENT_TYPE_REQUESTED, "r1")]
    response = await service.stub.Ingest(pb.IngestRequest(frontend=front, backend=back, batch_id="b1"))
    assert (response.batch_id, response.accepted, response.duplicates, response.rejected) == ("b1", 2, 0, 1)
    assert [ack.status for ack in response.frontend_acks] == [pb.ACK_STATUS_ACCEPTED, pb.ACK_STATUS_REJECTED]
    assert (response.frontend_acks[1].field, response.frontend_acks[1].event_id) == ("event_id", "nope")
    assert not response.spooled
    again = await service.stub.Ingest(pb.IngestRequest(frontend=front[:1]))
    assert [ack.status for ack in again.frontend_acks] == [pb.ACK_STATUS_DUPLICATE]


async def test_ingest_stream_answers_each_batch_in_order(service: Running) -> None:
    batches = [
        pb.IngestRequest(batch_id=f"b{n}", frontend=[track(T0, f"v{n}", "inpaint", "exposure") for _ in range(n + 1)])
        for n in range(5)
    ]
    responses = [response async for response in service.stub.IngestStream(iter(batches))]
    assert [(r.batch_id, r.accepted) for r in responses] == [(f"b{n}", n + 1) for n in range(5)]
    adoption = await service.stub.FeatureAdoption(pb.FeatureAdoptionRequest(tenant_id="t1", range=RANGE))
    assert [(f.feature, f.exposures, f.exposed_visitors) for f in adoption.features] == [("inpaint", 15, 5)]


async def test_queries_answer_and_bad_requests_name_the_field(service: Running) -> None:
    await service.stub.Ingest(
        pb.IngestRequest(
            frontend=[page_view(T0, "v1"), track(T0 + timedelta(seconds=30), "v1", "generate", "click")],
        )
    )
    steps = [
        pb.EventMatcher(source=pb.EVENT_SOURCE_FRONTEND, frontend_type=pb.FRONTEND_EVENT_TYPE_PAGE_VIEW),
        pb.EventMatcher(source=pb.EVENT_SOURCE_FRONTEND, category="generate", action="click", name="click"),
    ]
    funnel = await service.stub.Funnel(pb.FunnelRequest(tenant_id="t1", steps=steps, window_s=60, range=RANGE))
    [series] = funnel.series
    assert [(s.name, s.count, s.median_seconds_from_first) for s in series.steps] == [
        ("frontend:page_view", 1, 0.0),
        ("click", 1, 30.0),
    ]
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await service.stub.Funnel(pb.FunnelRequest(tenant_id="t1", steps=steps[:1], window_s=60, range=RANGE))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [field for field, _ in field_violations(error.value)] == ["steps"]
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await service.stub.Discrepancy(pb.DiscrepancyRequest(tenant_id="t1", frontend=steps[1], backend=steps[0]))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(error.value)[0][0] == "backend.source"
    rules = await service.stub.ListAlertRules(pb.ListAlertRulesRequest())
    assert {rule.kind for rule in rules.rules} == {
        pb.ALERT_KIND_CLICKS_OVER_SUCCESSES,
        pb.ALERT_KIND_ERROR_RATE,
        pb.ALERT_KIND_LATENCY_P95,
        pb.ALERT_KIND_PERCEIVED_SUCCESS,
        pb.ALERT_KIND_RETRY_LOOP_RATE,
    }
    per = {rule.name: rule.breakdown for rule in rules.rules if rule.kind == pb.ALERT_KIND_PERCEIVED_SUCCESS}
    assert per == {"perceived_success_by_language": "language_class", "perceived_success_by_variant": "variant"}
    variants = await service.stub.CompareVariants(pb.CompareVariantsRequest(tenant_id="t1", range=RANGE))
    assert list(variants.variants) == []


async def test_starts_while_clickhouse_is_down_and_serves_ingest_into_the_spool(tmp_path: Path, make_settings) -> None:
    clickhouse = ClickHouseServer(tmp_path / "late-clickhouse")  # ports chosen, not started yet
    running, starting = await launch(make_settings(clickhouse.url))
    try:
        await asyncio.sleep(0.3)
        assert not starting.done()
        assert await running.health_status() == health_pb2.HealthCheckResponse.NOT_SERVING
        events = [page_view(T0, f"v{n}") for n in range(20)]
        response = await running.stub.Ingest(pb.IngestRequest(frontend=events))
        assert (response.accepted, response.spooled) == (20, True)
        await asyncio.to_thread(clickhouse.start)
        await asyncio.wait_for(starting, 60)
        assert await running.health_status() == health_pb2.HealthCheckResponse.SERVING
        for _ in range(100):
            if running.app.analytics.spool.empty():
                break
            await asyncio.sleep(0.05)
        with connect(clickhouse.url) as ch:
            assert ch.query("SELECT uniqExact(event_id), count() FROM frontend_events") == [(20, 20)]
    finally:
        await running.close()
        clickhouse.stop()
