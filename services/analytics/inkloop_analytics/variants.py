"""A/B comparison per model variant: requests, success rate, latency p50/p95, downloads per success.

Rows are first reduced to one per event id (a repeated event must not weigh twice in a percentile).
Latency is `latency_s` of SUCCEEDED events (seconds from acceptance). Percentiles are exact:
quantileExact picks the element at floor(level × n) of the sorted values, no interpolation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from inkloop.errors import InvalidArgument
from inkloop_analytics.matchers import TimeRange
from inkloop_analytics.storage import ClickHouse

# Empty tenant = every tenant (the gateway only lets admins ask for that).
# Aliases differ from column names: an alias named like a column would replace it in WHERE.
VARIANTS = """
SELECT event_variant,
    countIf(event_type = 'requested'),
    countIf(event_type = 'succeeded'),
    quantileExactIf(0.5)(event_latency_s, event_type = 'succeeded'),
    quantileExactIf(0.95)(event_latency_s, event_type = 'succeeded'),
    countIf(event_type = 'downloaded')
FROM (
    SELECT event_id, any(variant) AS event_variant, any(type) AS event_type, any(latency_s) AS event_latency_s
    FROM backend_events
    WHERE (%(tenant)s = '' OR tenant_id = %(tenant)s)
        AND time >= toDateTime(%(start)s, 'UTC') AND time < toDateTime(%(end)s, 'UTC')
        AND type IN ('requested', 'succeeded', 'downloaded')
    GROUP BY event_id
)
GROUP BY event_variant
ORDER BY event_variant
"""


@dataclass(frozen=True)
class CompareVariantsQuery:
    tenant_id: str
    range: TimeRange | None

    def check(self) -> None:
        if self.range is None:
            raise InvalidArgument("range", "required")
        self.range.check()


@dataclass(frozen=True)
class VariantStats:
    variant: str
    requests: int
    successes: int
    latency_p50_s: float
    latency_p95_s: float
    downloads: int

    @property
    def success_rate(self) -> float:
        return self.successes / self.requests if self.requests else 0.0

    @property
    def downloads_per_success(self) -> float:
        return self.downloads / self.successes if self.successes else 0.0


def run(ch: ClickHouse, query: CompareVariantsQuery) -> list[VariantStats]:
    query.check()
    assert query.range is not None
    params: dict[str, Any] = {"tenant": query.tenant_id, "start": query.range.start, "end": query.range.end}
    return [
        VariantStats(variant, int(requests), int(successes), float(p50), float(p95), int(downloads))
        for variant, requests, successes, p50, p95, downloads in ch.query(VARIANTS, params)
    ]
