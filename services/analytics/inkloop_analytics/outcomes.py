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
Breakdowns: language class, length bucket, variant, kind or template (the REQUESTED event's
`template_id`, "" for none). A language-class filter counts only the requests of that class, each
still judged among all its user's requests (a later request of another class can regenerate it).
Dwell: seconds from a request's result (SUCCEEDED) to the user's next request within the window, or,
when none followed, to the last view or download of the result; results with neither have none.

Retry loops: a user is looping on a language class when, after a request of it, they made at least
`min_regenerations` more requests of the same intent within that many windows of it and accepted
none of those images (nor the first).

Everything is one query per answer on either engine: requests are reduced per request id to what the
answer needs (its time, intent, settled state and one value: the breakdown's, or for a readout per
request its id), then per user into arrays that each request is compared against. `classified_sql`
is that classification as a subquery, one row per request, for other readouts (experiments, template
ranking). 18.16 has no bitCount: the Hamming distance is a 32-bit SWAR popcount of each half of the
XOR, spelled out (`_hamming`), and computed only for the pairs within the window.
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

BREAKDOWNS = ("", "language_class", "length_bucket", "variant", "kind", "template")
LANGUAGE_CLASSES = ("zh", "en", "mixed", "other")
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
# from its store), and the rows of one event id are equal. A request id with no REQUESTED event has
# asked_at 0 (minIf of nothing), so the range test drops it. `settled`: 1 failed, 2 accepted, 0 neither
# (`seen`, one aggregate for both flags: bit 1 a FAILED event, bit 2 a DOWNLOADED one).
# `{columns}` adds only what the answer needs of the request (see `_per_user`).
PER_REQUEST = """
SELECT request_id,
    anyIf(user_id, type = 'requested') AS actor,
    toUInt32(minIf(time, type = 'requested')) AS asked_at,
    anyIf(prompt_signature, type = 'requested') AS intent,
    multiIf(bitAnd(groupBitOr(multiIf(type = 'failed', 1, type = 'downloaded', 2, 0)) AS seen, 1), 1,
        bitAnd(seen, 2) != 0 OR request_id IN (
        SELECT base_request_id FROM backend_events
        WHERE tenant_id = %(tenant)s AND type = 'requested' AND base_request_id != ''
            AND time >= toDateTime(%(start)s, 'UTC') AND time < toDateTime(%(late_end)s, 'UTC')
    ), 2, 0) AS settled{columns}
FROM backend_events
WHERE tenant_id = %(tenant)s AND request_id != ''
    AND time >= toDateTime(%(start)s, 'UTC') AND time < toDateTime(%(late_end)s, 'UTC')
    AND type IN ('requested', 'succeeded', 'failed', 'downloaded', 'viewed')
GROUP BY request_id
HAVING asked_at >= %(start_s)s AND asked_at < %(end_s)s
"""
# Per-request columns beyond the above, each carried to the user's arrays under its array's name.
GROUP_VALUE = "group_value"  # the breakdown value, or what a caller reads per request (its id)
COUNTED = "counted"  # of the language class asked for (every request still regenerates others)
RESULT_AT = "result_at"  # seconds of SUCCEEDED (0: none)
LAST_LOOK_AT = "last_look_at"  # seconds of the last view or download (0: none)
ARRAYS = {GROUP_VALUE: "group_values", COUNTED: "counts", RESULT_AT: "result_times", LAST_LOOK_AT: "looks"}

# Each request beside the arrays of its user's requests (ARRAY JOIN unrolls them again).
PER_USER = """
SELECT actor, groupArray(asked_at) AS asks, groupArray(intent) AS intents, groupArray(settled) AS settles{arrays}
FROM ({per_request})
GROUP BY actor
"""

# Outcome codes: settled ones as they are, then regenerated (an open request whose user asked again
# for the same intent within the window: the time test first, so that only those pairs pay for the
# Hamming distance), else abandoned.
FAILED, ACCEPTED, REGENERATED, ABANDONED = 1, 2, 3, 4
CLASSIFIED = """
SELECT actor, asked_at, {group_value},
    if(settled != 0, settled, if(arrayExists(s -> {distance} <= %(bits)s, arrayFilter(
        (s, t) -> settled = 0 AND t > asked_at AND t - asked_at <= %(window)s, intents, asks)), 3, 4)) AS outcome{dwell}
FROM ({per_user})
ARRAY JOIN asks AS asked_at, intents AS intent, settles AS settled{joined}
{where}
"""
# The same requests before their users' arrays: failed and accepted are decided per request (`settled`,
# the outcome code when not 0); telling regenerated from abandoned takes CLASSIFIED.
SETTLED = """
SELECT actor, asked_at, {group_value}, settled AS outcome
FROM ({per_request})
{where}
"""
# Dwell: from the result to the user's next request within the window, else to the last view or download.
DWELL = """,
    result_at > 0 AND (next_at > 0 OR last_look_at >= result_at) AS has_dwell,
    if(next_at > 0, next_at, last_look_at) - result_at AS dwell,
    arrayReduce('min', arrayFilter(t -> result_at > 0 AND t > asked_at AND t >= result_at
        AND t - result_at <= %(window)s, asks)) AS next_at"""

# Counts in OUTCOMES order (accepted, regenerated, abandoned, failed), then dwell.
GROUPED = """
SELECT group_value, count(), countIf(outcome = 2), countIf(outcome = 3), countIf(outcome = 4), countIf(outcome = 1),
    sumIf(dwell, has_dwell), countIf(has_dwell)
FROM ({classified})
GROUP BY group_value
"""

# A loop starts at a request when enough later requests of its intent follow within `span` seconds,
# none of them (nor it) accepted. Per later request within the span: 0 another intent, 1 the same, 2
# the same and accepted. The value carried is the language class.
LOOPS = """
SELECT group_value, uniqExact(actor), uniqExactIf(actor, looping)
FROM (
    SELECT actor, group_value,
        arrayMap((s, a) -> if({distance} <= %(bits)s, if(a = 2, 2, 1), 0),
            arrayFilter((s, t) -> settled != 2 AND t > asked_at AND t - asked_at <= %(span)s, intents, asks),
            arrayFilter((a, t) -> settled != 2 AND t > asked_at AND t - asked_at <= %(span)s, settles, asks)
        ) AS same_intent,
        settled != 2 AND arrayCount(c -> c > 0, same_intent) >= %(loop)s AND NOT has(same_intent, 2) AS looping
    FROM ({per_user})
    ARRAY JOIN asks AS asked_at, intents AS intent, group_values AS group_value, settles AS settled
)
GROUP BY group_value
"""


@dataclass(frozen=True)
class OutcomesQuery:
    tenant_id: str
    range: TimeRange | None
    rules: OutcomeRules
    breakdown: str = ""
    #: Count only requests of this language class ("" = all); every request still regenerates others.
    language_class: str = ""

    def check(self) -> None:
        require_tenant(self.tenant_id)
        if self.range is None:
            raise InvalidArgument("range", "required")
        self.range.check()
        if self.breakdown not in BREAKDOWNS:
            raise InvalidArgument("breakdown", f"must be one of {', '.join(repr(b) for b in BREAKDOWNS)}")
        check_language_class(self.language_class)
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


def check_language_class(value: str, field: str = "language_class") -> None:
    if value and value not in LANGUAGE_CLASSES:
        raise InvalidArgument(field, f"must be one of {', '.join(LANGUAGE_CLASSES)} or empty")


def _requested(column: str) -> str:
    """A column of the request's REQUESTED event, inside PER_REQUEST."""
    return f"anyIf({column}, type = 'requested')"


def value_expression(breakdown: str) -> str:
    """The breakdown value of one request, inside PER_REQUEST."""
    if breakdown == "language_class":
        return _requested("prompt_language")
    if breakdown == "variant":
        return _requested("variant")
    if breakdown == "kind":
        return _requested("kind")
    if breakdown == "template":
        return _requested("template_id")
    if breakdown == "length_bucket":
        # Bucket index = edges below the length, a sum of comparisons (18.16: no lambda over constants).
        chars = _requested("prompt_length")
        return "toUInt8(" + " + ".join(f"({chars} > {edge})" for edge in DEFAULT_LENGTH_EDGES) + ")"
    return ""


def _per_user(columns: dict[str, str]) -> str:
    """PER_USER over PER_REQUEST with `columns` (name -> expression over the request's rows) added."""
    extra = "".join(f",\n    {expression} AS {name}" for name, expression in columns.items())
    arrays = "".join(f", groupArray({name}) AS {ARRAYS[name]}" for name in columns)
    return PER_USER.format(per_request=PER_REQUEST.format(columns=extra), arrays=arrays)


def classified_sql(value: str = "", language_class: str = "", dwell: bool = False) -> str:
    """One row per request REQUESTED in the range (of `language_class` when given): `actor` (its user
    id), `asked_at` (UInt32 seconds), `group_value` (the expression `value` over the request's
    back-end rows, e.g. "request_id" or an `anyIf(…, type = 'requested')`; '' without one), `outcome`
    (FAILED, ACCEPTED, REGENERATED or ABANDONED) and, with `dwell`, `has_dwell` and `dwell` (seconds).
    Its parameters are `params()`."""
    columns = {GROUP_VALUE: value} if value else {}
    if language_class:
        columns[COUNTED] = f"{_requested('prompt_language')} = %(language)s"
    if dwell:
        columns[RESULT_AT] = "toUInt32(minIf(time, type = 'succeeded'))"
        columns[LAST_LOOK_AT] = "toUInt32(maxIf(time, type IN ('viewed', 'downloaded')))"
    return CLASSIFIED.format(
        per_user=_per_user(columns),
        group_value=GROUP_VALUE if value else f"'' AS {GROUP_VALUE}",
        distance=_hamming("s", "intent"),
        dwell=DWELL if dwell else "",
        joined="".join(f", {ARRAYS[name]} AS {name}" for name in columns),
        where=f"WHERE {COUNTED}" if language_class else "",
    )


def settled_sql(value: str = "", language_class: str = "") -> str:
    """Like `classified_sql` without dwell, but `outcome` is FAILED, ACCEPTED or 0 (regenerated or
    abandoned: those need the user's other requests). Enough, and much cheaper, for counting requests
    and accepted ones."""
    columns = {GROUP_VALUE: value or "''"}
    if language_class:
        columns[COUNTED] = f"{_requested('prompt_language')} = %(language)s"
    per_request = PER_REQUEST.format(columns="".join(f",\n    {e} AS {name}" for name, e in columns.items()))
    return SETTLED.format(
        per_request=per_request, group_value=GROUP_VALUE, where=f"WHERE {COUNTED}" if language_class else ""
    )


def params(tenant_id: str, time_range: TimeRange, rules: OutcomeRules, language_class: str = "") -> dict[str, Any]:
    return {
        "tenant": tenant_id,
        "start": time_range.start,
        "end": time_range.end,
        # Whole seconds, as `toDateTime(%(start)s, 'UTC')` reads the bound datetimes.
        "start_s": math.floor(time_range.start.timestamp()),
        "end_s": math.floor(time_range.end.timestamp()),
        "late_end": time_range.end + LATE_EVENTS,
        "window": rules.regenerate_window_s,
        "bits": rules.max_intent_distance_bits,
        "language": language_class,
    }


def run(ch: ClickHouse, query: OutcomesQuery) -> Outcomes:
    query.check()
    assert query.range is not None
    classified = classified_sql(value_expression(query.breakdown), query.language_class, dwell=True)
    labels = length_labels(DEFAULT_LENGTH_EDGES)
    groups = []
    sql = GROUPED.format(classified=classified)
    for value, *counts in ch.query(sql, params(query.tenant_id, query.range, query.rules, query.language_class)):
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
    bound = params(query.tenant_id, query.range, query.rules)
    bound["span"] = query.rules.regenerate_window_s * query.min_regenerations
    bound["loop"] = query.min_regenerations
    per_user = _per_user({GROUP_VALUE: _requested("prompt_language")})
    sql = LOOPS.format(per_user=per_user, distance=_hamming("s", "intent"))
    found = {str(lang): (int(users), int(looping)) for lang, users, looping in ch.query(sql, bound)}
    order = [lang for lang in LANGUAGE_ORDER if lang in found] + sorted(set(found) - set(LANGUAGE_ORDER))
    groups = [RetryLoopGroup(lang, *found[lang]) for lang in order]
    return RetryLoops(groups, query.rules, query.min_regenerations)
