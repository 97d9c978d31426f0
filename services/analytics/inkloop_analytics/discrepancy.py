"""Front-end vs back-end, request by request: "100 clicks but 90 requests" made exact.

Both sides are grouped by request id. A request id belongs to the bucket of its first front-end
event, or of its first back-end event when the front end never saw it. Per bucket:
- frontend / backend: distinct events (by event_id, so retried events count once);
- matched: request ids seen on both sides; frontend_only / backend_only: on one side only;
- *_duplicates: extra distinct events for a request id already counted (double clicks, re-sent
  requests), i.e. events minus request ids, per side;
- loss_rate: frontend_only / request ids seen on the front end.
Events without a request id cannot be matched: each counts as its own request id (front-only or
back-only) and never as a duplicate; they are not offered as samples.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from inkloop.errors import InvalidArgument
from inkloop_analytics.matchers import EventMatcher, TimeRange, require_tenant
from inkloop_analytics.storage import ClickHouse

MIN_BUCKET_S, MAX_BUCKET_S = 60, 7 * 86_400
MAX_SAMPLE = 100

PER_REQUEST = """
SELECT
    if(request_id = '', concat('~', toString(event_id)), request_id) AS rid,
    request_id != '' AS has_rid,
    uniqExactIf(event_id, side = 1) AS front,
    uniqExactIf(event_id, side = 2) AS back,
    intDiv(toUInt32(if(front > 0, minIf(time, side = 1), minIf(time, side = 2))) - %(start_s)s, %(bucket_s)s) AS bucket
FROM (
    SELECT 1 AS side, event_id, request_id, time FROM frontend_events
    WHERE tenant_id = %(tenant)s
        AND time >= toDateTime(%(start)s, 'UTC') AND time < toDateTime(%(end)s, 'UTC') AND ({frontend})
    UNION ALL
    SELECT 2 AS side, event_id, request_id, time FROM backend_events
    WHERE tenant_id = %(tenant)s
        AND time >= toDateTime(%(start)s, 'UTC') AND time < toDateTime(%(end)s, 'UTC') AND ({backend})
)
GROUP BY rid, has_rid
"""

# `rid` groups by request id, except that events without one each stand alone; grouping by
# (rid, has_rid) keeps a request id that happens to start with "~" apart from those.
BUCKETS = """
SELECT bucket,
    sum(front), sum(back),
    countIf(front > 0 AND back > 0),
    countIf(front > 0 AND back = 0),
    countIf(front = 0 AND back > 0),
    sumIf(front - 1, front > 1),
    sumIf(back - 1, back > 1),
    groupArrayIf(%(sample_size)s)(rid, has_rid AND front > 0 AND back = 0),
    groupArrayIf(%(sample_size)s)(rid, has_rid AND front = 0 AND back > 0)
FROM ({per_request})
GROUP BY bucket
ORDER BY bucket
"""


@dataclass(frozen=True)
class DiscrepancyQuery:
    tenant_id: str
    frontend: EventMatcher
    backend: EventMatcher
    range: TimeRange | None
    bucket_s: int = 0
    sample_size: int = 0

    def check(self) -> None:
        require_tenant(self.tenant_id)
        self.frontend.check("frontend", "frontend")
        self.backend.check("backend", "backend")
        if self.range is None:
            raise InvalidArgument("range", "required")
        self.range.check()
        if self.bucket_s and not MIN_BUCKET_S <= self.bucket_s <= MAX_BUCKET_S:
            raise InvalidArgument("bucket_s", f"0 or {MIN_BUCKET_S} to {MAX_BUCKET_S} seconds, got {self.bucket_s}")
        if self.sample_size > MAX_SAMPLE:
            raise InvalidArgument("sample_size", f"at most {MAX_SAMPLE}, got {self.sample_size}")


@dataclass
class Bucket:
    start: datetime
    frontend: int = 0
    backend: int = 0
    matched: int = 0
    frontend_only: int = 0
    backend_only: int = 0
    frontend_duplicates: int = 0
    backend_duplicates: int = 0

    @property
    def loss_rate(self) -> float:
        front_requests = self.matched + self.frontend_only
        return self.frontend_only / front_requests if front_requests else 0.0

    def add(self, other: Bucket) -> None:
        self.frontend += other.frontend
        self.backend += other.backend
        self.matched += other.matched
        self.frontend_only += other.frontend_only
        self.backend_only += other.backend_only
        self.frontend_duplicates += other.frontend_duplicates
        self.backend_duplicates += other.backend_duplicates


@dataclass
class Discrepancy:
    buckets: list[Bucket]
    total: Bucket
    frontend_only_sample: list[str] = field(default_factory=list)
    backend_only_sample: list[str] = field(default_factory=list)


def run(ch: ClickHouse, query: DiscrepancyQuery) -> Discrepancy:
    query.check()
    assert query.range is not None
    bucket_s = query.bucket_s or max(query.range.seconds, 1)
    params: dict[str, Any] = {
        "tenant": query.tenant_id,
        "start": query.range.start,
        "end": query.range.end,
        "start_s": int(query.range.start.timestamp()),
        "bucket_s": bucket_s,
        "sample_size": max(query.sample_size, 1),  # groupArray(0) is not allowed
    }
    per_request = PER_REQUEST.format(
        frontend=query.frontend.condition("f", params), backend=query.backend.condition("b", params)
    )
    buckets, front_only, back_only = [], set(), set()
    for index, *figures, front_sample, back_sample in ch.query(BUCKETS.format(per_request=per_request), params):
        start = query.range.start + timedelta(seconds=int(index) * bucket_s)
        buckets.append(Bucket(start, *(int(figure) for figure in figures)))
        front_only.update(front_sample)
        back_only.update(back_sample)
    total = Bucket(query.range.start)
    for bucket in buckets:
        total.add(bucket)
    # Samples are collected in the same pass (any few per bucket), then the first ones by id kept.
    size = query.sample_size
    return Discrepancy(buckets, total, sorted(front_only)[:size], sorted(back_only)[:size])
