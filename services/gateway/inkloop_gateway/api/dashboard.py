"""`GET /v1/analytics/<query>` for the dashboard: analyst keys only, the tenant always the key's own.

Each route builds one AnalyticsService query request (range: the last `hours`, default 24) and
returns its response as protobuf JSON; the charts are drawn in the browser (static/dashboard.js).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from inkloop import errors
from inkloop.v1 import analytics_pb2 as pb
from inkloop_gateway.admission.keys import KeyStore, Role
from inkloop_gateway.api.analyst import AnalyticsClient
from inkloop_gateway.api.http_json import principal_of, to_json

_TIMEOUT_S = 10.0
_MAX_HOURS = 24 * 90


def front(category: str, action: str, name: str) -> pb.EventMatcher:
    return pb.EventMatcher(source=pb.EVENT_SOURCE_FRONTEND, name=name, category=category, action=action)


def back(kind: pb.BackendEventType, name: str) -> pb.EventMatcher:
    return pb.EventMatcher(source=pb.EVENT_SOURCE_BACKEND, name=name, backend_type=kind)


#: exposure → click → request → success → download, matched per visitor through the click's request id.
FUNNEL_STEPS = (
    front("generate", "exposure", "exposure"),
    front("generate", "click", "click"),
    back(pb.BACKEND_EVENT_TYPE_REQUESTED, "request"),
    back(pb.BACKEND_EVENT_TYPE_SUCCEEDED, "success"),
    back(pb.BACKEND_EVENT_TYPE_DOWNLOADED, "download"),
)


def time_range(request: web.Request) -> pb.TimeRange:
    try:
        hours = float(request.query.get("hours", "24"))
    except ValueError:
        raise errors.InvalidArgument("hours", "must be a number") from None
    if not 0 < hours <= _MAX_HOURS:
        raise errors.InvalidArgument("hours", f"must be in (0, {_MAX_HOURS}]")
    end = time.time() + 60  # events of the last minute, client clocks a little ahead included
    start, stop = Timestamp(), Timestamp()
    start.FromSeconds(int(end - hours * 3600))
    stop.FromSeconds(int(end))
    return pb.TimeRange(start=start, end=stop)


def _bucket_s(window: pb.TimeRange) -> int:
    span = window.end.seconds - window.start.seconds
    return max(60, span // 24 // 60 * 60)


class Dashboard:
    def __init__(self, keys: KeyStore, analytics: AnalyticsClient) -> None:
        self.keys = keys
        self.analytics = analytics

    def routes(self) -> list[web.RouteDef]:
        return [web.get(f"/v1/analytics/{name}", self._handler(name)) for name in QUERIES]

    def _handler(self, name: str) -> Callable[[web.Request], Awaitable[web.Response]]:
        method, build = QUERIES[name]

        async def handle(request: web.Request) -> web.Response:
            principal = await principal_of(self.keys, request, Role.ANALYST)
            query = build(principal.tenant_id, time_range(request))
            reply = await self.analytics.query(principal, method, query, timeout_s=_TIMEOUT_S)
            body: dict[str, Any] = to_json(reply)
            return web.json_response(body, headers={"Cache-Control": "no-store"})

        return handle


def _discrepancy(tenant: str, window: pb.TimeRange) -> pb.DiscrepancyRequest:
    return pb.DiscrepancyRequest(
        tenant_id=tenant,
        frontend=front("generate", "click", "click"),
        backend=back(pb.BACKEND_EVENT_TYPE_REQUESTED, "requested"),
        range=window,
        bucket_s=_bucket_s(window),
        sample_size=10,
    )


#: Dashboard panel -> (AnalyticsQueryService method, its request for a tenant and range).
QUERIES: dict[str, tuple[str, Callable[[str, pb.TimeRange], Message]]] = {
    "funnel": (
        "Funnel",
        lambda tenant, window: pb.FunnelRequest(tenant_id=tenant, steps=FUNNEL_STEPS, window_s=86_400, range=window),
    ),
    "discrepancy": ("Discrepancy", _discrepancy),
    "prompts": ("PromptInsights", lambda tenant, window: pb.PromptInsightsRequest(tenant_id=tenant, range=window)),
    "adoption": ("FeatureAdoption", lambda tenant, window: pb.FeatureAdoptionRequest(tenant_id=tenant, range=window)),
    "variants": ("CompareVariants", lambda tenant, window: pb.CompareVariantsRequest(tenant_id=tenant, range=window)),
    "outcomes": (
        "Outcomes",
        lambda tenant, window: pb.OutcomesRequest(tenant_id=tenant, range=window, breakdown="language_class"),
    ),
    "templates": (
        "RecommendTemplates",
        lambda tenant, window: pb.RecommendTemplatesRequest(tenant_id=tenant, range=window, limit=8),
    ),
    # The whole run of the page's built-in experiment, whatever the dashboard's range.
    "experiment": (
        "ExperimentResults",
        lambda tenant, _window: pb.ExperimentResultsRequest(tenant_id=tenant, experiment="inpaint_hint"),
    ),
    "alerts": ("ListAlerts", lambda tenant, window: pb.ListAlertsRequest(tenant_id=tenant, range=window)),
}
