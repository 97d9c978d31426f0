"""A seeded product day and the answers to every query about it, computed in plain Python.

Visitors open the page, some click generate (with a request id), some of those requests reach the
back end, some succeed, some images get downloaded; a few requests arrive with no click (tracker
blocked), some clicks are double clicks, some entries are exposed and clicked. Another tenant's
events are mixed in and must never be counted.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from inkloop.v1 import analytics_pb2 as pb

from .builders import DESKTOP_UA, MOBILE_UA, backend, page_view, track

T0 = datetime(2026, 3, 1, tzinfo=UTC)
RANGE_END = T0 + timedelta(hours=2)
NOW = datetime(2026, 3, 2, tzinfo=UTC)  # the service's clock in these tests
WINDOW_S = 300
LENGTH_EDGES = (20, 50, 100, 200, 500)


@dataclass
class Click:
    request_id: str
    visitor: str
    at: datetime
    event_ids: list[str]
    dwell_s: int


@dataclass
class Request:
    request_id: str
    at: datetime
    variant: str
    language: str
    length: int
    visitor: str | None
    succeeded_at: datetime | None = None
    latency_s: float = 0.0
    failed: bool = False
    downloads: int = 0


@dataclass
class Visitor:
    visitor_id: str
    device: str
    page_view_at: datetime
    click: Click | None = None


@dataclass
class Day:
    frontend: list[pb.FrontendEvent] = field(default_factory=list)
    backend: list[pb.BackendEvent] = field(default_factory=list)
    visitors: list[Visitor] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)
    clicks: list[Click] = field(default_factory=list)
    exposures: dict[str, list[tuple[str, str]]] = field(default_factory=lambda: defaultdict(list))  # (visitor, action)


def generate(seed: int = 7, visitors: int = 80) -> Day:
    rng = random.Random(seed)
    day = Day()
    for number in range(visitors):
        visitor_id = f"v{number:03d}"
        mobile = rng.random() < 0.35
        agent = MOBILE_UA if mobile else DESKTOP_UA
        # A few visitors arrive after the range: their funnels start outside it.
        start = T0 + timedelta(seconds=rng.randrange(0, 7200 + 600))
        visitor = Visitor(visitor_id, "mobile" if mobile else "desktop", start)
        day.visitors.append(visitor)
        day.frontend.append(page_view(start, visitor_id, user_agent=agent))
        if rng.random() < 0.4:  # the inpaint entry is shown, sometimes clicked
            at = start + timedelta(seconds=2)
            day.frontend.append(track(at, visitor_id, "inpaint", "exposure", user_agent=agent))
            day.exposures["inpaint"].append((visitor_id, "exposure"))
            if rng.random() < 0.5:
                day.frontend.append(track(at + timedelta(seconds=1), visitor_id, "inpaint", "click", user_agent=agent))
                day.exposures["inpaint"].append((visitor_id, "click"))
        if rng.random() >= 0.8:
            continue
        dwell = rng.randrange(5, 120)
        click_at = start + timedelta(seconds=dwell)
        request_id = f"r-{visitor_id}"
        click_ids = []
        for extra in range(2 if rng.random() < 0.15 else 1):  # double clicks: a second event, same request
            event = track(click_at + timedelta(seconds=extra), visitor_id, "generate", "click", user_agent=agent)
            event.request_id = request_id
            event.label = "a cat on the moon"
            click_ids.append(event.event_id)
            day.frontend.append(event)
        click = Click(request_id, visitor_id, click_at, click_ids, dwell)
        visitor.click = click
        day.clicks.append(click)
        if rng.random() < 0.85:  # the request often in the click's second: funnels must take the click first
            day.requests.append(
                _request(rng, day, request_id, click_at + timedelta(seconds=rng.randrange(0, 4)), visitor_id)
            )
    for number in range(6):  # tracker blocked: requests no front-end event knows
        at = T0 + timedelta(seconds=rng.randrange(0, 7000))
        day.requests.append(_request(rng, day, f"r-blocked-{number}", at, None))
    # Clicks with no request id (an old page): unmatched on principle.
    for number in range(3):
        at = T0 + timedelta(seconds=rng.randrange(0, 7000))
        event = track(at, f"w{number}", "generate", "click")
        day.frontend.append(event)
        day.clicks.append(Click("", f"w{number}", at, [event.event_id], -1))
    # Another tenant: same shapes, never counted.
    other = T0 + timedelta(seconds=100)
    day.frontend.append(page_view(other, "v000", tenant_id="t2"))
    day.frontend.append(track(other, "v000", "generate", "click", tenant_id="t2", request_id="r-v000"))
    day.backend.append(backend(other, pb.BACKEND_EVENT_TYPE_REQUESTED, "r-v000", tenant_id="t2"))
    return day


def _request(rng: random.Random, day: Day, request_id: str, at: datetime, visitor: str | None) -> Request:
    language = rng.choice(["zh", "en", "mixed", "other"])
    length = rng.choice([5, 20, 21, 35, 80, 150, 300, 900])
    features = pb.PromptFeatures(length=length, language=pb.LanguageClass.Value(f"LANGUAGE_CLASS_{language.upper()}"))
    variant = rng.choice(["A", "B"])
    request = Request(request_id, at, variant, language, length, visitor)
    fields = {"variant": variant, "prompt": features}
    day.backend.append(backend(at, pb.BACKEND_EVENT_TYPE_REQUESTED, request_id, **fields))
    roll = rng.random()
    if roll < 0.7:
        latency = rng.randrange(5, 400)
        request.succeeded_at = at + timedelta(seconds=latency)
        request.latency_s = latency + 0.25
        day.backend.append(
            backend(
                request.succeeded_at,
                pb.BACKEND_EVENT_TYPE_SUCCEEDED,
                request_id,
                latency_s=request.latency_s,
                **fields,
            )
        )
        for _ in range(rng.choice([0, 0, 1, 2])):
            request.downloads += 1
            download_at = request.succeeded_at + timedelta(seconds=5)
            day.backend.append(backend(download_at, pb.BACKEND_EVENT_TYPE_DOWNLOADED, request_id, variant=variant))
    elif roll < 0.85:
        request.failed = True
        day.backend.append(backend(at + timedelta(seconds=3), pb.BACKEND_EVENT_TYPE_FAILED, request_id, **fields))
    return request


def in_range(moment: datetime | None) -> bool:
    return moment is not None and T0 <= moment < RANGE_END


def quantile_exact(values: Sequence[float], level: float) -> float:
    """ClickHouse's quantileExact: the element at floor(level × n) of the sorted values; 0 when empty."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return float(ordered[min(int(level * len(ordered)), len(ordered) - 1)])
