"""Analysts query through the gateway: AnalyticsQueryService (what `inkloop analytics` calls) and the
dashboard's HTTP routes apply one rule — analyst or admin key, the key's own tenant unless an admin
names another — against a real analytics service on ClickHouse."""

from __future__ import annotations

import asyncio
import json
import re
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import grpc
import pytest
from analytics.builders import backend
from google.protobuf.timestamp_pb2 import Timestamp
from typer.testing import CliRunner

from inkloop.rpc.status import field_violations
from inkloop.v1 import analytics_pb2 as pb
from inkloop.v1 import gateway_pb2_grpc
from inkloop_cli import app as cli
from inkloop_cli.analytics import UNDEFINED, cell
from inkloop_gateway.admission.keys import Role

from .conftest import StartWebGateway, System

#: Requests per tenant in the traffic below; the answer key of every count here.
REQUESTS = {"acme": 2, "globex": 3}


def _range() -> pb.TimeRange:
    start, end = Timestamp(), Timestamp()
    start.FromSeconds(int(time.time()) - 3600)
    end.FromSeconds(int(time.time()) + 3600)
    return pb.TimeRange(start=start, end=end)


def _metadata(secret: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {secret}"),)


async def _requests_counted(stub: Any, secret: str, tenant: str = "") -> int:
    reply = await stub.CompareVariants(
        pb.CompareVariantsRequest(tenant_id=tenant, range=_range()), metadata=_metadata(secret), timeout=30
    )
    return sum(variant.requests for variant in reply.variants)


@pytest.fixture
async def traffic(system: System) -> System:
    assert system.analytics is not None
    # A little in the past: a range ending now excludes the current second.
    now = datetime.now(UTC) - timedelta(seconds=2)
    events = [
        backend(now, pb.BACKEND_EVENT_TYPE_REQUESTED, f"{tenant}-{i}", tenant_id=tenant)
        for tenant, count in REQUESTS.items()
        for i in range(count)
    ]
    await system.analytics.stub.Ingest(pb.IngestRequest(backend=events))
    return system


async def test_an_analyst_counts_its_own_tenant_and_only_an_admin_names_another(traffic: System) -> None:
    globex_analyst = traffic.gateway.keys.create("globex", Role.ANALYST, "globex analyst")[1]
    async with grpc.aio.insecure_channel(traffic.grpc_target) as channel:
        stub = gateway_pb2_grpc.AnalyticsQueryServiceStub(channel)
        assert await _requests_counted(stub, traffic.secrets["analyst"]) == REQUESTS["acme"]
        assert await _requests_counted(stub, globex_analyst) == REQUESTS["globex"]
        assert await _requests_counted(stub, traffic.secrets["admin"]) == REQUESTS["acme"]
        assert await _requests_counted(stub, traffic.secrets["admin"], tenant="globex") == REQUESTS["globex"]

        with pytest.raises(grpc.aio.AioRpcError) as other_tenant:
            await _requests_counted(stub, traffic.secrets["analyst"], tenant="globex")
        assert other_tenant.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "admin" in (other_tenant.value.details() or "")

        with pytest.raises(grpc.aio.AioRpcError) as user_key:
            await _requests_counted(stub, traffic.secrets["user"])
        assert user_key.value.code() == grpc.StatusCode.PERMISSION_DENIED

        with pytest.raises(grpc.aio.AioRpcError) as no_key:
            await stub.CompareVariants(pb.CompareVariantsRequest(range=_range()), timeout=30)
        assert no_key.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_analytics_field_errors_reach_the_caller_through_the_gateway(traffic: System) -> None:
    one_step = pb.FunnelRequest(
        steps=[pb.EventMatcher(source=pb.EVENT_SOURCE_BACKEND, backend_type=pb.BACKEND_EVENT_TYPE_REQUESTED)],
        window_s=3600,
        range=_range(),
    )
    async with grpc.aio.insecure_channel(traffic.grpc_target) as channel:
        stub = gateway_pb2_grpc.AnalyticsQueryServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.Funnel(one_step, metadata=_metadata(traffic.secrets["analyst"]), timeout=30)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [field for field, _ in field_violations(refused.value)] == ["steps"]


async def test_the_dashboard_applies_the_same_rule(traffic: System) -> None:
    async with aiohttp.ClientSession(traffic.url) as http:
        async with http.get("/v1/analytics/variants", headers=traffic.auth("analyst")) as reply:
            assert reply.status == 200
            body = await reply.json()
        assert sum(int(v.get("requests", 0)) for v in body.get("variants", [])) == REQUESTS["acme"]
        async with http.get("/v1/analytics/variants", headers=traffic.auth("user")) as reply:
            assert reply.status == 403


async def test_queries_while_analytics_is_down_are_unavailable_naming_it(start_web_gateway: StartWebGateway) -> None:
    system = await start_web_gateway()  # analytics at an address nothing listens on
    async with grpc.aio.insecure_channel(system.grpc_target) as channel:
        stub = gateway_pb2_grpc.AnalyticsQueryServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as down:
            await _requests_counted(stub, system.secrets["analyst"])
    assert down.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "analytics" in (down.value.details() or "")


def _cli(system: System, who: str, *args: str) -> Any:
    env = {"INKLOOP_GATEWAY": system.grpc_target, "INKLOOP_API_KEY": system.secrets[who], "COLUMNS": "200"}
    return CliRunner().invoke(cli, ["analytics", *args], env=env)


async def test_the_cli_asks_the_gateway_with_the_callers_key(traffic: System) -> None:
    table = await asyncio.to_thread(_cli, traffic, "analyst", "variants")
    assert table.exit_code == 0, table.output
    assert re.search(rf"│ A\s+│ {REQUESTS['acme']}\s+│", table.output), table.output
    as_json = await asyncio.to_thread(_cli, traffic, "admin", "variants", "--json", "--tenant", "globex")
    assert as_json.exit_code == 0, as_json.output
    assert json.loads(as_json.stdout)["variants"][0]["requests"] == REQUESTS["globex"]

    denied = await asyncio.to_thread(_cli, traffic, "user", "variants")
    assert denied.exit_code == 1 and "PERMISSION_DENIED" in denied.output
    bad = await asyncio.to_thread(_cli, traffic, "analyst", "funnel", "--step", "frontend:type=page_view")
    assert bad.exit_code == 1
    assert "INVALID_ARGUMENT" in bad.output and "steps" in bad.output


async def test_outcomes_and_retry_loops_through_the_cli(traffic: System) -> None:
    # The traffic's requests have no result yet: each is abandoned; nothing accepted, so the
    # regenerations per accepted image are undefined.
    table = await asyncio.to_thread(_cli, traffic, "analyst", "outcomes", "--window-s", "60")
    assert table.exit_code == 0, table.output
    assert "window 60 s" in table.output and "nan" not in table.output.lower()
    as_json = await asyncio.to_thread(_cli, traffic, "analyst", "outcomes", "--json", "--breakdown", "variant")
    assert as_json.exit_code == 0, as_json.output
    [group] = json.loads(as_json.stdout)["groups"]
    assert (group["value"], group["requests"], group["abandoned"]) == ("A", REQUESTS["acme"], REQUESTS["acme"])
    assert group["regenerations_per_accepted"] is None
    loops = await asyncio.to_thread(_cli, traffic, "admin", "retry-loops", "--json", "--tenant", "globex")
    assert loops.exit_code == 0, loops.output
    assert json.loads(loops.stdout)["min_regenerations"] == 3
    bad = await asyncio.to_thread(_cli, traffic, "analyst", "outcomes", "--breakdown", "device")
    assert bad.exit_code == 1 and "INVALID_ARGUMENT" in bad.output and "breakdown" in bad.output


async def test_empty_answers_say_why_and_undefined_figures_are_dashes(traffic: System) -> None:
    steps = ["--step", "backend:type=requested", "--step", "backend:type=succeeded"]
    # Back-end events only: no visitor did anything, every user did.
    by_visitor = await asyncio.to_thread(_cli, traffic, "analyst", "funnel", *steps)
    assert by_visitor.exit_code == 0, by_visitor.output
    assert "no visitor reached step 1 in the range (back-end-only traffic: try --actor user)" in by_visitor.output
    by_user = await asyncio.to_thread(_cli, traffic, "analyst", "funnel", *steps, "--actor", "user")
    assert by_user.exit_code == 0 and "no user reached" not in by_user.output
    # Nobody succeeded: the conversion from step 2 on is 0 of 0... shown as the dash, never nan.
    assert "nan" not in by_user.output.lower()
    as_json = await asyncio.to_thread(_cli, traffic, "analyst", "prompts", "--json")
    assert as_json.exit_code == 0 and "NaN" not in as_json.stdout
    json.loads(as_json.stdout)  # valid JSON: undefined figures are null


def test_a_table_cell_of_an_undefined_figure_is_a_dash() -> None:
    assert (cell(float("nan")), cell(0.5), cell(3)) == (UNDEFINED, "0.500", "3")
