"""Conversion funnels (ordered, strict or any order; exclusions; time to convert), on ClickHouse 18.16
and current alike.

Who goes through the funnel (the actor):
- "visitor" (default): front-end events count for their `visitor_id`; back-end events count for the
  visitor whose front-end event carried the same `request_id` (the generate click), so a funnel can
  run page view → click → requested → succeeded. Back-end events with no such click are left out.
  Where front-end events of several visitor ids carry one request id (one person on two devices,
  or a visitor id renewed between the click and a download), the earliest of them is the click:
  its visitor gets the back-end events (the smallest visitor id on a tie).
- "user": front-end events with a `user_id` and back-end events count for that user id.

In an ordered funnel an actor reaches step k when windowFunnel says so: steps in order, each within
`window_s` of the first, the first inside the range (later steps may fall up to `window_s` after its
end).

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
("device" from front-end events; "variant", "language_class", "template" (the template id), "kind"
and "length_bucket" from back-end events, a bucket only where the event carries prompt features,
labelled as PromptInsights and Outcomes label them), earliest by the same rule (within a second, the
earlier step); actors with none form the "" series.

Order modes other than "ordered", and exclusions, need each actor's chain, which windowFunnel does
not give: they are counted from per-actor arrays (funnel_chains.py), with the same tie rule (within
a second, events in step order; an event matching several steps is one event per step). Every
in-range step-1 event starts a chain (in any order, every second with an in-range event of any
step), and an actor reaches the furthest level any of their chains reaches:
- ordered: each next step is its first event after the previous step's, within window_s of the
  start. These chains reach exactly windowFunnel's levels.
- strict: the same, and only events of the previous step may come between two steps: going back
  to an earlier step, or ahead to a later one, ends the chain. So A B C B C D reaches C (PostHog's
  strict rule as we read its code; ClickHouse's own windowFunnel 'strict_order' goes on to D, and
  counts A B A C D as 4 where this counts 2). Of consecutive step-1 events only the last one inside
  the range starts a chain (PostHog restarts at each): A A B converts from the second A.
- any: the distinct steps done within window_s of the start, which is their earliest; the k-th
  step is the k-th of them to be done (its first event in the window).
Exclusions (PostHog's semantics): a chain is excluded when an event of the exclusion happens after
its from_step and before its to_step, both strictly, in whole seconds (an exclusion in the same
second as either step does not count: their order within it is unknown); a chain that stopped short
of to_step is excluded by such an event up to the end of its window. In an any-order funnel steps
are numbered in the order the actor did them. An actor is dropped from the whole funnel, every step
and the time to convert, when every chain reaching their furthest level is excluded.
Times (medians, time to convert) follow the actor's chain: the earliest non-excluded one that reaches
their furthest level. Plain ordered funnels keep windowFunnel and the chain from the first start
described above; the two agree except for actors whose first start gets less far than a later one.

Time to convert: seconds from step 1 to the last step over the actors who reached it (for plain
ordered funnels, those in the last step's median), in equal-width bins from the fastest to the
slowest (one bin when all took the same time), with their count and median (quantileExact's: of an
even count, the upper middle value). Figures are exact: each series sends its distinct seconds with
their counts, and the bins are cut here.

Repeated rows of one event (not yet merged by ReplacingMergeTree) change nothing here: windowFunnel
levels, minima and per-actor counts are the same with or without the repeat, and so are chains: a
repeat sits in the same second and step as its original.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from inkloop.errors import FieldViolation, InvalidArgument
from inkloop_analytics import funnel_chains
from inkloop_analytics.insights import DEFAULT_LENGTH_EDGES, length_labels
from inkloop_analytics.matchers import MAX_RANGE_DAYS, EventMatcher, TimeRange, require_tenant
from inkloop_analytics.storage import ClickHouse

MIN_STEPS, MAX_STEPS = 2, 16
MAX_WINDOW_S = 30 * 86_400
ORDERS = ("ordered", "strict", "any")
MAX_EXCLUSIONS = 8
DEFAULT_BINS, MAX_BINS = 10, 50
assert MAX_STEPS <= funnel_chains.SLOTS
# Step times for the medians travel in one sorted array per actor: t * SHIFT + a bit mask of the
# steps 2..k the event matches (bit k for step k), so one groupArray serves every step.
SHIFT = 2 ** (MAX_STEPS + 1)
# windowFunnel's time: seconds since the range start, times TIE_SLOTS, plus the step index (ties).
# 18.16 takes only UInt32 and keeps these times in an Int32, so the longest range plus twice the
# longest window (the horizon, then windowFunnel's own reach), scaled, must stay below 2**31: about
# 0.7e9 here, where absolute seconds (1.8e9) times TIE_SLOTS would not fit.
TIE_SLOTS = MAX_STEPS
assert ((MAX_RANGE_DAYS + 1) * 86_400 + 2 * MAX_WINDOW_S) * TIE_SLOTS < 2**31

# The length bucket's index (edges below the length, as a sum of comparisons: 18.16 has no lambda
# over constants), as a string so that "" can say "no prompt"; labelled after the query.
_LENGTH_BUCKET = (
    "if(prompt_language = '', '', toString("
    + " + ".join(f"toUInt8(prompt_length > {edge})" for edge in DEFAULT_LENGTH_EDGES)
    + "))"
)
LENGTH_LABELS = length_labels(DEFAULT_LENGTH_EDGES)

# Breakdown name -> (front-end column, back-end column); "''" where the stream has no such property.
BREAKDOWNS = {
    "": ("''", "''"),
    "device": ("device", "''"),
    "variant": ("''", "variant"),
    "language_class": ("''", "prompt_language"),
    "length_bucket": ("''", _LENGTH_BUCKET),
    "template": ("''", "template_id"),
    "kind": ("''", "kind"),
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
class FunnelExclusion:
    """Drops an actor who did `event` between their from_step and to_step (1-based) events."""

    event: EventMatcher
    from_step: int
    to_step: int


@dataclass(frozen=True)
class FunnelQuery:
    tenant_id: str
    steps: tuple[EventMatcher, ...]
    window_s: int
    range: TimeRange | None
    breakdown: str = ""
    actor: str = "visitor"
    order: str = "ordered"
    exclusions: tuple[FunnelExclusion, ...] = ()
    time_to_convert_bins: int = 0  # 0: DEFAULT_BINS

    @property
    def bins(self) -> int:
        return self.time_to_convert_bins or DEFAULT_BINS

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
        if self.order not in ORDERS:
            raise InvalidArgument("order", f"one of {list(ORDERS)}, got {self.order!r}")
        if not 0 <= self.time_to_convert_bins <= MAX_BINS:
            raise InvalidArgument(
                "time_to_convert_bins", f"1 to {MAX_BINS} (0: {DEFAULT_BINS}), got {self.time_to_convert_bins}"
            )
        self._check_exclusions()

    def _check_exclusions(self) -> None:
        if len(self.exclusions) > MAX_EXCLUSIONS:
            raise InvalidArgument("exclusions", f"at most {MAX_EXCLUSIONS}, got {len(self.exclusions)}")
        count = len(self.steps)
        problems = []
        for index, exclusion in enumerate(self.exclusions):
            field = f"exclusions[{index}]"
            exclusion.event.check(f"{field}.event")
            if not 1 <= exclusion.from_step < count:
                problems.append(FieldViolation(f"{field}.from_step", f"1 to {count - 1}, got {exclusion.from_step}"))
            elif not exclusion.from_step < exclusion.to_step <= count:
                bounds = f"{exclusion.from_step + 1} to {count}"
                problems.append(
                    FieldViolation(f"{field}.to_step", f"after from_step: {bounds}, got {exclusion.to_step}")
                )
        if problems:
            raise InvalidArgument.of(problems)


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


@dataclass(frozen=True)
class TimeToConvertBin:
    start_s: float
    end_s: float
    actors: int


@dataclass(frozen=True)
class TimeToConvert:
    bins: list[TimeToConvertBin]
    actors: int
    median_s: float


@dataclass(frozen=True)
class FunnelReport:
    series: list[FunnelSeries]
    time_to_convert: TimeToConvert = field(default_factory=lambda: TimeToConvert([], 0, 0.0))


def render(query: FunnelQuery) -> tuple[str, dict[str, Any]]:
    """The funnel SQL for `query` (already checked) and its bound parameters.

    Its rows: breakdown value, then count and median per step, then the time to convert to the last
    step as (distinct seconds, actors with each).
    """
    assert query.range is not None
    params: dict[str, Any] = {
        "tenant": query.tenant_id,
        "start": query.range.start,
        "end": query.range.end,
        "end_s": int(query.range.end.timestamp()),
        "horizon": query.range.end + timedelta(seconds=query.window_s),
        "lookup_start": query.range.start - timedelta(days=1),
        "window": query.window_s,
        "base": int(query.range.start.timestamp()),
        # Exact: t'k - t'1 = (tk - t1) * TIE_SLOTS + step index, the first step's index being 0.
        "funnel_window": query.window_s * TIE_SLOTS + TIE_SLOTS - 1,
    }
    conditions = [step.condition(f"s{index}", params) for index, step in enumerate(query.steps)]
    if query.order == "ordered" and not query.exclusions:
        return _render_window_funnel(query, conditions), params
    exclusions = [exclusion.event.condition(f"x{index}", params) for index, exclusion in enumerate(query.exclusions)]
    return _render_chains(query, conditions, exclusions), params


def _render_chains(query: FunnelQuery, conditions: list[str], exclusions: list[str]) -> str:
    """Strict and any order, and exclusions: one row per step event and step it matches (code: the
    step's index) and per exclusion event (code EXCLUSION_CODE + its index), chains in arrays."""
    count = len(query.steps)
    front_breakdown, back_breakdown = BREAKDOWNS[query.breakdown]
    coded = [(index, step, conditions[index]) for index, step in enumerate(query.steps)]
    coded += [
        (funnel_chains.EXCLUSION_CODE + index, exclusion.event, exclusions[index])
        for index, exclusion in enumerate(query.exclusions)
    ]
    branches = []
    for source, breakdown in (("frontend", front_breakdown), ("backend", back_breakdown)):
        mine = [(code, condition) for code, matcher, condition in coded if matcher.source == source]
        if not mine:
            continue
        matchers = [matcher for _, matcher, _ in coded if matcher.source == source]
        if len(mine) == 1:
            code = f"toUInt8({mine[0][0]})"
        elif any(_may_overlap(one, other) for i, one in enumerate(matchers) for other in matchers[i + 1 :]):
            # One row per step (and exclusion) the event matches.
            choices = ", ".join(f"if({condition}, {code}, 255)" for code, condition in mine)
            code = f"toUInt8(arrayJoin(arrayFilter(x -> x != 255, [{choices}])))"
        else:
            code = "toUInt8(multiIf(" + ", ".join(f"{condition}, {code}" for code, condition in mine) + ", 255))"
        if source == "frontend":
            template = FRONTEND_STEP_EVENTS
        else:
            template = BACKEND_STEP_EVENTS_BY_VISITOR if query.actor == "visitor" else BACKEND_STEP_EVENTS_BY_USER
        branches.append(
            template.format(
                actor=ACTORS[query.actor],
                breakdown=breakdown,
                flags=f"{code} AS s",
                any_step=" OR ".join(f"({condition})" for _, condition in mine),
            )
        )
    figures = ["countIf(level >= 1) AS n1", "toFloat64(0) AS m1"]
    for k in range(2, count + 1):
        figures.append(f"countIf(level >= {k}) AS n{k}")
        figures.append(f"quantileExactIf(0.5)(d{k}, level >= {k}) AS m{k}")
    figures.append(f"sumMapIf([toUInt64(d{count})], [toUInt64(1)], level >= {count}) AS time_to_convert")
    slots = funnel_chains.SLOTS
    return funnel_chains.render(
        query.order,
        count,
        [(exclusion.from_step, exclusion.to_step) for exclusion in query.exclusions],
        " UNION ALL ".join(branches),
        f"argMinIf(bd, toUInt64(t) * {slots} + s, bd != '' AND s < {slots})" if query.breakdown else "''",
        ", ".join(figures),
    )


def _render_window_funnel(query: FunnelQuery, conditions: list[str]) -> str:
    """Plain ordered funnels: windowFunnel over tie-ordered times (see the module's docstring)."""
    count = len(query.steps)
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
    last = f"level >= {count} AND t{count} > 0"
    figures.append(f"sumMapIf([toUInt64(t{count} - t1)], [toUInt64(1)], {last}) AS time_to_convert")
    return FUNNEL.format(
        step_figures=", ".join(figures),
        chain=", ".join(chain),
        flag_names=", ".join(f"c{k} = 1" + (f" AND s = {k - 1}" if repeated else "") for k in range(1, count + 1)),
        step_times=f"arraySort(groupArrayIf(toUInt64(t) * {SHIFT} + mask, mask != 0)) AS steps",
        events=" UNION ALL ".join(branches),
        bd_value="argMinIf(bd, ts, bd != '')" if query.breakdown else "''",  # no breakdown: skip the argMin
    )


def run(ch: ClickHouse, query: FunnelQuery) -> list[FunnelSeries]:
    """One series per breakdown value, largest first (by first-step count, then value)."""
    return report(ch, query).series


def report(ch: ClickHouse, query: FunnelQuery) -> FunnelReport:
    """The series (as `run`) and the time to convert to the last step over all of them."""
    query.check()
    sql, params = render(query)
    series = []
    seconds: Counter[int] = Counter()
    for row in ch.query(sql, params):
        value, figures, (converted_in, actors) = row[0], row[1:-1], row[-1]
        seconds.update(dict(zip(map(int, converted_in), map(int, actors), strict=True)))
        if query.breakdown == "length_bucket" and value:
            value = LENGTH_LABELS[int(value)]
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
    series.sort(key=lambda one: (-one.steps[0].count, one.breakdown_value))
    return FunnelReport(series, time_to_convert(seconds, query.bins))


def time_to_convert(seconds: Counter[int], bins: int) -> TimeToConvert:
    """Equal-width bins from the fastest to the slowest of `seconds` (seconds -> actors), cut exactly
    in integers: x falls in bin floor((x - fastest) * bins / (slowest - fastest)), the slowest in the last."""
    actors = sum(seconds.values())
    if not actors:
        return TimeToConvert([], 0, 0.0)
    fastest, slowest = min(seconds), max(seconds)
    middle, median = actors // 2, 0  # quantileExact(0.5): the value at index n // 2 in order
    for value in sorted(seconds):
        if middle < seconds[value]:
            median = value
            break
        middle -= seconds[value]
    if fastest == slowest:
        return TimeToConvert([TimeToConvertBin(float(fastest), float(slowest), actors)], actors, float(median))
    spread = slowest - fastest
    tally = [0] * bins
    for value, count in seconds.items():
        tally[min((value - fastest) * bins // spread, bins - 1)] += count
    edges = [fastest + spread * index / bins for index in range(bins)] + [float(slowest)]
    return TimeToConvert(
        [TimeToConvertBin(float(edges[i]), float(edges[i + 1]), tally[i]) for i in range(bins)], actors, float(median)
    )


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
