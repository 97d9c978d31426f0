"""Protobuf events for tests, with every required field filled and any field overridable."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from google.protobuf import timestamp_pb2

from inkloop.v1 import analytics_pb2 as pb

DESKTOP_UA = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/126.0 Safari/537.36"
MOBILE_UA = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148"


def timestamp(moment: datetime) -> timestamp_pb2.Timestamp:
    message = timestamp_pb2.Timestamp()
    message.FromDatetime(moment)
    return message


def new_id() -> str:
    return str(uuid.uuid4())


def page_view(at: datetime, visitor: str, **fields: Any) -> pb.FrontendEvent:
    defaults: dict[str, Any] = {
        "event_id": new_id(),
        "tenant_id": "t1",
        "visitor_id": visitor,
        "session_id": f"s-{visitor}",
        "page_url": "https://inkloop.test/",
        "user_agent": DESKTOP_UA,
        "type": pb.FRONTEND_EVENT_TYPE_PAGE_VIEW,
    }
    event = pb.FrontendEvent(**{**defaults, **fields})
    event.client_time.CopyFrom(timestamp(at))
    return event


def track(at: datetime, visitor: str, category: str, action: str, **fields: Any) -> pb.FrontendEvent:
    return page_view(at, visitor, type=pb.FRONTEND_EVENT_TYPE_TRACK_EVENT, category=category, action=action, **fields)


def backend(at: datetime, kind: int, request_id: str, **fields: Any) -> pb.BackendEvent:
    defaults: dict[str, Any] = {
        "event_id": new_id(),
        "tenant_id": "t1",
        "user_id": "u1",
        "request_id": request_id,
        "job_id": f"job-{request_id}",
        "type": kind,
        "variant": "A",
        "kind": 1,
        "width": 1024,
        "height": 1024,
        "steps": 30,
        "true_cfg_scale": 4.0,
        "num_images": 1,
        "seed": 7,
    }
    event = pb.BackendEvent(**{**defaults, **fields})
    event.time.CopyFrom(timestamp(at))
    return event
