"""Outcomes as users perceive them: was a generation accepted, regenerated, abandoned, or did it fail?

A request is a request id with a REQUESTED back-end event in the range; its user, prompt features,
variant and kind are those of that event. Its one outcome is decided in this order:

- failed: the job failed;
- accepted: an image of it was downloaded, or it is the base of an inpaint/outpaint request
  (`base_request_id`, which the gateway fills when the edited image came from its image store);
- regenerated: the same user asked again for the same intent within `regenerate_window_s`: a later
  request whose prompt signature (a keyed SimHash, `inkloop.prompts`) differs in at most
  `max_intent_distance_bits` bits. Within the window means within one session: no pause between the
  two can be longer than the window;
- abandoned: none of these (for requests of the last window before now, possibly not yet).

Downloads and edits are counted up to a day after the range, so late ones still accept a request.
Dwell: seconds from a request's result (SUCCEEDED) to the user's next request within the window, or,
when none followed, to the last view or download of the result; results with neither have none.

Retry loops: a user is looping on a language class when, after a request of it, they made at least
`min_regenerations` more requests of the same intent within that many windows of it and accepted
none of those images (nor the first).

Everything is one query per answer on either engine: requests are reduced per request id, then per
user into arrays that each request is compared against. 18.16 has no bitCount: the Hamming distance
is a 32-bit SWAR popcount of each half of the XOR, spelled out (`_hamming`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

from inkloop.errors import InvalidArgument
from inkloop_analytics.insights import DEFAULT_LENGTH_EDGES, LANGUAGE_ORDER, length_labels
from inkloop_analytics.matchers import TimeRange, require_tenant
from inkloop_analytics.storage import ClickHouse

BREAKDOWNS = ("", "language_class", "length_bucket", "variant", "kind")
OUTCOMES = ("accepted", "regenerated", "abandoned", "failed")
LATE_EVENTS = timedelta(days=1)
MAX_WINDOW_S = 7 * 24 * 3600
DEFAULT_MIN_REGENERATIONS = 3
MAX_MIN_REGENERATIONS = 100


@dataclass(frozen=True)
class OutcomeRules:
    regenerate_window_s: int = 1800
    max_intent_distance_bits: int = 12

    def check(self, field: str = "rules") -> None:
        if not 1 <= self.regenerate_window_s <= MAX_WINDOW_S:
            raise InvalidArgument(f"{field}.regenerate_window_s", f"must be 1 to {MAX_WINDOW_S} seconds")
        if not 1 <= self.max_intent_distance_bits <= 63:
            raise InvalidArgument(f"{field}.max_intent_distance_bits", "must be 1 to 63")

    def overridden(self, window_s: int, distance_bits: int) -> OutcomeRules:
        """These rules with the non-zero values of a request."""
        return replace(
            self,
            regenerate_window_s=window_s or self.regenerate_window_s,
            max_intent_distance_bits=distance_bits or self.max_intent_distance_bits,
        )


DEFAULT_RULES = OutcomeRules()


def _popcount32(x: str) -> str:
    a = f"({x} - bitAnd(bitShiftRight({x}, 1), 1431655765))"
    b = f"(bitAnd({a}, 858993459) + bitAnd(bitShiftRight({a}, 2), 858993459))"
    c = f"bitAnd({b} + bitShiftRight({b}, 4), 252645135)"
    return f"bitAnd(bitShiftRight({c} * 16843009, 24), 255)"


def _hamming(left: str, right: str) -> str:
    """Bits in which two UInt64 signatures differ (0-64), portable to 18.16."""
    xor = f"bitXor({left}, {right})"
    return f"({_popcount32(f'bitShiftRight({xor}, 32)')} + {_popcount32(f'bitAnd({xor}, 4294967295)')})"


# Aliases differ from column names (and function names): an alias named like a column would replace it.
# anyIf is exact here: a request id has one REQUESTED event (the gateway answers a repeated request id
# from its store), and the rows of one event id are equal.
PER_REQUEST = """
SELECT request_id,
    anyIf(user_id, type = 'requested') AS actor,
    toUInt32(minIf(time, type = 'requested')) AS asked_at,
    anyIf(prompt_signature, type = 'requested') AS intent,
    anyIf(prompt_language, type = 'requested') AS lang,
    anyIf(prompt_length, type = 'requested') AS chars,
    anyIf(variant, type = 'requested') AS model_variant,
    anyIf(kind, type = 'requested') AS task_kind,
    max(type = 'failed') AS has_failed,
    max(type = 'downloaded') OR request_id IN (
        SELECT base_request_id FROM backend_events
        WHERE tenant_id = %(tenant)s AND type = 'requested' AND base_request_id != ''
            AND time >= toDateTime(%(start)s, 'UTC') AND time < toDateTime(%(late_end)s, 'UTC')
    ) AS is_accepted,
    max(type = 'succeeded') AS has_result,
    toUInt32(minIf(time, type = 'succeeded')) AS result_at,
    toUInt32(maxIf(time, type IN ('viewed', 'downloaded'))) AS last_look_at
FROM backend_events
WHERE tenant_id = %(tenant)s AND request_id != ''
    AND time >= toDateTime(%(start)s, 'UTC') AND time < toDateTime(%(late_end)s, 'UTC')
    AND type IN ('requested', 'succeeded', 'failed', 'downloaded', 'viewed')
GROUP BY request_id
HAVING countIf(type = 'requested') > 0
    AND minIf(time, type = 'requested') >= toDateTime(%(start)s, 'UTC')
    AND minIf(time, type = 'requested') < toDateTime(%(end)s, 'UTC')
"""

# Each request beside the arrays of its user's requests (ARRAY JOIN unrolls them again).
PER_USER = """
SELECT actor, groupArray(request_id) AS ids, groupArray(asked_at) AS asks, groupArray(intent) AS intents,
    groupArray(lang) AS langs, groupArray(chars) AS lengths, groupArray(model_variant) AS models,
    groupArray(task_kind) AS kinds, groupArray(has_failed) AS failures, groupArray(is_accepted) AS accepts,
    groupArray(has_result) AS results, groupArray(result_at) AS result_times, groupArray(last_look_at) AS looks
FROM ({per_request})
GROUP BY actor
"""

CLASSIFIED = """
SELECT request_id, lang, chars, model_variant, task_kind,
    multiIf(has_failed, 'failed', is_accepted, 'accepted', regenerated, 'regenerated', 'abandoned') AS outcome,
    has_result AND (next_at > 0 OR last_look_at >= result_at) AS has_dwell,
    if(next_at > 0, next_at, last_look_at) - result_at AS dwell
FROM (
    SELECT request_id, lang, chars, model_variant, task_kind, has_failed, is_accepted, has_result, result_at,
        last_look_at,
        arrayExists((t, s) -> t > asked_at AND t - asked_at <= %(window)s AND {distance} <= %(bits)s,
            asks, intents) AS regenerated,
        arrayReduce('min', arrayFilter(t -> t > asked_at AND t >= result_at AND t - result_at <= %(window)s,
            asks)) AS next_at
    FROM ({per_user})
    ARRAY JOIN ids AS request_id, asks AS asked_at, intents AS intent, langs AS lang, lengths AS chars,
        models AS model_variant, kinds AS task_kind, failures AS has_failed, accepts AS is_accepted,
        results AS has_result, result_times AS result_at, looks AS last_look_at
)
"""

GROUPED = """
SELECT {group} AS group_value, count(), countIf(outcome = 'accepted'), countIf(outcome = 'regenerated'),
    countIf(outcome = 'abandoned'), countIf(outcome = 'failed'), sumIf(dwell, has_dwell), countIf(has_dwell)
FROM ({classified})
GROUP BY group_value
"""

# A loop starts at a request when enough later requests of its intent follow within `span` seconds,
# none of them (nor it) accepted.
LOOPS = """
SELECT lang, uniqExact(actor), uniqExactIf(actor, looping)
FROM (
    SELECT actor, lang,
        NOT is_accepted AND length(arrayFilter((t, s, a) -> t > asked_at AND t - asked_at <= %(span)s
            AND {distance} <= %(bits)s, asks, intents, accepts)) >= %(loop)s
        AND NOT arrayExists((t, s, a) -> a AND t > asked_at AND t - asked_at <= %(span)s
            AND {distance} <= %(bits)s, asks, intents, accepts) AS looping
    FROM ({per_user})
    ARRAY JOIN asks AS asked_at, intents AS intent, langs AS lang, accepts AS is_accepted
)
GROUP BY lang
"""


@dataclass(frozen=True)
class OutcomesQuery:
    tenant_id: str
    range: TimeRange | None
    rules: OutcomeRules
    breakdown: str = ""

    def check(self) -> None:
        require_tenant(self.tenant_id)
        if self.range is None:
            raise InvalidArgument("range", "required")
        self.range.check()
        if self.breakdown not in BREAKDOWNS:
            raise InvalidArgument("breakdown", f"must be one of {', '.join(repr(b) for b in BREAKDOWNS)}")
        self.rules.check()


@dataclass(frozen=True)
class OutcomeGroup:
    value: str
    requests: int
    accepted: int
    regenerated: int
    abandoned: int
    failed: int
    dwell_sum_s: float
    dwells: int

    @property
    def perceived_success(self) -> float:
        return self.accepted / self.requests if self.requests else math.nan

    @property
    def regenerations_per_accepted(self) -> float:
        return self.regenerated / self.accepted if self.accepted else math.nan

    @property
    def mean_dwell_s(self) -> float:
        return self.dwell_sum_s / self.dwells if self.dwells else math.nan


@dataclass(frozen=True)
class Outcomes:
    groups: list[OutcomeGroup]
    rules: OutcomeRules


@dataclass(frozen=True)
class RetryLoopsQuery:
    tenant_id: str
    range: TimeRange | None
    rules: OutcomeRules
    min_regenerations: int = DEFAULT_MIN_REGENERATIONS

    def check(self) -> None:
        require_tenant(self.tenant_id)
        if self.range is None:
            raise InvalidArgument("range", "required")
        self.range.check()
        self.rules.check()
        if not 1 <= self.min_regenerations <= MAX_MIN_REGENERATIONS:
            raise InvalidArgument("min_regenerations", f"must be 1 to {MAX_MIN_REGENERATIONS}")


@dataclass(frozen=True)
class RetryLoopGroup:
    language_class: str
    users: int
    looping_users: int

    @property
    def loop_rate(self) -> float:
        return self.looping_users / self.users if self.users else math.nan


@dataclass(frozen=True)
class RetryLoops:
    groups: list[RetryLoopGroup]
    rules: OutcomeRules
    min_regenerations: int


def _group_expression(breakdown: str) -> str:
    if breakdown == "language_class":
        return "lang"
    if breakdown == "variant":
        return "model_variant"
    if breakdown == "kind":
        return "task_kind"
    if breakdown == "length_bucket":
        # Bucket index = edges below the length, a sum of comparisons (18.16: no lambda over constants).
        return "toString(" + " + ".join(f"(chars > {edge})" for edge in DEFAULT_LENGTH_EDGES) + ")"
    return "''"


def _params(tenant_id: str, time_range: TimeRange, rules: OutcomeRules) -> dict[str, Any]:
    return {
        "tenant": tenant_id,
        "start": time_range.start,
        "end": time_range.end,
        "late_end": time_range.end + LATE_EVENTS,
        "window": rules.regenerate_window_s,
        "bits": rules.max_intent_distance_bits,
    }


def run(ch: ClickHouse, query: OutcomesQuery) -> Outcomes:
    query.check()
    assert query.range is not None
    per_user = PER_USER.format(per_request=PER_REQUEST)
    classified = CLASSIFIED.format(per_user=per_user, distance=_hamming("s", "intent"))
    sql = GROUPED.format(group=_group_expression(query.breakdown), classified=classified)
    labels = length_labels(DEFAULT_LENGTH_EDGES)
    groups = []
    for value, *counts in ch.query(sql, _params(query.tenant_id, query.range, query.rules)):
        name = labels[int(value)] if query.breakdown == "length_bucket" else str(value)
        requests, accepted, regenerated, abandoned, failed, dwell_sum, dwells = counts
        groups.append(
            OutcomeGroup(
                name,
                int(requests),
                int(accepted),
                int(regenerated),
                int(abandoned),
                int(failed),
                float(dwell_sum),
                int(dwells),
            )
        )
    groups.sort(key=lambda group: (-group.requests, group.value))
    return Outcomes(groups, query.rules)


def retry_loops(ch: ClickHouse, query: RetryLoopsQuery) -> RetryLoops:
    query.check()
    assert query.range is not None
    params = _params(query.tenant_id, query.range, query.rules)
    params["span"] = query.rules.regenerate_window_s * query.min_regenerations
    params["loop"] = query.min_regenerations
    sql = LOOPS.format(per_user=PER_USER.format(per_request=PER_REQUEST), distance=_hamming("s", "intent"))
    found = {str(lang): (int(users), int(looping)) for lang, users, looping in ch.query(sql, params)}
    order = [lang for lang in LANGUAGE_ORDER if lang in found] + sorted(set(found) - set(LANGUAGE_ORDER))
    groups = [RetryLoopGroup(lang, *found[lang]) for lang in order]
    return RetryLoops(groups, query.rules, query.min_regenerations)
