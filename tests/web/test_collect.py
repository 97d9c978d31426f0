"""The collect endpoint: batch validation and normalisation, then Ingest (204), 503 while analytics is
down, and retries with the same event ids counted once."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest

from inkloop import errors
from inkloop.v1 import analytics_pb2 as pb
from inkloop.visitors import daily_visitor_id
from inkloop_gateway.api.collect import Visitor, parse_batch

from .conftest import StartWebGateway, System

NOW = 1_790_000_000.0
VISITOR = Visitor("203.0.113.9", "Mozilla/5.0 test")


def _event(**fields: Any) -> dict[str, Any]:
    return {"id": str(uuid.uuid4()), "t": NOW * 1000 - 500, "type": "ev", "c": "generate", "a": "click", **fields}


def _parse(body: Any) -> list[pb.FrontendEvent]:
    return parse_batch(body, tenant_id="dev", visitor=VISITOR, secret="s", max_events=5, now=NOW)


def test_a_batch_becomes_frontend_events() -> None:
    click = _event(l="h:0123456789abcdef", v=12, rid="req-1", url="http://x/?a=1#frag", cv={"kind": "inpaint"})
    view = {"id": str(uuid.uuid4()), "t": NOW * 1000, "type": "pv", "url": "http://x/", "ref": "http://r/"}
    events = _parse({"sid": "s1", "uid": "u1", "lang": "zh-CN", "scr": "1920x1080", "ev": [click, view]})
    first, second = events
    day = datetime.fromtimestamp(NOW, UTC).date()
    assert first.visitor_id == daily_visitor_id(VISITOR.ip, VISITOR.user_agent, "dev", day, "s") == second.visitor_id
    assert (first.tenant_id, first.session_id, first.user_id, first.language) == ("dev", "s1", "u1", "zh-CN")
    assert (first.type, first.category, first.action, first.label) == (
        pb.FRONTEND_EVENT_TYPE_TRACK_EVENT,
        "generate",
        "click",
        "h:0123456789abcdef",
    )
    assert (first.value, first.request_id, first.page_url) == (12, "req-1", "http://x/?a=1")
    assert dict(first.custom_vars) == {"kind": "inpaint"} and first.user_agent == VISITOR.user_agent
    assert first.server_time.ToMilliseconds() == NOW * 1000 and first.client_time.ToMilliseconds() == NOW * 1000 - 500
    assert second.type == pb.FRONTEND_EVENT_TYPE_PAGE_VIEW and not second.HasField("value")


def test_long_values_are_cut_and_missing_times_are_the_servers() -> None:
    [event] = _parse({"ev": [_event(l="x" * 1000, t=None)]})
    assert len(event.label) == 256 and event.client_time.ToMilliseconds() == NOW * 1000


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ([], "body"),
        ({"ev": []}, "ev"),
        ({"ev": [_event() for _ in range(6)]}, "ev"),
        ({"ev": ["nope"]}, "ev[0]"),
        ({"ev": [_event(id="not-a-uuid")]}, "ev[0].id"),
        ({"ev": [_event(), _event(type="click")]}, "ev[1].type"),
        ({"ev": [_event(v="many")]}, "ev[0].v"),
        ({"ev": [_event(c={"a": 1})]}, "category"),
        ({"ev": [_event(cv=[1])]}, "ev[0].cv"),
    ],
)
def test_invalid_batches_name_the_field(body: Any, field: str) -> None:
    with pytest.raises(errors.InvalidArgument) as caught:
        _parse(body)
    assert caught.value.violations[0].field == field


async def _collect(system: System, body: Any) -> aiohttp.ClientResponse:
    async with aiohttp.ClientSession(system.url) as http, http.post("/collect", data=json.dumps(body)) as reply:
        await reply.read()
        return reply


async def test_collect_is_503_while_analytics_is_down(start_web_gateway: StartWebGateway) -> None:
    system = await start_web_gateway()
    reply = await _collect(system, {"ev": [_event(t=time.time() * 1000)]})
    assert reply.status == 503 and reply.headers["Retry-After"]
    reply = await _collect(system, {"ev": "nope"})
    assert reply.status == 400


async def test_a_retried_batch_is_counted_once(system: System) -> None:
    assert system.analytics is not None
    batch = {"sid": "s", "ev": [_event(t=time.time() * 1000, a="exposure", c="inpaint")]}
    for _ in range(2):
        assert (await _collect(system, batch)).status == 204
    start, end = pb.TimeRange().start, pb.TimeRange().end
    start.FromSeconds(int(time.time()) - 600)
    end.FromSeconds(int(time.time()) + 600)
    adoption = await system.analytics.stub.FeatureAdoption(
        pb.FeatureAdoptionRequest(tenant_id="acme", range=pb.TimeRange(start=start, end=end))
    )
    assert [(f.feature, f.exposures) for f in adoption.features] == [("inpaint", 1)]
