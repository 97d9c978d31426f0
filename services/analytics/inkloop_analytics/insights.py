"""Prompt insights: volume and success by prompt length bucket and language class; dwell by language.

A request is a request id with a REQUESTED back-end event in the range; its prompt features are
those of that event, and it succeeded when the same request id has a SUCCEEDED event (at any time
up to a day after the range, so late successes count).

Dwell: seconds from the visitor's latest page view of the same session (at or before the click) to
the generate click (`_trackEvent('generate', 'click')`) that carried the request id. Requests with no
such click or page view have no dwell and are left out of the median.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from itertools import pairwise
from typing import Any

from inkloop.errors import InvalidArgument
from inkloop_analytics.matchers import CLICK_ACTION, GENERATE_CATEGORY, TimeRange, require_tenant
from inkloop_analytics.storage import ClickHouse

DEFAULT_LENGTH_EDGES = (20, 50, 100, 200, 500)
MAX_EDGES = 32
LANGUAGE_ORDER = ("zh", "en", "mixed", "other", "")

# Aliases avoid function names (`length`): 18.16 then fails to resolve them inside lambdas.
PER_REQUEST = """
SELECT request_id, lang, chars, succeeded, has_dwell, dwell
FROM (
    SELECT request_id,
        argMinIf(prompt_language, time, type = 'requested') AS lang,
        argMinIf(prompt_length, time, type = 'requested') AS chars,
        max(type = 'succeeded') AS succeeded
    FROM backend_events
    WHERE tenant_id = %(tenant)s AND request_id != ''
        AND time >= toDateTime(%(start)s, 'UTC') AND time < toDateTime(%(late_end)s, 'UTC')
        AND type IN ('requested', 'succeeded')
    GROUP BY request_id
    HAVING minIf(time, type = 'requested') >= toDateTime(%(start)s, 'UTC')
        AND minIf(time, type = 'requested') < toDateTime(%(end)s, 'UTC')
        AND countIf(type = 'requested') > 0
) AS requests ANY LEFT JOIN (
    SELECT request_id, toUInt8(1) AS has_dwell, toFloat64(click_t - arrayReduce('max', arrayFilter(
        x -> x <= click_t, page_views))) AS dwell
    FROM (
        SELECT request_id, session_id, min(toUInt32(time)) AS click_t
        FROM frontend_events
        WHERE tenant_id = %(tenant)s AND request_id != '' AND session_id != ''
            AND time >= toDateTime(%(lookup_start)s, 'UTC') AND time < toDateTime(%(late_end)s, 'UTC')
            AND category = %(generate)s AND action = %(click)s
        GROUP BY request_id, session_id
    ) AS clicks ALL INNER JOIN (
        SELECT session_id, groupArray(toUInt32(time)) AS page_views
        FROM frontend_events
        WHERE tenant_id = %(tenant)s AND type = 'page_view' AND session_id != ''
            AND time >= toDateTime(%(lookup_start)s, 'UTC') AND time < toDateTime(%(late_end)s, 'UTC')
        GROUP BY session_id
    ) AS sessions USING session_id
    WHERE arrayExists(x -> x <= click_t, page_views)
) AS dwells USING request_id
"""

# The bucket index is the number of edges below the length, written as a sum of comparisons (one
# per edge, values bound): 18.16 cannot resolve a column inside a lambda over a constant array.
BY_LENGTH = """
SELECT {edges_below} AS bucket, count(), sum(succeeded), quantileExactIf(0.5)(dwell, has_dwell = 1)
FROM ({per_request})
GROUP BY bucket
"""

BY_LANGUAGE = """
SELECT lang, count(), sum(succeeded), quantileExactIf(0.5)(dwell, has_dwell = 1)
FROM ({per_request})
GROUP BY lang
"""


@dataclass(frozen=True)
class PromptInsightsQuery:
    tenant_id: str
    range: TimeRange | None
    length_bucket_edges: tuple[int, ...] = ()

    @property
    def edges(self) -> tuple[int, ...]:
        return self.length_bucket_edges or DEFAULT_LENGTH_EDGES

    def check(self) -> None:
        require_tenant(self.tenant_id)
        if self.range is None:
            raise InvalidArgument("range", "required")
        self.range.check()
        edges = self.length_bucket_edges
        if len(edges) > MAX_EDGES:
            raise InvalidArgument("length_bucket_edges", f"at most {MAX_EDGES}")
        if any(later <= earlier for earlier, later in pairwise(edges)) or 0 in edges:
            raise InvalidArgument("length_bucket_edges", "must be positive and strictly ascending")


@dataclass(frozen=True)
class PromptGroup:
    label: str
    requests: int
    successes: int
    median_dwell_s: float

    @property
    def success_rate(self) -> float:
        return self.successes / self.requests if self.requests else 0.0


@dataclass(frozen=True)
class PromptInsights:
    by_length: list[PromptGroup]
    by_language: list[PromptGroup]


def length_labels(edges: tuple[int, ...]) -> list[str]:
    """["0-20", "21-50", …, "501+"] for edges (20, 50, …, 500)."""
    labels, low = [], 0
    for edge in edges:
        labels.append(f"{low}-{edge}")
        low = edge + 1
    return [*labels, f"{low}+"]


def run(ch: ClickHouse, query: PromptInsightsQuery) -> PromptInsights:
    query.check()
    assert query.range is not None
    params: dict[str, Any] = {
        "tenant": query.tenant_id,
        "start": query.range.start,
        "end": query.range.end,
        "late_end": query.range.end + timedelta(days=1),
        "lookup_start": query.range.start - timedelta(days=1),
        **{f"edge{index}": edge for index, edge in enumerate(query.edges)},
        "generate": GENERATE_CATEGORY,
        "click": CLICK_ACTION,
    }
    labels = length_labels(query.edges)
    edges_below = " + ".join(f"toUInt8(chars > %(edge{index})s)" for index in range(len(query.edges)))
    by_length = {
        int(bucket): PromptGroup(labels[int(bucket)], int(requests), int(successes), float(dwell))
        for bucket, requests, successes, dwell in ch.query(
            BY_LENGTH.format(per_request=PER_REQUEST, edges_below=edges_below), params
        )
    }
    by_language = {
        language: PromptGroup(language or "unknown", int(requests), int(successes), float(dwell))
        for language, requests, successes, dwell in ch.query(BY_LANGUAGE.format(per_request=PER_REQUEST), params)
    }
    return PromptInsights(
        by_length=[by_length[index] for index in sorted(by_length)],
        by_language=[by_language[name] for name in LANGUAGE_ORDER if name in by_language],
    )
