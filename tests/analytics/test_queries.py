"""Every query against answers computed by hand (expected.py) on a seeded day, on both engines.

The day is ingested in batches, then a fifth of it is sent again (acknowledged as duplicates) and
another fifth is written a second time behind deduplication's back, as a replay after a crash would:
no answer may change.
"""

from __future__ import annotations

import random
import statistics
import uuid
from dataclasses import replace
from datetime import timedelta

import pytest

from harness.clickhouse import EVERY_ENGINE
from inkloop.errors import InvalidArgument
from inkloop.v1 import analytics_pb2 as pb
from inkloop_analytics import adoption, discrepancy, funnel, insights, variants
from inkloop_analytics.ingest import Ingestor
from inkloop_analytics.matchers import EventMatcher, TimeRange
from inkloop_analytics.service import Analytics
from inkloop_analytics.storage import ClickHouse

from . import expected
from .builders import backend, track
from .generator import LENGTH_EDGES, NOW, RANGE_END, T0, WINDOW_S, Day, generate

RANGE = TimeRange(T0, RANGE_END)
STEPS = (
    EventMatcher("frontend", name="page view", frontend_type="page_view"),
    EventMatcher("frontend", name="click", category="generate", action="click"),
    EventMatcher("backend", name="requested", backend_type="requested"),
    EventMatcher("backend", name="succeeded", backend_type="succeeded"),
)

CLICKHOUSE_ENGINES = EVERY_ENGINE


async def load(analytics: Analytics, day: Day) -> None:
    rng = random.Random(11)
    for start in range(0, max(len(day.frontend), len(day.backend)), 60):
        result = await analytics.ingest(day.frontend[start : start + 60], day.backend[start : start + 60], "")
        assert result.count("rejected") == 0, result
    again_front = rng.sample(day.frontend, len(day.frontend) // 5)
    again_back = rng.sample(day.backend, len(day.backend) // 5)
    retried = await analytics.ingest(again_front, again_back, "retry")
    assert retried.count("duplicate") == len(again_front) + len(again_back)
    # A replay after a crash: the same events written again by a process that has no memory of them
    # and does not look them up. They are stored twice; the queries must not see it.
    blind = Ingestor(analytics.store, analytics.writer, replace(analytics.ingestor.config, lookup_stored_ids=False))
    replayed = await blind.ingest(rng.sample(day.frontend, 40), rng.sample(day.backend, 30), "replay")
    assert replayed.count("accepted") == 70


@pytest.fixture
async def day(analytics: Analytics, clickhouse: ClickHouse) -> Day:
    generated = generate()
    await load(analytics, generated)
    [(rows, distinct)] = clickhouse.query("SELECT count(), uniqExact(event_id) FROM frontend_events")
    assert distinct == len(generated.frontend) and rows >= distinct  # duplicates may or may not be merged yet
    return generated


def funnel_answer(series: list[funnel.FunnelSeries]) -> dict[str, list[tuple[int, float]]]:
    return {one.breakdown_value: [(s.count, s.median_seconds_from_first) for s in one.steps] for one in series}


@pytest.mark.parametrize("breakdown", ["", "device", "variant"])
async def test_funnel(analytics: Analytics, day: Day, breakdown: str) -> None:
    query = funnel.FunnelQuery("t1", STEPS, WINDOW_S, RANGE, breakdown=breakdown)
    series = await analytics.funnel(query)
    want = expected.funnel(day, breakdown)
    got = funnel_answer(series)
    # Series with fewer steps reached are padded with zeros by the query.
    assert got == {value: steps + [(0, 0.0)] * (4 - len(steps)) for value, steps in want.items()}
    first = series[0]
    assert [step.name for step in first.steps] == ["page view", "click", "requested", "succeeded"]
    assert [one.steps[0].count for one in series] == sorted((one.steps[0].count for one in series), reverse=True)
    counts = [step.count for step in first.steps]
    assert first.steps[2].conversion_from_previous == pytest.approx(counts[2] / counts[1])
    assert first.steps[3].conversion_from_first == pytest.approx(counts[3] / counts[0])


async def test_funnel_by_user_and_validation(analytics: Analytics, day: Day) -> None:
    # Back-end events carry user "u1"; front-end events carry no user id, so only back-end steps count.
    steps = (STEPS[2], STEPS[3])
    [series] = await analytics.funnel(funnel.FunnelQuery("t1", steps, 86_400, RANGE, actor="user"))
    assert [step.count for step in series.steps] == [1, 1]
    with pytest.raises(InvalidArgument) as error:
        await analytics.funnel(funnel.FunnelQuery("t1", STEPS[:1], WINDOW_S, RANGE))
    assert error.value.violations[0].field == "steps"
    with pytest.raises(InvalidArgument) as error:
        await analytics.funnel(funnel.FunnelQuery("t1", STEPS, WINDOW_S, RANGE, breakdown="country"))
    assert error.value.violations[0].field == "breakdown"


async def test_discrepancy(analytics: Analytics, day: Day) -> None:
    query = discrepancy.DiscrepancyQuery(
        "t1",
        EventMatcher("frontend", category="generate", action="click"),
        EventMatcher("backend", backend_type="requested"),
        RANGE,
        bucket_s=1800,
        sample_size=100,
    )
    result = await analytics.discrepancy(query)
    want = expected.discrepancy(day, 1800)
    got = [{name: getattr(bucket, name) for name in want[0]} for bucket in result.buckets]
    assert got == want
    assert [bucket.start for bucket in result.buckets] == [T0 + (bucket.start - T0) for bucket in result.buckets]
    total = result.total
    assert total.frontend == sum(bucket["frontend"] for bucket in want)
    assert total.backend_only == sum(bucket["backend_only"] for bucket in want) >= 6
    assert total.frontend_duplicates > 0
    assert total.loss_rate == pytest.approx(total.frontend_only / (total.matched + total.frontend_only))
    assert (
        sorted(result.backend_only_sample)[:6]
        == [f"r-blocked-{n}" for n in range(6)][: len(result.backend_only_sample)]
    )
    lost = {click.request_id for click in day.clicks if click.request_id} - {r.request_id for r in day.requests}
    assert set(result.frontend_only_sample) <= lost and result.frontend_only_sample


async def test_prompt_insights(analytics: Analytics, day: Day) -> None:
    result = await analytics.prompt_insights(insights.PromptInsightsQuery("t1", RANGE))
    by_length, by_language = expected.prompt_groups(day)
    labels = insights.length_labels(LENGTH_EDGES)
    assert [(g.label, g.requests, g.successes, g.median_dwell_s) for g in result.by_length] == [
        (labels[index], *by_length[index]) for index in sorted(by_length)
    ]
    order = [name for name in insights.LANGUAGE_ORDER if name in by_language]
    assert [(g.label, g.requests, g.successes, g.median_dwell_s) for g in result.by_language] == [
        (name, *by_language[name]) for name in order
    ]
    assert all(g.success_rate == pytest.approx(g.successes / g.requests) for g in result.by_language)


async def test_feature_adoption(analytics: Analytics, day: Day) -> None:
    result = await analytics.feature_adoption(adoption.FeatureAdoptionQuery("t1", RANGE))
    features, page_views, visitors = expected.adoption(day)
    assert {f.feature: (f.exposures, f.clicks, f.exposed_visitors, f.clicked_visitors) for f in result.features} == (
        features
    )
    assert (result.page_views, result.unique_visitors) == (page_views, visitors)
    named = await analytics.feature_adoption(adoption.FeatureAdoptionQuery("t1", RANGE, ("inpaint", "outpaint")))
    assert [(f.feature, f.exposures) for f in named.features] == [
        ("inpaint", features["inpaint"][0]),
        ("outpaint", 0),
    ]
    inpaint = named.features[0]
    assert inpaint.click_rate == pytest.approx(inpaint.clicks / inpaint.exposures)


async def test_compare_variants(analytics: Analytics, day: Day) -> None:
    result = await analytics.compare_variants(variants.CompareVariantsQuery("t1", RANGE))
    want = expected.variants(day)
    assert {v.variant: (v.requests, v.successes, v.latency_p50_s, v.latency_p95_s, v.downloads) for v in result} == want
    for stats in result:
        assert stats.downloads_per_success == pytest.approx(stats.downloads / stats.successes)
    everyone = await analytics.compare_variants(variants.CompareVariantsQuery("", RANGE))
    assert sum(v.requests for v in everyone) == sum(v.requests for v in result) + 1  # tenant t2's request


async def test_queries_see_nothing_of_an_empty_range(analytics: Analytics, day: Day) -> None:
    empty = TimeRange(NOW, NOW.replace(hour=1))
    assert await analytics.funnel(funnel.FunnelQuery("t1", STEPS, WINDOW_S, empty)) == []
    result = await analytics.discrepancy(
        discrepancy.DiscrepancyQuery("t1", STEPS[1], STEPS[2], empty, bucket_s=0, sample_size=5)
    )
    assert (result.buckets, result.total.frontend, result.frontend_only_sample) == ([], 0, [])


async def test_back_end_events_go_to_the_earliest_visitor_of_their_request(analytics: Analytics) -> None:
    """One person, two visitor ids: the click under one, a later event of the same request under another."""
    rng = random.Random(5)

    def event_id() -> str:  # seeded, so that the rows' storage order is the same every run
        return str(uuid.UUID(int=rng.getrandbits(128), version=4))

    front, back = [], []
    for n in range(40):
        click_at, request_id = T0 + timedelta(seconds=60 * n), f"q{n}"
        front.append(track(click_at, f"a{n}", "generate", "click", request_id=request_id, event_id=event_id()))
        later = 0 if n % 10 == 0 else 30  # some in the same second as the click
        front.append(
            track(
                click_at + timedelta(seconds=later),
                f"b{n}",
                "image",
                "download",
                request_id=request_id,
                event_id=event_id(),
            )
        )
        back.append(
            backend(click_at + timedelta(seconds=1), pb.BACKEND_EVENT_TYPE_REQUESTED, request_id, event_id=event_id())
        )
        outcome = pb.BACKEND_EVENT_TYPE_FAILED if n % 3 == 0 else pb.BACKEND_EVENT_TYPE_SUCCEEDED
        back.append(backend(click_at + timedelta(seconds=20), outcome, request_id, event_id=event_id()))
    result = await analytics.ingest(front, back, "")
    assert result.count("accepted") == len(front) + len(back)

    # Independently: each request belongs to the visitor of its earliest front-end event (then smallest id).
    owner = {}
    for event in sorted(front, key=lambda event: (event.client_time.seconds, event.visitor_id)):
        owner.setdefault(event.request_id, event.visitor_id)
    times: dict[str, dict[str, list[int]]] = {}
    for event in front:
        if event.category == "generate":
            times.setdefault(event.visitor_id, {}).setdefault("click", []).append(event.client_time.seconds)
    for event in back:
        name = pb.BackendEventType.Name(event.type).removeprefix("BACKEND_EVENT_TYPE_").lower()
        times.setdefault(owner[event.request_id], {}).setdefault(name, []).append(event.time.seconds)
    reached = [[visitor for visitor, steps in times.items() if "click" in steps]]
    for name in ("requested", "succeeded"):
        reached.append(
            [v for v in reached[-1] if any(0 <= t - min(times[v]["click"]) <= WINDOW_S for t in times[v].get(name, []))]
        )
    medians = [0.0] + [
        statistics.median(min(times[v][name]) - min(times[v]["click"]) for v in visitors)
        for name, visitors in zip(("requested", "succeeded"), reached[1:], strict=True)
    ]
    assert [len(visitors) for visitors in reached] == [40, 40, 26]  # the hand count: 40 - 14 failures

    steps = (
        EventMatcher("frontend", name="click", category="generate", action="click"),
        EventMatcher("backend", name="requested", backend_type="requested"),
        EventMatcher("backend", name="succeeded", backend_type="succeeded"),
    )
    [series] = await analytics.funnel(funnel.FunnelQuery("t1", steps, WINDOW_S, TimeRange(T0, T0 + timedelta(hours=1))))
    assert [(step.count, step.median_seconds_from_first) for step in series.steps] == [
        (len(visitors), median) for visitors, median in zip(reached, medians, strict=True)
    ]
