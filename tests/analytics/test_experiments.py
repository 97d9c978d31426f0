"""ExperimentResults against an answer key computed visitor by visitor, on both engines.

Visitors are split 1:1 between "control" and "bold" and exposed (some twice, some to both arms:
crossovers, some to both in one second, some before the range too). The bold arm truly doubles the
"inpaint start" rate (10% → 20%), truly lowers the share who generate at all (60% → 40%), and keeps
about the same share of accepted images. Goal events come before the exposure, within the window
and after it (after the range's end, too); one request is claimed by two visitors' clicks. The key
assigns and converts every visitor with plain loops; the statistics are checked against independent
computations: the Wilson bounds by the score equation they solve, the z-test through scipy's 2×2
chi-square, the probability to beat the control by Monte Carlo, the sample-ratio test in closed form.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import grpc
import numpy as np
import pytest
from scipy.stats import chi2_contingency

from inkloop.errors import InvalidArgument
from inkloop.rpc.status import field_violations
from inkloop.v1 import analytics_pb2 as pb
from inkloop_analytics import experiments
from inkloop_analytics.experiments import ExperimentArm, ExperimentGoal, ExperimentQuery
from inkloop_analytics.matchers import EventMatcher, TimeRange
from inkloop_analytics.outcomes import OutcomeRules
from inkloop_analytics.service import Analytics

from .builders import backend, timestamp, track
from .generator import T0
from .test_server import Running, launch

EXPERIMENT = "new-editor"
ARMS = (ExperimentArm("control", 1), ExperimentArm("bold", 1))  # "bold" < "control": ties go to bold
RANGE = TimeRange(T0, T0 + timedelta(hours=12))
WINDOW = 3600
RULES = OutcomeRules(regenerate_window_s=600, max_intent_distance_bits=12)
INPAINT = EventMatcher("frontend", name="inpaint started", category="inpaint", action="start")
SUCCEEDED = EventMatcher("backend", backend_type="succeeded")
GOALS = (
    ExperimentGoal(event=INPAINT),
    ExperimentGoal("generated", event=SUCCEEDED),
    ExperimentGoal(outcome="accepted"),
)
# Chances per arm: an inpaint start, a generation request, keeping its image.
INPAINT_RATE = {"control": 0.10, "bold": 0.20}
GENERATE_RATE = {"control": 0.60, "bold": 0.40}
KEEP_RATE = {"control": 0.50, "bold": 0.75}
T = pb.BackendEventType


@dataclass
class Request:
    request_id: str
    visitor: str  # whose click it is
    asked_at: int
    succeeded_at: int
    downloaded: bool


@dataclass
class Traffic:
    exposures: list[tuple[str, int, str]] = field(default_factory=list)  # (visitor, t, arm), this experiment
    inpaints: list[tuple[str, int]] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)
    frontend: list[pb.FrontendEvent] = field(default_factory=list)
    backend: list[pb.BackendEvent] = field(default_factory=list)


def at(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, T0.tzinfo)


def generate(seed: int = 21, visitors: int = 1200) -> Traffic:
    rng = random.Random(seed)
    traffic = Traffic()
    start, end = int(RANGE.start.timestamp()), int(RANGE.end.timestamp())

    def expose(visitor: str, t: int, arm: str) -> None:
        traffic.exposures.append((visitor, t, arm))
        traffic.frontend.append(track(at(t), visitor, "experiment", "exposure", label=f"{EXPERIMENT}:{arm}"))

    def request(visitor: str, t: int, arm: str, number: int) -> None:
        request_id = f"r-{visitor}-{number}"
        succeeded_at = t + rng.randint(3, 40)
        kept = rng.random() < KEEP_RATE[arm]
        traffic.requests.append(Request(request_id, visitor, t, succeeded_at, kept))
        traffic.frontend.append(track(at(t), visitor, "generate", "click", request_id=request_id))
        traffic.backend.append(backend(at(t), T.BACKEND_EVENT_TYPE_REQUESTED, request_id, user_id=visitor))
        traffic.backend.append(backend(at(succeeded_at), T.BACKEND_EVENT_TYPE_SUCCEEDED, request_id, user_id=visitor))
        if kept:
            traffic.backend.append(backend(at(succeeded_at + 20), T.BACKEND_EVENT_TYPE_DOWNLOADED, request_id))

    for number in range(visitors):
        visitor = f"v{number:04d}"
        arm = "control" if rng.random() < 0.5 else "bold"
        other = "bold" if arm == "control" else "control"
        first = start + rng.randrange(0, end - start - 60)
        roll = rng.random()
        if roll < 0.03:  # both arms in one second: the smaller name (bold) is the first
            expose(visitor, first, arm)
            expose(visitor, first, other)
            arm = "bold"
        else:
            expose(visitor, first, arm)
            if roll < 0.08:  # crossover: later shown the other arm, still counted in the first
                expose(visitor, first + rng.randint(1, 3000), other)
            elif roll < 0.2:  # shown the same arm again
                expose(visitor, first + rng.randint(0, 3000), arm)
        if rng.random() < 0.02:  # an exposure before the range does not count
            label = f"{EXPERIMENT}:{other}"
            traffic.frontend.append(track(at(start - 500), visitor, "experiment", "exposure", label=label))
        # Goal events: within the window at the arm's rate, or outside it.
        if rng.random() < INPAINT_RATE[arm]:
            moment = first + rng.choice([0, rng.randint(1, WINDOW), WINDOW])
            traffic.inpaints.append((visitor, moment))
            traffic.frontend.append(track(at(moment), visitor, "inpaint", "start"))
        elif rng.random() < 0.1:
            moment = first + rng.choice([-60, WINDOW + 1, WINDOW + 600])
            traffic.inpaints.append((visitor, moment))
            traffic.frontend.append(track(at(moment), visitor, "inpaint", "start"))
        if rng.random() < GENERATE_RATE[arm]:
            request(visitor, first + rng.randint(0, WINDOW - 60), arm, 0)
        elif rng.random() < 0.1:  # asked before the exposure, or too late
            request(visitor, first + rng.choice([-300, WINDOW + 100]), arm, 1)
    # One request claimed by two visitors' clicks: the earlier click's visitor has it.
    claimed = next(r for r in traffic.requests if r.asked_at - 5 > start and r.succeeded_at and r.downloaded)
    thief = next(v for v, _, _ in traffic.exposures if v != claimed.visitor)
    traffic.frontend.append(track(at(claimed.asked_at + 2), thief, "generate", "click", request_id=claimed.request_id))
    # Never counted: other experiments, unknown arms, another tenant, other categories.
    traffic.frontend.append(track(at(start + 10), "w1", "experiment", "exposure", label="other:control"))
    traffic.frontend.append(track(at(start + 10), "w2", "experiment", "exposure", label=f"{EXPERIMENT}:ghost"))
    traffic.frontend.append(
        track(at(start + 10), "w3", "experiment", "exposure", label=f"{EXPERIMENT}:control", tenant_id="t2")
    )
    traffic.frontend.append(track(at(start + 10), "w4", "feature", "exposure", label=f"{EXPERIMENT}:control"))
    return traffic


# The answer key.


def assignments(traffic: Traffic) -> tuple[dict[str, tuple[int, str]], set[str]]:
    """visitor -> (first exposure time, arm), and the crossover visitors, from exposures in the range."""
    start, end = RANGE.start.timestamp(), RANGE.end.timestamp()
    shown: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for visitor, t, arm in traffic.exposures:
        if start <= t < end:
            shown[visitor].append((t, arm))
    first = {visitor: min(times) for visitor, times in shown.items()}  # (time, arm): ties by arm name
    crossover = {visitor for visitor, times in shown.items() if len({arm for _, arm in times}) > 1}
    return first, crossover


def converted(traffic: Traffic, goal: int) -> set[str]:
    first, _ = assignments(traffic)

    def within(visitor: str, t: int) -> bool:
        return visitor in first and first[visitor][0] <= t <= first[visitor][0] + WINDOW

    clicks: dict[str, tuple[int, str]] = {}
    for event in traffic.frontend:
        if event.request_id:
            key = (event.client_time.seconds, event.visitor_id)
            clicks[event.request_id] = min(clicks.get(event.request_id, key), key)
    owner = {request_id: visitor for request_id, (_, visitor) in clicks.items()}
    if goal == 0:
        return {visitor for visitor, t in traffic.inpaints if within(visitor, t)}
    if goal == 1:
        return {owner[r.request_id] for r in traffic.requests if within(owner[r.request_id], r.succeeded_at)}
    return {owner[r.request_id] for r in traffic.requests if r.downloaded and within(owner[r.request_id], r.asked_at)}


def key_counts(traffic: Traffic, goal: int) -> dict[str, tuple[int, int]]:
    first, _ = assignments(traffic)
    wins = converted(traffic, goal)
    counts = {arm.name: [0, 0] for arm in ARMS}
    for visitor, (_, arm) in first.items():
        counts[arm][0] += 1
        counts[arm][1] += visitor in wins
    return {arm: (n, c) for arm, (n, c) in counts.items()}


def monte_carlo_beats(c: int, n: int, control_c: int, control_n: int, draws: int = 400_000) -> float:
    rng = np.random.default_rng(5)
    arm = rng.beta(1 + c, 1 + n - c, draws)
    control = rng.beta(1 + control_c, 1 + control_n - control_c, draws)
    return float((arm > control).mean())


def query(**changes: object) -> ExperimentQuery:
    fields: dict[str, object] = {
        "tenant_id": "t1",
        "experiment": EXPERIMENT,
        "arms": ARMS,
        "goals": GOALS,
        "range": RANGE,
        "rules": RULES,
        "conversion_window_s": WINDOW,
        "min_exposures": 100,
    }
    return ExperimentQuery(**{**fields, **changes})  # type: ignore[arg-type]


@pytest.fixture
async def traffic(analytics: Analytics) -> Traffic:
    data = generate()
    for start in range(0, len(data.frontend), 300):
        assert (await analytics.ingest(data.frontend[start : start + 300], [], "")).count("rejected") == 0
    for start in range(0, len(data.backend), 300):
        assert (await analytics.ingest([], data.backend[start : start + 300], "")).count("rejected") == 0
    again = random.Random(4).sample(data.frontend, 200)  # repeats change nothing
    assert (await analytics.ingest(again, [], "again")).count("duplicate") == 200
    return data


def test_the_traffic_has_ties_crossovers_and_events_outside_the_window() -> None:
    data = generate()
    first, crossover = assignments(data)
    ties = [v for v, t, arm in data.exposures if arm == "control" and (v, t, "bold") in set(data.exposures)]
    assert len(ties) >= 10 and all(first[v][1] == "bold" for v in ties)
    assert len(crossover) >= 50
    late = [v for v, t in data.inpaints if v in first and t > first[v][0] + WINDOW]
    early = [v for v, t in data.inpaints if v in first and t < first[v][0]]
    after_range = [v for v, t in data.inpaints if t >= RANGE.end.timestamp() and v in converted(data, 0)]
    assert late and early and after_range
    assert any(r.asked_at < first[r.visitor][0] for r in data.requests)


async def test_readout_matches_the_answer_key(analytics: Analytics, traffic: Traffic) -> None:
    result = await analytics.experiment_results(query())
    _, crossover = assignments(traffic)
    assert result.experiment == EXPERIMENT and result.min_exposures == 100
    assert result.crossover_visitors == len(crossover)
    assert [goal.goal for goal in result.goals] == ["inpaint started", "generated", "accepted"]
    for index, goal in enumerate(result.goals):
        counts = key_counts(traffic, index)
        assert [(arm.arm, arm.exposures, arm.conversions) for arm in goal.arms] == [
            (name, *counts[name]) for name in ("control", "bold")
        ], goal.goal
        control, bold = goal.arms
        for arm in goal.arms:
            n, c = arm.exposures, arm.conversions
            assert arm.rate == c / n
            # Wilson bounds solve (rate - p)² = z² p (1 - p) / n.
            for bound in (arm.rate_low, arm.rate_high):
                assert (arm.rate - bound) ** 2 == pytest.approx(1.959964**2 * bound * (1 - bound) / n, rel=1e-4)
            assert arm.rate_low < arm.rate < arm.rate_high
        assert (control.uplift, control.p_value) == (0.0, 1.0)
        assert bold.uplift == pytest.approx(bold.rate / control.rate - 1)
        table = [
            [bold.conversions, bold.exposures - bold.conversions],
            [control.conversions, control.exposures - control.conversions],
        ]
        assert bold.p_value == pytest.approx(chi2_contingency(table, correction=False)[1], rel=1e-6)
        expected = monte_carlo_beats(bold.conversions, bold.exposures, control.conversions, control.exposures)
        assert bold.probability_to_beat_control == pytest.approx(expected, abs=0.004)
        assert goal.enough_data


async def test_a_real_uplift_wins_and_a_real_loss_holds_the_control(analytics: Analytics, traffic: Traffic) -> None:
    inpaint, generated, accepted = (await analytics.experiment_results(query())).goals
    assert inpaint.verdict == "bold wins"
    assert inpaint.arms[1].uplift > 0.5 and inpaint.arms[1].probability_to_beat_control > 0.999
    assert generated.verdict == "control holds"
    assert generated.arms[1].uplift < -0.2 and generated.arms[1].probability_to_beat_control < 0.001
    # Accepted images: 60% × 50% against 40% × 75%, the same 30%.
    assert accepted.verdict == "no significant difference"
    assert accepted.arms[1].p_value > 0.05


async def test_the_sample_ratio_check_sees_a_split_off_its_weights(analytics: Analytics, traffic: Traffic) -> None:
    even = await analytics.experiment_results(query())
    n = [arm.exposures for arm in even.goals[0].arms]
    chi = sum((count - sum(n) / 2) ** 2 / (sum(n) / 2) for count in n)
    assert even.sample_ratio.chi_square == pytest.approx(chi)
    assert even.sample_ratio.p_value == pytest.approx(math.erfc(math.sqrt(chi / 2)))
    assert not even.sample_ratio.mismatch
    # The same visitors read against a 1:3 split are far off it.
    skewed = await analytics.experiment_results(query(arms=(ExperimentArm("control", 1), ExperimentArm("bold", 3))))
    assert skewed.sample_ratio.mismatch and skewed.sample_ratio.p_value < 1e-9
    # An arm that should get nobody but got visitors is a mismatch; one that got nobody is left out.
    zero = (ExperimentArm("control", 1), ExperimentArm("bold", 0))
    assert (await analytics.experiment_results(query(arms=zero))).sample_ratio == experiments.SampleRatioCheck(
        math.inf, 0.0
    )
    three = await analytics.experiment_results(query(arms=(*ARMS, ExperimentArm("retired", 0))))
    assert three.sample_ratio == even.sample_ratio
    assert [arm.exposures for arm in three.goals[0].arms] == [*n, 0]
    # A retired (weight 0) arm with nobody in it needs no sample: the verdict is the two live arms'.
    both = await analytics.experiment_results(query(arms=ARMS))
    assert [goal.verdict for goal in three.goals] == [goal.verdict for goal in both.goals]
    # The unknown arm's one exposure ("new-editor:ghost") counts once the arm is listed.
    ghost = await analytics.experiment_results(query(arms=(*ARMS, ExperimentArm("ghost", 0))))
    assert ghost.goals[0].arms[2].exposures == 1 and ghost.sample_ratio.mismatch


async def test_below_the_guard_there_is_no_verdict(analytics: Analytics, traffic: Traffic) -> None:
    counts = key_counts(traffic, 0)
    smallest = min(n for n, _ in counts.values())
    enough = await analytics.experiment_results(query(min_exposures=smallest))
    assert all(goal.enough_data for goal in enough.goals) and enough.goals[0].verdict == "bold wins"
    short = await analytics.experiment_results(query(min_exposures=smallest + 1))
    assert all(not goal.enough_data and goal.verdict == "not enough data" for goal in short.goals)
    assert [a.conversions for a in short.goals[0].arms] == [a.conversions for a in enough.goals[0].arms]


async def test_a_shorter_window_converts_fewer(analytics: Analytics, traffic: Traffic) -> None:
    wide = await analytics.experiment_results(query())
    narrow = await analytics.experiment_results(query(conversion_window_s=60))
    for w, s in zip(wide.goals, narrow.goals, strict=True):
        assert [a.exposures for a in w.arms] == [a.exposures for a in s.arms]
        assert sum(a.conversions for a in s.arms) < sum(a.conversions for a in w.arms)


def test_statistics_in_closed_form() -> None:
    assert experiments.probability_to_beat(3, 5, 0, 5) == pytest.approx(1 - 1 / 33)  # Σ over the control's 1 term
    assert experiments.probability_to_beat(0, 5, 0, 5) == pytest.approx(0.5)
    assert experiments.probability_to_beat(40, 400, 80, 400) == pytest.approx(
        1 - experiments.probability_to_beat(80, 400, 40, 400)
    )
    assert experiments.probability_to_beat(800, 2000, 700, 2000) == pytest.approx(
        monte_carlo_beats(800, 2000, 700, 2000), abs=0.004
    )
    # Millions of conversions: past the exact sum's terms, the normal approximation.
    assert experiments.probability_to_beat(3_000_000, 6_000_000, 2_998_000, 6_000_000) == pytest.approx(
        monte_carlo_beats(3_000_000, 6_000_000, 2_998_000, 6_000_000), abs=0.004
    )
    assert experiments.wilson(0, 10) == (0.0, pytest.approx(0.2775, abs=1e-4))
    assert experiments.z_test(0, 10, 0, 10) == 1.0
    assert math.isnan(experiments.z_test(1, 0, 1, 10))
    three = experiments.sample_ratio([100, 100, 200], [1, 1, 2])
    assert (three.chi_square, three.p_value, three.mismatch) == (0.0, 1.0, False)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"tenant_id": ""}, "tenant_id"),
        ({"experiment": ""}, "experiment"),
        ({"experiment": "has space"}, "experiment"),
        ({"experiment": "x" * 65}, "experiment"),
        ({"arms": (ExperimentArm("control", 1),)}, "arms"),
        ({"arms": tuple(ExperimentArm(f"a{n}", 1) for n in range(11))}, "arms"),
        ({"arms": (ExperimentArm("control", 1), ExperimentArm("control", 1))}, "arms[1].name"),
        ({"arms": (ExperimentArm("control", 1), ExperimentArm("b:c", 1))}, "arms[1].name"),
        ({"arms": (ExperimentArm("a", 0), ExperimentArm("b", 0))}, "arms"),
        ({"goals": ()}, "goals"),
        ({"goals": GOALS * 4}, "goals"),
        ({"goals": (ExperimentGoal("nothing"),)}, "goals[0]"),
        ({"goals": (ExperimentGoal(outcome="regenerated"),)}, "goals[0].outcome"),
        ({"goals": (ExperimentGoal(event=EventMatcher(None)),)}, "goals[0].event.source"),
        ({"range": None}, "range"),
        ({"conversion_window_s": 31 * 86_400}, "conversion_window_s"),
        ({"min_exposures": 0}, "min_exposures"),
        ({"rules": OutcomeRules(0, 12)}, "rules.regenerate_window_s"),
    ],
)
def test_bad_queries_name_the_field(changes: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        query(**changes).check()
    assert caught.value.violations[0].field == field


# Over gRPC.


@pytest.fixture
async def service(clickhouse_url: str, make_settings) -> AsyncIterator[Running]:
    running, starting = await launch(make_settings(clickhouse_url))
    await starting
    yield running
    await running.close()


async def test_experiment_results_over_grpc(service: Running) -> None:
    data = generate(visitors=300)
    for start in range(0, max(len(data.frontend), len(data.backend)), 300):
        batch = pb.IngestRequest(frontend=data.frontend[start : start + 300], backend=data.backend[start : start + 300])
        assert (await service.stub.Ingest(batch)).rejected == 0
    request = pb.ExperimentResultsRequest(
        tenant_id="t1",
        experiment=EXPERIMENT,
        arms=[pb.ExperimentArm(name="control", weight=1), pb.ExperimentArm(name="bold", weight=1)],
        goals=[
            pb.ExperimentGoal(
                name="inpaint",
                event=pb.EventMatcher(source=pb.EVENT_SOURCE_FRONTEND, category="inpaint", action="start"),
            ),
            pb.ExperimentGoal(outcome="accepted"),
        ],
        range=pb.TimeRange(start=timestamp(RANGE.start), end=timestamp(RANGE.end)),
    )
    response = await service.stub.ExperimentResults(request)
    analytics = service.app.analytics
    goals = (ExperimentGoal("inpaint", event=INPAINT), GOALS[2])
    local = await analytics.experiment_results(
        query(goals=goals, conversion_window_s=86_400, rules=analytics.outcome_rules)
    )
    assert response.experiment == EXPERIMENT and response.min_exposures == 100  # 0 = 100
    assert response.crossover_visitors == local.crossover_visitors
    assert response.sample_ratio.p_value == pytest.approx(local.sample_ratio.p_value)
    assert [g.goal for g in response.goals] == ["inpaint", "accepted"]
    for got, want in zip(response.goals, local.goals, strict=True):
        assert [(a.arm, a.exposures, a.conversions) for a in got.arms] == [
            (a.arm, a.exposures, a.conversions) for a in want.arms
        ]
        assert (got.enough_data, got.verdict) == (want.enough_data, want.verdict)
        assert got.arms[1].probability_to_beat_control == pytest.approx(want.arms[1].probability_to_beat_control)
    del request.goals[:]
    request.goals.add(name="odd", outcome="downloaded")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await service.stub.ExperimentResults(request)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [name for name, _ in field_violations(caught.value)] == ["goals[0].outcome"]


async def test_recommend_templates_over_grpc(service: Running) -> None:
    at0 = RANGE.start + timedelta(hours=1)
    features = pb.PromptFeatures(length=10, language=pb.LANGUAGE_CLASS_EN, signature=5)
    back = [
        backend(at0, T.BACKEND_EVENT_TYPE_REQUESTED, f"q{n}", template_id="tpl-a", prompt=features, user_id=f"u{n}")
        for n in range(4)
    ]
    back += [backend(at0 + timedelta(seconds=30), T.BACKEND_EVENT_TYPE_DOWNLOADED, f"q{n}") for n in range(3)]
    front = [track(at0, f"v{n}", "template", "exposure", label="tpl-a") for n in range(5)]
    await service.stub.Ingest(pb.IngestRequest(frontend=front, backend=back))
    request = pb.RecommendTemplatesRequest(
        tenant_id="t1",
        range=pb.TimeRange(start=timestamp(RANGE.start), end=timestamp(RANGE.end)),
        template_ids=["tpl-a", "tpl-b"],
        language_class="en",
    )
    response = await service.stub.RecommendTemplates(request)
    assert response.prior_mean == pytest.approx(0.75) and response.prior_strength == 10.0
    first, second = response.templates
    assert (first.template_id, first.shown, first.picked, first.requests, first.accepted) == ("tpl-a", 5, 0, 4, 3)
    assert first.perceived_success == 0.75 and first.estimate == pytest.approx(0.75)
    assert (second.template_id, second.requests) == ("tpl-b", 0) and math.isnan(second.perceived_success)
    request.language_class = "fr"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await service.stub.RecommendTemplates(request)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [name for name, _ in field_violations(caught.value)] == ["language_class"]
