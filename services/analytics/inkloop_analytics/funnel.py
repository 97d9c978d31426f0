"""Ordered conversion funnels with windowFunnel, on ClickHouse 18.16 and current alike.

Who goes through the funnel (the actor):
- "visitor" (default): front-end events count for their `visitor_id`; back-end events count for the
  visitor whose front-end event carried the same `request_id` (the generate click), so a funnel can
  run page view → click → requested → succeeded. Back-end events with no such click are left out.
  Where front-end events of several visitor ids carry one request id (one person on two devices,
  or a visitor id renewed between the click and a download), the earliest of them is the click:
  its visitor gets the back-end events (the smallest visitor id on a tie).
- "user": front-end events with a `user_id` and back-end events count for that user id.

An actor reaches step k when windowFunnel says so: steps in order, each within `window_s` of the
first, the first inside the range (later steps may fall up to `window_s` after its end).

Ties: event times are whole seconds, and a page's generate click and the gateway's REQUESTED event
for that request usually share one. Within a second, events are taken in step order: an event of an
earlier step comes before an event of a later step. windowFunnel itself orders equal times by
nothing fixed on 18.16 (by the order rows reached it, so the same visitor's funnel changed when
unrelated rows were added), so it is given a time that carries the rule: t' = (t - range start) *
TIE_SLOTS + the step's index, with the window scaled to keep "within window_s seconds" exact. An
event that matches several steps counts for each of them, in step order (as current ClickHouse
does natively); the rows of such steps are repeated, one per step, only when two steps' matchers
can match one event. Everything reported stays in seconds.

Median time to convert to step k: over the actors that reached step k, the seconds from their first
step-1 event in the range to the earliest chain step1 → step2 → … → step k after it. Where an actor
has several step-1 events this chain may differ from the one windowFunnel picked; such actors are
left out of the median if the chain from their first start does not reach step k.

Breakdown: the value of the property on the actor's earliest matching event that has one
("device" from front-end events, "variant" and "language_class" from back-end events), earliest by
the same rule (within a second, the earlier step); actors with none form the "" series.

Repeated rows of one event (not yet merged by ReplacingMergeTree) change nothing here: windowFunnel
levels, minima and per-actor counts are the same with or without the repeat.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from inkloop.errors import InvalidArgument
from inkloop_analytics.matchers import MAX_RANGE_DAYS, EventMatcher, TimeRange, require_tenant
from inkloop_analytics.storage import ClickHouse

MIN_STEPS, MAX_STEPS = 2, 16
MAX_WINDOW_S = 30 * 86_400
# Step times for the medians travel in one sorted array per actor: t * SHIFT + a bit mask of the
# steps 2..k the event matches (bit k for step k), so one groupArray serves every step.
SHIFT = 2 ** (MAX_STEPS + 1)
# windowFunnel's time: seconds since the range start, times TIE_SLOTS, plus the step index (ties).
# 18.16 takes only UInt32 and keeps these times in an Int32, so the longest range plus twice the
# longest window (the horizon, then windowFunnel's own reach), scaled, must stay below 2**31: about
# 0.7e9 here, where absolute seconds (1.8e9) times TIE_SLOTS would not fit.
TIE_SLOTS = MAX_STEPS
assert ((MAX_RANGE_DAYS + 1) * 86_400 + 2 * MAX_WINDOW_S) * TIE_SLOTS < 2**31

# Breakdown name -> (front-end column, back-end column); "''" where the stream has no such property.
BREAKDOWNS = {
    "": ("''", "''"),
    "device": ("device", "''"),
    "variant": ("''", "variant"),
    "language_class": ("''", "prompt_language"),
}
ACTORS = {"visitor": "visitor_id", "user": "user_id"}

FRONTEND_STEP_EVENTS = """
SELECT {actor} AS actor, toUInt32(time) AS t, {breakdown} AS bd, {flags}
FROM frontend_events
WHERE tenant_id = %(tenant)s
    AND time >= toDateTime(%(start)s, 'UTC') AND time < toDateTime(%(horizon)s, 'UTC')
    AND {actor} != '' AND ({any_step})
"""

BACKEND_STEP_EVENTS_BY_USER = """
SELECT user_id AS actor, toUInt32(time) AS t, {breakdown} AS bd, {flags}
FROM backend_events
WHERE tenant_id = %(tenant)s
    AND time >= toDateTime(%(start)s, 'UTC') AND time < toDateTime(%(horizon)s, 'UTC')
    AND user_id != '' AND ({any_step})
"""

# Back-end events reach a visitor through the request id of that visitor's front-end event. The
# click may precede the request by a little: the lookup reaches a day before the range. ALL, not ANY:
# the right side has one row per request id already, and current ClickHouse's ANY INNER JOIN would
# also keep only one left row per request id (18.16 keeps them all). argMin, not any: any() picks
# whichever row a thread read first, and on 18.16 the funnel's counts then varied from run to run.
BACKEND_STEP_EVENTS_BY_VISITOR = """
SELECT actor, toUInt32(time) AS t, {breakdown} AS bd, {flags}
FROM backend_events
ALL INNER JOIN (
    SELECT request_id, argMin(visitor_id, (time, visitor_id)) AS actor
    FROM frontend_events
    WHERE tenant_id = %(tenant)s AND request_id != ''
        AND time >= toDateTime(%(lookup_start)s, 'UTC') AND time < toDateTime(%(horizon)s, 'UTC')
    GROUP BY request_id
) AS clicks USING request_id
WHERE tenant_id = %(tenant)s
    AND time >= toDateTime(%(start)s, 'UTC') AND time < toDateTime(%(horizon)s, 'UTC') AND ({any_step})
"""

FUNNEL = """
SELECT bd_value, {step_figures}
FROM (
    SELECT level, bd_value, t1, {chain}
    FROM (
        SELECT actor,
            windowFunnel(%(funnel_window)s)(ts, {flag_names}) AS level,
            {bd_value} AS bd_value,
            minIf(t, c1) AS t1,
            {step_times}
        FROM ({events})
        GROUP BY actor
        HAVING level > 0
    )
)
GROUP BY bd_value
"""


@dataclass(frozen=True)
class FunnelQuery:
    tenant_id: str
    steps: tuple[EventMatcher, ...]
    window_s: int
    range: TimeRange | None
    breakdown: str = ""
    actor: str = "visitor"

    def check(self) -> None:
        require_tenant(self.tenant_id)
        if not MIN_STEPS <= len(self.steps) <= MAX_STEPS:
            raise InvalidArgument("steps", f"{MIN_STEPS} to {MAX_STEPS} steps, got {len(self.steps)}")
        for index, step in enumerate(self.steps):
            step.check(f"steps[{index}]")
        if not 1 <= self.window_s <= MAX_WINDOW_S:
            raise InvalidArgument("window_s", f"1 to {MAX_WINDOW_S} seconds, got {self.window_s}")
        if self.range is None:
            raise InvalidArgument("range", "required")
        self.range.check()
        if self.breakdown not in BREAKDOWNS:
            raise InvalidArgument("breakdown", f"one of {sorted(BREAKDOWNS)}, got {self.breakdown!r}")
        if self.actor not in ACTORS:
            raise InvalidArgument("actor", f"one of {sorted(ACTORS)}, got {self.actor!r}")


@dataclass(frozen=True)
class FunnelStep:
    name: str
    count: int
    conversion_from_previous: float
    conversion_from_first: float
    median_seconds_from_first: float


@dataclass(frozen=True)
class FunnelSeries:
    breakdown_value: str
    steps: list[FunnelStep]


def render(query: FunnelQuery) -> tuple[str, dict[str, Any]]:
    """The funnel SQL for `query` (already checked) and its bound parameters."""
    assert query.range is not None
    count = len(query.steps)
    params: dict[str, Any] = {
        "tenant": query.tenant_id,
        "start": query.range.start,
        "end": query.range.end,
        "horizon": query.range.end + timedelta(seconds=query.window_s),
        "lookup_start": query.range.start - timedelta(days=1),
        "window": query.window_s,
        "base": int(query.range.start.timestamp()),
        # Exact: t'k - t'1 = (tk - t1) * TIE_SLOTS + step index, the first step's index being 0.
        "funnel_window": query.window_s * TIE_SLOTS + TIE_SLOTS - 1,
    }
    conditions = [step.condition(f"s{index}", params) for index, step in enumerate(query.steps)]
    front_breakdown, back_breakdown = BREAKDOWNS[query.breakdown]
    branches = []
    repeated = False  # some rows stand for several steps: windowFunnel must also check which one
    for source, breakdown in (("frontend", front_breakdown), ("backend", back_breakdown)):
        mine = [i for i, step in enumerate(query.steps) if step.source == source]
        if not mine:
            continue
        overlapping = any(_may_overlap(query.steps[i], query.steps[j]) for i in mine for j in mine if i < j)
        repeated = repeated or overlapping
        flags = []
        for index in range(count):
            condition = f"({conditions[index]})" if index in mine else "0"
            if index == 0 and index in mine:
                condition += " AND time < toDateTime(%(end)s, 'UTC')"  # the first step must fall inside the range
            flags.append(f"toUInt8({condition}) AS c{index + 1}")
        mask = " + ".join(f"c{k} * {2**k}" for k in range(2, count + 1))
        if overlapping:
            # The row's first step, then each later step it matches (one matched before it): one row
            # each for windowFunnel.
            first = "multiIf(" + ", ".join(f"c{i + 1} = 1, {i}" for i in mine) + ", 0)"
            later = [
                f"if(c{i + 1} = 1 AND " + " + ".join(f"c{j + 1}" for j in mine if j < i) + f" > 0, {i}, 255)"
                for i in mine[1:]
            ]
            step_of_row = f"toUInt8(arrayJoin(arrayFilter(x -> x != 255, [{first}, {', '.join(later)}]))) AS s"
        else:  # one step per row at most (none: a step-1 event after the range, which counts for nothing)
            step_of_row = "toUInt8(" + (" + ".join(f"c{i + 1} * {i}" for i in mine if i) or "0") + ") AS s"
        tie_time = f"toUInt32((t - %(base)s) * {TIE_SLOTS} + s) AS ts"
        any_step = " OR ".join(f"({conditions[index]})" for index in mine)
        if source == "frontend":
            template = FRONTEND_STEP_EVENTS
        else:
            template = BACKEND_STEP_EVENTS_BY_VISITOR if query.actor == "visitor" else BACKEND_STEP_EVENTS_BY_USER
        branches.append(
            template.format(
                actor=ACTORS[query.actor],
                breakdown=breakdown,
                flags=", ".join(flags) + f", toUInt32({mask}) AS mask, {step_of_row}, {tie_time}",
                any_step=any_step,
            )
        )
    steps = range(2, count + 1)
    chain = []
    for k in steps:
        previous = "t1" if k == 2 else f"t{k - 1}"
        chain.append(
            f"if({previous} = 0, 0, intDiv(arrayFirst(x -> bitAnd(x, {2**k}) != 0 AND x >= {previous} * {SHIFT}"
            f" AND x < (t1 + %(window)s + 1) * {SHIFT}, steps), {SHIFT})) AS t{k}"
        )
    figures = ["countIf(level >= 1) AS n1", "toFloat64(0) AS m1"]
    for k in steps:
        figures.append(f"countIf(level >= {k}) AS n{k}")
        figures.append(f"quantileExactIf(0.5)(t{k} - t1, level >= {k} AND t{k} > 0) AS m{k}")
    sql = FUNNEL.format(
        step_figures=", ".join(figures),
        chain=", ".join(chain),
        flag_names=", ".join(f"c{k} = 1" + (f" AND s = {k - 1}" if repeated else "") for k in range(1, count + 1)),
        step_times=f"arraySort(groupArrayIf(toUInt64(t) * {SHIFT} + mask, mask != 0)) AS steps",
        events=" UNION ALL ".join(branches),
        bd_value="argMinIf(bd, ts, bd != '')" if query.breakdown else "''",  # no breakdown: skip the argMin
    )
    return sql, params


def run(ch: ClickHouse, query: FunnelQuery) -> list[FunnelSeries]:
    """One series per breakdown value, largest first (by first-step count, then value)."""
    query.check()
    sql, params = render(query)
    series = []
    for row in ch.query(sql, params):
        value, figures = row[0], row[1:]
        counts = [int(figures[2 * k]) for k in range(len(query.steps))]
        medians = [float(figures[2 * k + 1]) for k in range(len(query.steps))]
        steps = [
            FunnelStep(
                name=matcher.display_name,
                count=counts[k],
                conversion_from_previous=1.0 if k == 0 else _ratio(counts[k], counts[k - 1]),
                conversion_from_first=_ratio(counts[k], counts[0]),
                median_seconds_from_first=medians[k],
            )
            for k, matcher in enumerate(query.steps)
        ]
        series.append(FunnelSeries(value, steps))
    return sorted(series, key=lambda one: (-one.steps[0].count, one.breakdown_value))


def _may_overlap(one: EventMatcher, other: EventMatcher) -> bool:
    """Whether one event can match both: the same stream and no field that both set differently."""
    if one.source != other.source:
        return False
    fields: tuple[str, ...] = ("frontend_type", "category", "action", "label")
    if one.source == "backend":
        fields = ("backend_type", "variant")
    return all(
        not getattr(one, name) or not getattr(other, name) or getattr(one, name) == getattr(other, name)
        for name in fields
    )


def _ratio(part: int, whole: int) -> float:
    return part / whole if whole else 0.0
