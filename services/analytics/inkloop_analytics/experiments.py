"""Experiment readouts: exposures and conversions per arm, with Bayesian and frequentist figures.

Who is in the experiment: visitors with a front-end `_trackEvent("experiment", "exposure",
"<experiment>:<arm>")` for one of its arms in the range. A visitor belongs to the arm of its first
exposure (within one second, the smallest arm name); one exposed to more than one arm is a crossover
visitor, still counted in that first arm.

A goal converts a visitor when, at or after its first exposure and within `conversion_window_s` of
it, there is:
- an event matching the goal's matcher: a front-end event of that visitor id, or a back-end event of a
  request whose front-end event belongs to the visitor (the earliest front-end event carrying the
  request id names it, as in funnel.py);
- for the outcome "accepted": a generation request that Outcomes classifies accepted, made by the
  visitor (its front-end click, by the same rule) at or after the first exposure within the window.

Per arm and goal: the rate and its Wilson 95% interval; against the control (the first arm) the
uplift, the probability to beat it under Beta(1 + conversions, 1 + non-conversions) posteriors (exact:
Evan Miller's closed form, a sum over the smaller arm's conversions), and the two-sided p-value of a
pooled two-proportion z-test. The sample-ratio check is a chi-square goodness of fit of the exposures
against the weights (arms of weight 0 expect none: any exposure there is a mismatch).

Verdict, per goal: "not enough data" unless every arm of weight > 0 has `min_exposures` exposed
visitors; else
"<arm> wins" when an arm beats the control with p < 0.05 and probability > 0.95 (the likeliest such
arm), "control holds" when the control beats every other arm that way, else "no significant
difference".

One query: exposures and goal events of every source as rows (visitor, time, goal, arm) in one UNION
ALL, reduced per visitor (first exposure, crossover, each goal's times), then per arm.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
from scipy.special import betaln
from scipy.stats import chisquare, norm

from inkloop.errors import FieldViolation, InvalidArgument
from inkloop_analytics import outcomes
from inkloop_analytics.matchers import EXPOSURE_ACTION, EventMatcher, TimeRange, require_tenant
from inkloop_analytics.outcomes import OutcomeRules
from inkloop_analytics.storage import ClickHouse

EXPERIMENT_CATEGORY = "experiment"
NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
NAME_RULE = "1 to 64 characters of A-Z a-z 0-9 . _ -"
MIN_ARMS, MAX_ARMS = 2, 10
MAX_GOALS = 10
MAX_GOAL_NAME_CHARS = 128
GOAL_OUTCOMES = ("accepted",)
DEFAULT_WINDOW_S = 86_400
MAX_WINDOW_S = 30 * 86_400
DEFAULT_MIN_EXPOSURES = 100
MAX_MIN_EXPOSURES = 1_000_000_000
SIGNIFICANCE = 0.05
CONFIDENCE = 0.95
SRM_THRESHOLD = 0.001
Z95 = float(norm.ppf(0.975))
EXACT_TERMS = 2_000_000  # terms of the exact probability to beat the control (about 0.2 s)

# Rows (visitor, t, goal, arm_label): goal 0 is an exposure (arm_label its label), goal k > 0 an event of
# goal k. Types are spelled out: 18.16's UNION ALL needs them equal in every branch.
EXPOSURES = """
SELECT visitor_id AS visitor, toUInt32(time) AS t, toUInt8(0) AS goal, label AS arm_label
FROM frontend_events
WHERE tenant_id = %(tenant)s AND visitor_id != ''
    AND time >= toDateTime(%(start)s, 'UTC') AND time < toDateTime(%(exposure_end)s, 'UTC')
    AND type = 'track_event' AND category = %(category)s AND action = %(exposure)s AND label IN %(labels)s
"""

# `{goals}`: an array of the indices of the goals a row matches (0 where it does not).
FRONTEND_GOALS = """
SELECT visitor_id AS visitor, toUInt32(time) AS t, toUInt8(arrayJoin(arrayFilter(k -> k != 0, {goals}))) AS goal,
    '' AS arm_label
FROM frontend_events
WHERE tenant_id = %(tenant)s AND visitor_id != ''
    AND time >= toDateTime(%(start)s, 'UTC') AND time < toDateTime(%(horizon)s, 'UTC') AND ({any_goal})
"""

# The visitor of a request: the earliest front-end event carrying its id (funnel.py's rule; the click
# may precede the request a little, hence a day before the range).
CLICKS = """
SELECT request_id, argMin(visitor_id, (time, visitor_id)) AS visitor
FROM frontend_events
WHERE tenant_id = %(tenant)s AND request_id != ''
    AND time >= toDateTime(%(lookup_start)s, 'UTC') AND time < toDateTime(%(horizon)s, 'UTC')
GROUP BY request_id
"""

# Rows of requests' goals (request_id, t, goal), given to the visitors of their clicks in one join:
# back-end events matching a goal, and accepted requests (of those made from the range start to the
# horizon) for the outcome goals.
BACKEND_GOALS = """
SELECT request_id, toUInt32(time) AS t, toUInt8(arrayJoin(arrayFilter(k -> k != 0, {goals}))) AS goal
FROM backend_events
WHERE tenant_id = %(tenant)s
    AND time >= toDateTime(%(start)s, 'UTC') AND time < toDateTime(%(horizon)s, 'UTC') AND ({any_goal})
"""
ACCEPTED_GOALS = """
SELECT group_value AS request_id, asked_at AS t, toUInt8(arrayJoin(%(outcome_goals)s)) AS goal
FROM ({requests})
WHERE outcome = {accepted}
"""
REQUEST_GOALS = """
SELECT visitor, t, goal, '' AS arm_label
FROM ({rows}) AS request_goals
ALL INNER JOIN ({clicks}) AS clicks USING request_id
"""

# Per visitor: first exposure, its arm, crossover and each goal's times, then per arm: visitors,
# crossovers and, per goal, the visitors with a goal time in [exposed_at, exposed_at + window].
PER_ARM = """
SELECT first_arm, count(), countIf(crossover), {conversions}
FROM (
    SELECT visitor, minIf(t, goal = 0) AS exposed_at, argMinIf(arm_label, (t, arm_label), goal = 0) AS first_arm,
        uniqExactIf(arm_label, goal = 0) > 1 AS crossover, {goal_times}
    FROM ({rows})
    GROUP BY visitor
    HAVING countIf(goal = 0) > 0
)
GROUP BY first_arm
"""
# 18.16 drops a subquery's column that only a lambda names ("Unknown identifier"): `exposed_at > 0`
# (always true) names it outside one.
CONVERTED = "countIf(exposed_at > 0 AND arrayExists(x -> x >= exposed_at AND x - exposed_at <= %(window)s, g{k}))"


@dataclass(frozen=True)
class ExperimentArm:
    name: str
    weight: int


@dataclass(frozen=True)
class ExperimentGoal:
    name: str = ""
    event: EventMatcher | None = None
    outcome: str = ""

    @property
    def display_name(self) -> str:
        if self.name:
            return self.name
        return self.event.display_name if self.event is not None else self.outcome


@dataclass(frozen=True)
class ExperimentQuery:
    tenant_id: str
    experiment: str
    arms: tuple[ExperimentArm, ...]
    goals: tuple[ExperimentGoal, ...]
    range: TimeRange | None
    rules: OutcomeRules
    conversion_window_s: int = DEFAULT_WINDOW_S
    min_exposures: int = DEFAULT_MIN_EXPOSURES

    def check(self) -> None:
        require_tenant(self.tenant_id)
        if not NAME.fullmatch(self.experiment):
            raise InvalidArgument("experiment", f"must be {NAME_RULE}")
        self._check_arms()
        self._check_goals()
        if self.range is None:
            raise InvalidArgument("range", "required")
        self.range.check()
        if not 1 <= self.conversion_window_s <= MAX_WINDOW_S:
            raise InvalidArgument("conversion_window_s", f"must be 1 to {MAX_WINDOW_S} seconds (0 = 1 day)")
        if not 1 <= self.min_exposures <= MAX_MIN_EXPOSURES:
            raise InvalidArgument("min_exposures", f"must be 1 to {MAX_MIN_EXPOSURES} (0 = 100)")
        self.rules.check()

    def _check_arms(self) -> None:
        if not MIN_ARMS <= len(self.arms) <= MAX_ARMS:
            raise InvalidArgument("arms", f"{MIN_ARMS} to {MAX_ARMS} arms, got {len(self.arms)}")
        problems, seen = [], set()
        for index, arm in enumerate(self.arms):
            if not NAME.fullmatch(arm.name):
                problems.append(FieldViolation(f"arms[{index}].name", f"must be {NAME_RULE}"))
            elif arm.name in seen:
                problems.append(FieldViolation(f"arms[{index}].name", f"{arm.name!r} is repeated"))
            seen.add(arm.name)
            if arm.weight < 0:
                problems.append(FieldViolation(f"arms[{index}].weight", "must not be negative"))
        if problems:
            raise InvalidArgument.of(problems)
        if not any(arm.weight > 0 for arm in self.arms):
            raise InvalidArgument("arms", "at least one arm needs a positive weight")

    def _check_goals(self) -> None:
        if not 1 <= len(self.goals) <= MAX_GOALS:
            raise InvalidArgument("goals", f"1 to {MAX_GOALS} goals, got {len(self.goals)}")
        for index, goal in enumerate(self.goals):
            if len(goal.name) > MAX_GOAL_NAME_CHARS:
                raise InvalidArgument(f"goals[{index}].name", f"longer than {MAX_GOAL_NAME_CHARS} characters")
            if goal.event is not None:
                goal.event.check(f"goals[{index}].event")
            elif not goal.outcome:
                raise InvalidArgument(f"goals[{index}]", "needs a target: an event or an outcome")
            elif goal.outcome not in GOAL_OUTCOMES:
                raise InvalidArgument(f"goals[{index}].outcome", f"must be {' or '.join(GOAL_OUTCOMES)}")


@dataclass(frozen=True)
class ArmResult:
    arm: str
    exposures: int
    conversions: int
    rate: float
    rate_low: float
    rate_high: float
    uplift: float
    probability_to_beat_control: float
    p_value: float


@dataclass(frozen=True)
class GoalResult:
    goal: str
    arms: list[ArmResult]
    enough_data: bool
    verdict: str


@dataclass(frozen=True)
class SampleRatioCheck:
    chi_square: float
    p_value: float

    @property
    def mismatch(self) -> bool:
        return self.p_value < SRM_THRESHOLD


@dataclass(frozen=True)
class ExperimentResults:
    experiment: str
    goals: list[GoalResult]
    sample_ratio: SampleRatioCheck
    crossover_visitors: int
    min_exposures: int


# Statistics.


def wilson(conversions: int, exposures: int) -> tuple[float, float]:
    """Wilson score 95% interval of conversions / exposures (NaN without exposures)."""
    if exposures == 0:
        return math.nan, math.nan
    rate = conversions / exposures
    z2 = Z95 * Z95
    center = (rate + z2 / (2 * exposures)) / (1 + z2 / exposures)
    half = Z95 * math.sqrt(rate * (1 - rate) / exposures + z2 / (4 * exposures * exposures)) / (1 + z2 / exposures)
    return max(center - half, 0.0), min(center + half, 1.0)


def probability_to_beat(conversions: int, exposures: int, control_conversions: int, control_exposures: int) -> float:
    """P(p > p_control) for p ~ Beta(1 + c, 1 + n - c) and p_control likewise, exactly:
    Σ_{i<α} B(α_c + i, β_c + β) / ((β + i) B(1 + i, β) B(α_c, β_c)), summed over the arm with fewer
    conversions (the other way round it is 1 minus the same sum with the roles swapped)."""
    a, b = 1 + conversions, 1 + exposures - conversions
    ca, cb = 1 + control_conversions, 1 + control_exposures - control_conversions
    if a > ca:
        return 1.0 - _beats(ca, cb, a, b)
    return _beats(a, b, ca, cb)


def _beats(a: int, b: int, other_a: int, other_b: int) -> float:
    """P(X > Y), X ~ Beta(a, b), Y ~ Beta(other_a, other_b), integer a: a terms. Past EXACT_TERMS
    (both posteriors then narrow and all but normal) the normal approximation of X - Y."""
    if a > EXACT_TERMS:
        mean = a / (a + b) - other_a / (other_a + other_b)
        variance = a * b / ((a + b) ** 2 * (a + b + 1)) + other_a * other_b / (
            (other_a + other_b) ** 2 * (other_a + other_b + 1)
        )
        return float(norm.cdf(mean / math.sqrt(variance)))
    i = np.arange(a, dtype=np.float64)
    logs = betaln(other_a + i, other_b + b) - np.log(b + i) - betaln(1 + i, b) - betaln(other_a, other_b)
    return float(min(max(np.exp(logs).sum(), 0.0), 1.0))


def z_test(conversions: int, exposures: int, control_conversions: int, control_exposures: int) -> float:
    """Two-sided p-value of the pooled two-proportion z-test (1 when both rates are 0 or both 1)."""
    if exposures == 0 or control_exposures == 0:
        return math.nan
    pooled = (conversions + control_conversions) / (exposures + control_exposures)
    se = math.sqrt(pooled * (1 - pooled) * (1 / exposures + 1 / control_exposures))
    if se == 0:
        return 1.0
    z = (conversions / exposures - control_conversions / control_exposures) / se
    return float(2 * norm.sf(abs(z)))


def sample_ratio(exposures: list[int], weights: list[int]) -> SampleRatioCheck:
    """Chi-square goodness of fit of the exposures to the weights' shares."""
    if any(count > 0 and weight == 0 for count, weight in zip(exposures, weights, strict=True)):
        return SampleRatioCheck(math.inf, 0.0)  # visitors in an arm that should have none
    observed = [count for count, weight in zip(exposures, weights, strict=True) if weight > 0]
    shares = [weight for weight in weights if weight > 0]
    total = sum(observed)
    if total == 0 or len(observed) < 2:
        return SampleRatioCheck(0.0, 1.0)
    expected = [total * weight / sum(shares) for weight in shares]
    statistic, p_value = chisquare(observed, expected)
    return SampleRatioCheck(float(statistic), float(p_value))


def arm_results(arms: list[tuple[str, int, int]]) -> list[ArmResult]:
    """(name, exposures, conversions) per arm, control first."""
    _, control_n, control_c = arms[0]
    control_rate = control_c / control_n if control_n else math.nan
    results = []
    for index, (name, n, c) in enumerate(arms):
        rate = c / n if n else math.nan
        low, high = wilson(c, n)
        if index == 0:
            uplift, probability, p_value = 0.0, 0.5, 1.0
        else:
            uplift = rate / control_rate - 1 if control_rate and not math.isnan(control_rate) else math.nan
            probability = probability_to_beat(c, n, control_c, control_n)
            p_value = z_test(c, n, control_c, control_n)
        results.append(ArmResult(name, n, c, rate, low, high, uplift, probability, p_value))
    return results


def verdict(arms: list[ArmResult], enough_data: bool) -> str:
    if not enough_data:
        return "not enough data"
    others = arms[1:]
    winners = [arm for arm in others if arm.p_value < SIGNIFICANCE and arm.probability_to_beat_control > CONFIDENCE]
    if winners:
        best = max(winners, key=lambda arm: (arm.probability_to_beat_control, arm.rate))
        return f"{best.arm} wins"
    if all(arm.p_value < SIGNIFICANCE and arm.probability_to_beat_control < 1 - CONFIDENCE for arm in others):
        return "control holds"
    return "no significant difference"


# The query.


def render(query: ExperimentQuery) -> tuple[str, dict[str, Any]]:
    """The readout SQL for `query` (already checked) and its bound parameters."""
    assert query.range is not None
    horizon = query.range.end + timedelta(seconds=query.conversion_window_s)
    # Accepted requests: those classified over everything requested from the range start to the horizon.
    params = outcomes.params(query.tenant_id, TimeRange(query.range.start, horizon), query.rules)
    params.update(
        exposure_end=query.range.end,
        horizon=horizon,
        lookup_start=query.range.start - timedelta(days=1),
        window=query.conversion_window_s,
        category=EXPERIMENT_CATEGORY,
        exposure=EXPOSURE_ACTION,
        labels=tuple(f"{query.experiment}:{arm.name}" for arm in query.arms),
    )
    rows, request_rows = [EXPOSURES], []
    for source in ("frontend", "backend"):
        mine = {
            index + 1: goal.event.condition(f"g{index}", params)
            for index, goal in enumerate(query.goals)
            if goal.event is not None and goal.event.source == source
        }
        if mine:
            matched = "[" + ", ".join(f"if({condition}, {k}, 0)" for k, condition in mine.items()) + "]"
            any_goal = " OR ".join(f"({condition})" for condition in mine.values())
            if source == "frontend":
                rows.append(FRONTEND_GOALS.format(goals=matched, any_goal=any_goal))
            else:
                request_rows.append(BACKEND_GOALS.format(goals=matched, any_goal=any_goal))
    accepted = [index + 1 for index, goal in enumerate(query.goals) if goal.outcome]
    if accepted:
        params["outcome_goals"] = accepted
        requests = outcomes.settled_sql("request_id")  # accepted is decided per request
        request_rows.append(ACCEPTED_GOALS.format(requests=requests, accepted=outcomes.ACCEPTED))
    if request_rows:
        rows.append(REQUEST_GOALS.format(rows=" UNION ALL ".join(request_rows), clicks=CLICKS))
    goals = range(1, len(query.goals) + 1)
    sql = PER_ARM.format(
        conversions=", ".join(CONVERTED.format(k=k) for k in goals),
        goal_times=", ".join(f"groupArrayIf(t, goal = {k}) AS g{k}" for k in goals),
        rows=" UNION ALL ".join(rows),
    )
    return sql, params


def run(ch: ClickHouse, query: ExperimentQuery) -> ExperimentResults:
    query.check()
    sql, params = render(query)
    prefix = f"{query.experiment}:"
    found = {str(label).removeprefix(prefix): row for label, *row in ch.query(sql, params)}
    names = [arm.name for arm in query.arms]
    exposures = [int(found[name][0]) if name in found else 0 for name in names]
    crossover = sum(int(row[1]) for row in found.values())
    goals = []
    for index, goal in enumerate(query.goals):
        per_arm = [
            (name, count, int(found[name][2 + index]) if name in found else 0)
            for name, count in zip(names, exposures, strict=True)
        ]
        arms = arm_results(per_arm)
        # Arms of weight 0 (retired, or kept for a later phase) expect nobody: they need no sample.
        enough = all(
            count >= query.min_exposures for count, arm in zip(exposures, query.arms, strict=True) if arm.weight > 0
        )
        live = [arm for arm, spec in zip(arms, query.arms, strict=True) if spec.weight > 0 or arm.exposures]
        goals.append(GoalResult(goal.display_name, arms, enough, verdict(live, enough)))
    check = sample_ratio(exposures, [arm.weight for arm in query.arms])
    return ExperimentResults(query.experiment, goals, check, crossover, query.min_exposures)
