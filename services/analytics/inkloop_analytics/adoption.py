"""Feature adoption: exposure → click of page entries, plus page views and unique visitors.

An entry is a `_trackEvent` category; its exposures are events with action "exposure" and its clicks
events with action "click". Counts are distinct event ids; unique visitors are distinct visitor ids
with any front-end event in the range.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from inkloop.errors import InvalidArgument
from inkloop_analytics.matchers import CLICK_ACTION, EXPOSURE_ACTION, TimeRange, require_tenant
from inkloop_analytics.storage import ClickHouse

MAX_FEATURES = 100

FEATURES = """
SELECT category,
    uniqExactIf(event_id, action = %(exposure)s),
    uniqExactIf(event_id, action = %(click)s),
    uniqExactIf(visitor_id, action = %(exposure)s),
    uniqExactIf(visitor_id, action = %(click)s)
FROM frontend_events
WHERE tenant_id = %(tenant)s
    AND time >= toDateTime(%(start)s, 'UTC') AND time < toDateTime(%(end)s, 'UTC') AND type = 'track_event'
    AND action IN (%(exposure)s, %(click)s) {only_features}
GROUP BY category
ORDER BY category
"""

TRAFFIC = """
SELECT uniqExactIf(event_id, type = 'page_view'), uniqExact(visitor_id)
FROM frontend_events
WHERE tenant_id = %(tenant)s AND time >= toDateTime(%(start)s, 'UTC') AND time < toDateTime(%(end)s, 'UTC')
"""


@dataclass(frozen=True)
class FeatureAdoptionQuery:
    tenant_id: str
    range: TimeRange | None
    features: tuple[str, ...] = ()

    def check(self) -> None:
        require_tenant(self.tenant_id)
        if self.range is None:
            raise InvalidArgument("range", "required")
        self.range.check()
        if len(self.features) > MAX_FEATURES:
            raise InvalidArgument("features", f"at most {MAX_FEATURES}")


@dataclass(frozen=True)
class FeatureAdoption:
    feature: str
    exposures: int
    clicks: int
    exposed_visitors: int
    clicked_visitors: int

    @property
    def click_rate(self) -> float:
        return self.clicks / self.exposures if self.exposures else 0.0


@dataclass(frozen=True)
class Adoption:
    features: list[FeatureAdoption]
    page_views: int
    unique_visitors: int


def run(ch: ClickHouse, query: FeatureAdoptionQuery) -> Adoption:
    query.check()
    assert query.range is not None
    params: dict[str, Any] = {
        "tenant": query.tenant_id,
        "start": query.range.start,
        "end": query.range.end,
        "exposure": EXPOSURE_ACTION,
        "click": CLICK_ACTION,
        "features": query.features,
    }
    only = "AND category IN %(features)s" if query.features else ""
    found = {
        row[0]: FeatureAdoption(row[0], *(int(value) for value in row[1:]))
        for row in ch.query(FEATURES.format(only_features=only), params)
    }
    # Entries asked for by name are listed even when nobody saw them.
    names = list(query.features) if query.features else sorted(found)
    features = [found.get(name, FeatureAdoption(name, 0, 0, 0, 0)) for name in names]
    [(page_views, visitors)] = ch.query(TRAFFIC, params)
    return Adoption(features, int(page_views), int(visitors))
