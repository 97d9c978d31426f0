"""`POST /collect`: the tracker's batches, normalised into FrontendEvents and sent to analytics Ingest.

The batch (JSON, any content type so `sendBeacon` needs no preflight):
`{"sid": session, "uid": user, "lang": "zh-CN", "scr": "1920x1080", "ev": [event, ...]}`, each event
`{"id": uuid, "t": client ms, "type": "pv" (page view) | "ev" (event), "c": category, "a": action, "l": label,
"v": value, "rid": request id, "url": page, "ref": referrer, "cv": {name: value}}`.

No cookie: the visitor id is `daily_visitor_id(ip, user agent, tenant, day, secret)`. The answer is
204 once analytics has the events; 503 when it cannot be reached, and the tracker retries the same
batch with the same event ids (analytics counts an id once), so nothing is lost or double counted.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import grpc
from aiohttp import web
from google.protobuf.timestamp_pb2 import Timestamp

from inkloop import errors
from inkloop.v1 import analytics_pb2, analytics_pb2_grpc
from inkloop.visitors import daily_visitor_id

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024
_INGEST_TIMEOUT_S = 3.0
_TYPES = {
    "pv": analytics_pb2.FRONTEND_EVENT_TYPE_PAGE_VIEW,
    "ev": analytics_pb2.FRONTEND_EVENT_TYPE_TRACK_EVENT,
}
# Longest kept value per field, as the proto documents; longer values are cut, not rejected.
_LIMITS = {
    "session_id": 128,
    "user_id": 128,
    "page_url": 2048,
    "referrer": 2048,
    "user_agent": 512,
    "language": 32,
    "screen": 32,
    "category": 128,
    "action": 128,
    "label": 256,
    "request_id": 128,
}
_MAX_CUSTOM_VARS = 16
_MIN_TIMESTAMP_MS, _MAX_TIMESTAMP_MS = -62_135_596_800_000, 253_402_300_799_000
_MAX_CUSTOM_VAR_CHARS = 256


@dataclass(frozen=True)
class Visitor:
    """What the server knows of the sender, never stored as such: only hashed into the visitor id."""

    ip: str
    user_agent: str


def _text(value: Any, field: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        raise errors.InvalidArgument(field, "must be a string")
    return str(value)[: _LIMITS.get(field, 256)]


def _timestamp(millis: float) -> Timestamp:
    stamp = Timestamp()
    stamp.FromMilliseconds(int(millis))
    return stamp


def parse_batch(
    body: Any, *, tenant_id: str, visitor: Visitor, secret: str, max_events: int, now: float | None = None
) -> list[analytics_pb2.FrontendEvent]:
    """The batch's FrontendEvents, or `InvalidArgument` naming the first field at fault."""
    now = time.time() if now is None else now
    if not isinstance(body, dict):
        raise errors.InvalidArgument("body", "must be a JSON object")
    raw_events = body.get("ev")
    if not isinstance(raw_events, list) or not raw_events:
        raise errors.InvalidArgument("ev", "must be a non-empty list of events")
    if len(raw_events) > max_events:
        raise errors.InvalidArgument("ev", f"more than {max_events} events")
    day = datetime.fromtimestamp(now, UTC).date()
    common = analytics_pb2.FrontendEvent(
        server_time=_timestamp(now * 1000),
        tenant_id=tenant_id,
        visitor_id=daily_visitor_id(visitor.ip, visitor.user_agent, tenant_id, day, secret),
        session_id=_text(body.get("sid"), "session_id"),
        user_id=_text(body.get("uid"), "user_id"),
        user_agent=visitor.user_agent[: _LIMITS["user_agent"]],
        language=_text(body.get("lang"), "language"),
        screen=_text(body.get("scr"), "screen"),
    )
    return [_event(raw, common, index, now) for index, raw in enumerate(raw_events)]


def _event(raw: Any, common: analytics_pb2.FrontendEvent, index: int, now: float) -> analytics_pb2.FrontendEvent:
    where = f"ev[{index}]"
    if not isinstance(raw, dict):
        raise errors.InvalidArgument(where, "must be an object")
    try:
        event_id = str(uuid.UUID(str(raw.get("id", ""))))
    except ValueError:
        raise errors.InvalidArgument(f"{where}.id", "must be a UUID made by the tracker") from None
    raw_type = raw.get("type", "")
    kind = _TYPES.get(raw_type) if isinstance(raw_type, str) else None
    if kind is None:
        raise errors.InvalidArgument(f"{where}.type", "must be 'pv' or 'ev'")
    client_ms = raw.get("t")
    if not isinstance(client_ms, int | float) or isinstance(client_ms, bool) or client_ms != client_ms:  # NaN
        client_ms = now * 1000
    # Beyond what a Timestamp holds (years 1-9999): kept at the bound, so analytics rejects this event
    # as too old or in the future instead of the whole batch failing.
    client_ms = min(max(client_ms, _MIN_TIMESTAMP_MS), _MAX_TIMESTAMP_MS)
    event = analytics_pb2.FrontendEvent()
    event.CopyFrom(common)
    event.event_id = event_id
    event.type = kind
    event.client_time.CopyFrom(_timestamp(client_ms))
    event.page_url = _text(raw.get("url"), "page_url").split("#", 1)[0]
    event.referrer = _text(raw.get("ref"), "referrer")
    event.category = _text(raw.get("c"), "category")
    event.action = _text(raw.get("a"), "action")
    event.label = _text(raw.get("l"), "label")
    event.request_id = _text(raw.get("rid"), "request_id")
    value = raw.get("v")
    if value is not None and value != "":
        try:
            event.value = int(float(value))
        except (TypeError, ValueError, OverflowError):
            raise errors.InvalidArgument(f"{where}.v", "must be a number") from None
    custom = raw.get("cv") or {}
    if not isinstance(custom, dict) or len(custom) > _MAX_CUSTOM_VARS:
        raise errors.InvalidArgument(f"{where}.cv", f"must be an object of at most {_MAX_CUSTOM_VARS} entries")
    for name, text in custom.items():
        event.custom_vars[str(name)[:_MAX_CUSTOM_VAR_CHARS]] = _text(text, "cv")[:_MAX_CUSTOM_VAR_CHARS]
    return event


class Collector:
    """The collect endpoint, sending each batch to AnalyticsService.Ingest on the given stub."""

    def __init__(
        self, stub: analytics_pb2_grpc.AnalyticsServiceStub, *, tenant_id: str, secret: str, max_events: int
    ) -> None:
        self.stub = stub
        self.tenant_id = tenant_id
        self.secret = secret
        self.max_events = max_events

    async def collect(self, request: web.Request) -> web.Response:
        if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
            raise errors.InvalidArgument("body", f"larger than {MAX_BODY_BYTES} bytes")
        raw = await request.content.read(MAX_BODY_BYTES + 1)
        if len(raw) > MAX_BODY_BYTES:
            raise errors.InvalidArgument("body", f"larger than {MAX_BODY_BYTES} bytes")
        visitor = Visitor(request.remote or "", request.headers.get("User-Agent", ""))
        try:
            body = json.loads(raw.decode("utf-8") or "null")
        except RecursionError:
            raise errors.InvalidArgument("body", "nested too deeply") from None
        events = parse_batch(
            body,
            tenant_id=self.tenant_id,
            visitor=visitor,
            secret=self.secret,
            max_events=self.max_events,
        )
        batch = analytics_pb2.IngestRequest(frontend=events, batch_id=str(uuid.uuid4()))
        try:
            reply = await self.stub.Ingest(batch, timeout=_INGEST_TIMEOUT_S)
        except grpc.aio.AioRpcError as error:
            log.info("analytics did not take front-end events", extra={"code": error.code().name})
            raise errors.Unavailable("analytics is unavailable; retry with the same event ids") from None
        if reply.rejected:
            reasons = {f"{ack.field}: {ack.reason}" for ack in reply.frontend_acks if ack.reason}
            log.info("analytics rejected front-end events", extra={"count": reply.rejected, "reasons": sorted(reasons)})
        return web.Response(status=204, headers={"Cache-Control": "no-store"})
