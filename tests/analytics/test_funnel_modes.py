"""Strict and any-order funnels, exclusions, time to convert and correlation, on both engines.

Generated traffic: people who see the generate button, click it, have the request served or failed,
cancel, in random order and with many events in one second, some starting after the range or
finishing past the window. The answer key walks each person's events with plain loops, straight from
the rules in funnel.py's docstring; the service must give exactly the same counts, medians, bins and
odds ratios, counted by visitor and by user (every event of a person carries both), whatever order
the events were stored in. A few hand-made people pin the rules themselves (the key could share a
misreading with the service; these cannot).
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from typing import Any

import grpc
import pytest

from inkloop.errors import InvalidArgument
from inkloop.rpc.status import field_violations
from inkloop.v1 import analytics_pb2 as pb
from inkloop.v1 import common_pb2
from inkloop_analytics import correlation, funnel, protocol
from inkloop_analytics.funnel import FunnelExclusion, FunnelQuery
from inkloop_analytics.ingest import Ingestor
from inkloop_analytics.matchers import EventMatcher, TimeRange
from inkloop_analytics.service import Analytics

from .builders import DESKTOP_UA, MOBILE_UA, backend, timestamp, track
from .conftest import SettingsFactory
from .generator import quantile_exact
from .test_server import launch

TENANT = "modes"
BASE = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)  # within a day before generator.NOW, the service's clock
END_S, WINDOW_S = 60, 20  # the range is [BASE, BASE + END_S)
HORIZON_S = END_S + WINDOW_S  # nothing later can belong to a chain
RANGE = TimeRange(BASE, BASE + timedelta(seconds=END_S))

EXPOSURE = EventMatcher("frontend", name="exposure", category="generate", action="exposure")
CLICK = EventMatcher("frontend", name="click", category="generate", action="click")
REQUESTED = EventMatcher("backend", name="requested", backend_type="requested")
SUCCEEDED = EventMatcher("backend", name="succeeded", backend_type="succeeded")
ANY_GENERATE = EventMatcher("frontend", name="generate", category="generate")  # exposure, click and cancel
FAILED = EventMatcher("backend", backend_type="failed")
CANCEL = EventMatcher("frontend", category="generate", action="cancel")
NEVER_SENT = EventMatcher("backend", backend_type="cancelled")

# Which of the generated kinds of event each matcher takes: E exposure, C click, H cancel (front end),
# R requested, S succeeded, F failed (back end).
KINDS = {
    EXPOSURE: "E",
    CLICK: "C",
    REQUESTED: "R",
    SUCCEEDED: "S",
    ANY_GENERATE: "ECH",
    FAILED: "F",
    CANCEL: "H",
    NEVER_SENT: "",
}
FRONTEND_KINDS = "ECH"
FUNNEL_A = (EXPOSURE, CLICK, REQUESTED, SUCCEEDED)
FUNNEL_B = (ANY_GENERATE, CLICK, REQUESTED)  # an exposure or a click is step 1, a click also step 2
LENGTHS = (5, 20, 21, 50, 51, 100, 101, 200, 201, 500, 501, 700)  # each side of each bucket edge
BACKEND_TYPES = {
    "R": pb.BACKEND_EVENT_TYPE_REQUESTED,
    "S": pb.BACKEND_EVENT_TYPE_SUCCEEDED,
    "F": pb.BACKEND_EVENT_TYPE_FAILED,
}
LANGUAGES = {"zh": pb.LANGUAGE_CLASS_ZH, "en": pb.LANGUAGE_CLASS_EN, "mixed": pb.LANGUAGE_CLASS_MIXED}
GENERATION_KINDS = {
    "text_to_image": common_pb2.GENERATION_KIND_TEXT_TO_IMAGE,
    "inpaint": common_pb2.GENERATION_KIND_INPAINT,
}


# The traffic.


@dataclass
class Event:
    kind: str  # one of "ECHRSF"
    at: int  # seconds after BASE
    request_id: str = ""


@dataclass
class Person:
    number: int
    device: str = "desktop"
    variant: str = "A"
    generation_kind: str = "text_to_image"
    template: str = ""
    prompt: tuple[str, int] | None = None  # (language class, length)
    events: list[Event] = field(default_factory=list)

    @property
    def visitor(self) -> str:
        return f"v{self.number:03d}"

    @property
    def user(self) -> str:
        return f"u{self.number:03d}"

    @property
    def requests(self) -> list[str]:
        return [f"r{self.number:03d}{letter}" for letter in "ab"]

    def value(self, prop: str, steps: Sequence[EventMatcher]) -> str:
        """The person's breakdown value: all their front-end events have one device and all their back-end
        events the same properties, so it is theirs if any event of that stream is a step, else ""."""
        kinds = {event.kind for event in self.events if 0 <= event.at < HORIZON_S}
        kinds &= set("".join(KINDS[step] for step in steps))
        if prop == "device":
            return self.device if kinds & set(FRONTEND_KINDS) else ""
        if not kinds - set(FRONTEND_KINDS):
            return ""
        if prop == "language_class":
            return self.prompt[0] if self.prompt else ""
        if prop == "length_bucket":
            if not self.prompt:
                return ""
            edges, low = (20, 50, 100, 200, 500), 0
            for edge in edges:
                if self.prompt[1] <= edge:
                    return f"{low}-{edge}"
                low = edge + 1
            return "501+"
        return {"variant": self.variant, "kind": self.generation_kind, "template": self.template}[prop]


def people(count: int = 160, seed: int = 14) -> list[Person]:
    rng = random.Random(seed)
    crowd = []
    for number in range(count):
        person = Person(
            number,
            device=rng.choice(["desktop", "mobile"]),
            variant=rng.choice("AB"),
            generation_kind=rng.choice(list(GENERATION_KINDS)),
            template=rng.choice(["", "tpl-1", "tpl-2"]),
            prompt=rng.choice([None, (rng.choice(list(LANGUAGES)), rng.choice(LENGTHS))]),
        )
        requests = person.requests
        # A journey, often in order, with ties and gaps: some start after the range, some finish
        # past the window; then noise anywhere, often in a second the journey already uses.
        at = rng.randint(0, 70)
        journey = [("E", at)]
        for kind, gaps in (("C", (0, 0, 1, 3, 9)), ("R", (0, 0, 1, 2)), ("S", (0, 1, 4, 12, 19))):
            if rng.random() < 0.2:
                break
            at += rng.choice(gaps)
            journey.append((kind, at))
        moments = sorted({moment for _, moment in journey} | {rng.randint(0, 84)})
        for _ in range(rng.randint(0, 5)):
            kind = rng.choice("ECHRSFFS")
            journey.append((kind, rng.choice(moments) if rng.random() < 0.7 else rng.randint(0, 84)))
        person.events = [Event(kind, at, rng.choice(requests) if kind in "CRSF" else "") for kind, at in journey]
        crowd.append(person)
    return crowd


def frontend_event(person: Person, kind: str, at: datetime, request_id: str = "") -> pb.FrontendEvent:
    action = {"E": "exposure", "C": "click", "H": "cancel", "U": "submit"}[kind]
    extra: dict[str, Any] = {"request_id": request_id} if request_id else {}
    agent = DESKTOP_UA if person.device == "desktop" else MOBILE_UA
    return track(
        at, person.visitor, "generate", action, tenant_id=TENANT, user_id=person.user, user_agent=agent, **extra
    )


def backend_event(person: Person, event: Event) -> pb.BackendEvent:
    extra: dict[str, Any] = {}
    if person.prompt:
        language, length = person.prompt
        extra["prompt"] = pb.PromptFeatures(length=length, language=LANGUAGES[language])
    message = backend(
        BASE + timedelta(seconds=event.at),
        BACKEND_TYPES[event.kind],
        event.request_id,
        tenant_id=TENANT,
        user_id=person.user,
        variant=person.variant,
        template_id=person.template,
        **extra,
    )
    message.kind = GENERATION_KINDS[person.generation_kind]  # (builders.backend's own `kind` is the type)
    return message


async def load(analytics: Analytics, crowd: Sequence[Person], seed: int = 3) -> None:
    """Every event, in a shuffled order over several batches; plus one front-end event per request
    before the range, so that back-end events reach their visitor however the clicks fall. A fifth
    of them is then written again behind deduplication's back (a replay after a crash): stored twice
    until merged, which must change no answer."""
    front: list[pb.FrontendEvent] = []
    back: list[pb.BackendEvent] = []
    for person in crowd:
        for request_id in person.requests:
            front.append(frontend_event(person, "U", BASE - timedelta(minutes=5), request_id))
        for event in person.events:
            if event.kind in FRONTEND_KINDS:
                front.append(frontend_event(person, event.kind, BASE + timedelta(seconds=event.at), event.request_id))
            else:
                back.append(backend_event(person, event))
    rng = random.Random(seed)
    rng.shuffle(front)
    rng.shuffle(back)
    for start in range(0, max(len(front), len(back)), 200):
        result = await analytics.ingest(front[start : start + 200], back[start : start + 200], "")
        assert result.count("accepted") == len(front[start : start + 200]) + len(back[start : start + 200]), result
    blind = Ingestor(analytics.store, analytics.writer, replace(analytics.ingestor.config, lookup_stored_ids=False))
    again_front, again_back = rng.sample(front, len(front) // 5), rng.sample(back, len(back) // 5)
    replayed = await blind.ingest(again_front, again_back, "replay")
    assert replayed.count("accepted") == len(again_front) + len(again_back)


# The answer key.


@dataclass(frozen=True)
class Config:
    order: str
    steps: tuple[EventMatcher, ...] = FUNNEL_A
    exclusions: tuple[FunnelExclusion, ...] = ()

    def query(self, actor: str = "visitor", **overrides: Any) -> FunnelQuery:
        fields: dict[str, Any] = {"order": self.order, "exclusions": self.exclusions, "actor": actor, **overrides}
        return FunnelQuery(TENANT, self.steps, WINDOW_S, RANGE, **fields)


def step_rows(person: Person, steps: Sequence[EventMatcher]) -> list[tuple[int, int]]:
    """(second, step index) for each event and each step it matches, in the tie order: by second, then step."""
    return sorted(
        (event.at, index)
        for event in person.events
        if 0 <= event.at < HORIZON_S
        for index, step in enumerate(steps)
        if event.kind in KINDS[step]
    )


def chains(rows: list[tuple[int, int]], order: str, count: int) -> list[list[int]]:
    """Each start's chain, as the seconds of the steps it reached, starts in order."""
    if order == "any":
        found = []
        for anchor in sorted({at for at, _ in rows if at < END_S}):
            first: dict[int, int] = {}
            for at, step in rows:
                if anchor <= at <= anchor + WINDOW_S:
                    first.setdefault(step, at)
            found.append(sorted(first.values()))
        return found
    starts = [i for i, (at, step) in enumerate(rows) if step == 0 and at < END_S]
    if order == "strict":  # of consecutive step-1 events, the last one inside the range
        starts = [i for i in starts if i + 1 == len(rows) or rows[i + 1][1] != 0 or rows[i + 1][0] >= END_S]
    found = []
    for start in starts:
        times, here = [rows[start][0]], start
        for step in range(1, count):
            if order == "ordered":  # the first event of the step after the previous step's
                nxt = next((i for i in range(here + 1, len(rows)) if rows[i][1] == step), None)
            else:  # strict: the first event after it that is not of the previous step must be of this step
                nxt = next((i for i in range(here + 1, len(rows)) if rows[i][1] != step - 1), None)
                nxt = nxt if nxt is not None and rows[nxt][1] == step else None
            if nxt is None or rows[nxt][0] - times[0] > WINDOW_S:
                break
            times.append(rows[nxt][0])
            here = nxt
        found.append(times)
    return found


def is_excluded(person: Person, times: list[int], exclusions: Sequence[FunnelExclusion]) -> bool:
    for exclusion in exclusions:
        if len(times) < exclusion.from_step:
            continue
        after = times[exclusion.from_step - 1]
        before = times[exclusion.to_step - 1] if len(times) >= exclusion.to_step else times[0] + WINDOW_S + 1
        if any(event.kind in KINDS[exclusion.event] and after < event.at < before for event in person.events):
            return True
    return False


@dataclass(frozen=True)
class Outcome:
    level: int
    offsets: list[int]  # seconds from step 1 to each step, as far as known


def outcome(person: Person, config: Config) -> Outcome | None:
    """None: not in the funnel (no start, or every chain reaching their furthest level excluded)."""
    found = chains(step_rows(person, config.steps), config.order, len(config.steps))
    if not found:
        return None
    top = max(len(times) for times in found)
    if config.order == "ordered" and not config.exclusions:  # windowFunnel: times from the first start
        return Outcome(top, [at - found[0][0] for at in found[0]])
    kept = [times for times in found if len(times) == top and not is_excluded(person, times, config.exclusions)]
    if not kept:
        return None
    return Outcome(top, [at - kept[0][0] for at in kept[0]])


def expected_series(crowd: Sequence[Person], config: Config, breakdown: str = "") -> dict[str, list[tuple[int, float]]]:
    count = len(config.steps)
    reached: dict[str, list[list[int]]] = defaultdict(lambda: [[] for _ in range(count)])
    counts: dict[str, list[int]] = defaultdict(lambda: [0] * count)
    for person in crowd:
        result = outcome(person, config)
        if result is None:
            continue
        value = person.value(breakdown, config.steps) if breakdown else ""
        for step in range(result.level):
            counts[value][step] += 1
            if step < len(result.offsets):
                reached[value][step].append(result.offsets[step])
    return {
        value: [(counts[value][k], quantile_exact(reached[value][k], 0.5) if k else 0.0) for k in range(count)]
        for value in counts
    }


def expected_time_to_convert(crowd: Sequence[Person], config: Config, bins: int) -> tuple[list[tuple], int, float]:
    seconds = []
    for person in crowd:
        result = outcome(person, config)
        if result is not None and len(result.offsets) == len(config.steps):
            seconds.append(result.offsets[-1])
    if not seconds:
        return [], 0, 0.0
    fastest, slowest = min(seconds), max(seconds)
    if fastest == slowest:
        return [(fastest, slowest, len(seconds))], len(seconds), float(fastest)
    edges = [fastest + Fraction(slowest - fastest) * i / bins for i in range(bins + 1)]
    tally = [
        sum(1 for x in seconds if edges[i] <= x < edges[i + 1] or (i == bins - 1 and x == slowest)) for i in range(bins)
    ]
    return (
        [(float(edges[i]), float(edges[i + 1]), tally[i]) for i in range(bins)],
        len(seconds),
        quantile_exact(seconds, 0.5),
    )


def answer(series: list[funnel.FunnelSeries]) -> dict[str, list[tuple[int, float]]]:
    return {one.breakdown_value: [(step.count, step.median_seconds_from_first) for step in one.steps] for one in series}


CONFIGS = {
    "strict": Config("strict"),
    "any": Config("any"),
    "ordered, failed between click and success": Config("ordered", exclusions=(FunnelExclusion(FAILED, 2, 4),)),
    "strict, two exclusions": Config(
        "strict", exclusions=(FunnelExclusion(FAILED, 3, 4), FunnelExclusion(CANCEL, 1, 2))
    ),
    "any, failed between the first and third step": Config("any", exclusions=(FunnelExclusion(FAILED, 1, 3),)),
    "overlapping steps, strict": Config("strict", FUNNEL_B),
    "overlapping steps, any": Config("any", FUNNEL_B),
    # The cancel event is also step 1 (a generate event), and excludes when it comes between 1 and 2.
    "overlapping steps, ordered, an exclusion that is a step": Config(
        "ordered", FUNNEL_B, (FunnelExclusion(CANCEL, 1, 2),)
    ),
    "ordered": Config("ordered"),
}


@pytest.fixture
def crowd() -> list[Person]:
    return people()


def test_the_traffic_exercises_every_rule(crowd: list[Person]) -> None:
    """The key's cases all occur: otherwise the comparisons below could pass on a service that gets them wrong."""
    level = {
        order: [result.level if (result := outcome(p, Config(order))) else 0 for p in crowd]
        for order in ("ordered", "strict", "any")
    }
    assert sum(1 for a, b in zip(level["ordered"], level["strict"], strict=True) if a > b) >= 5  # strict stops earlier
    assert sum(1 for a, b in zip(level["ordered"], level["any"], strict=True) if a < b) >= 5  # any order goes further
    assert level["strict"].count(4) >= 10
    excluded = CONFIGS["ordered, failed between click and success"]
    assert sum(1 for p in crowd if outcome(p, Config("ordered")) and outcome(p, excluded) is None) >= 5
    # Steps of one second, and exclusions in a step's own second (which do not exclude).
    assert sum(1 for p in crowd if len({e.at for e in p.events}) < len(p.events)) >= 60
    assert any(
        e.kind == "F" and any(o.kind in "CS" and o.at == e.at for o in p.events) for p in crowd for e in p.events
    )
    assert {p.value("length_bucket", FUNNEL_A) for p in crowd} >= {"", "0-20", "501+"}


@pytest.mark.parametrize("name", list(CONFIGS))
async def test_funnel_modes_match_the_key(analytics: Analytics, crowd: list[Person], name: str) -> None:
    config = CONFIGS[name]
    await load(analytics, crowd)
    want = expected_series(crowd, config)
    [[count, _], *_] = want[""]
    assert count > 50
    for actor in ("visitor", "user"):
        report = await analytics.funnel_report(config.query(actor, time_to_convert_bins=7))
        assert answer(report.series) == want, actor
        bins, actors, median = expected_time_to_convert(crowd, config, 7)
        ttc = report.time_to_convert
        assert (ttc.actors, ttc.median_s) == (actors, median), actor
        assert [(b.start_s, b.end_s, b.actors) for b in ttc.bins] == [pytest.approx(b) for b in bins]
        assert sum(b.actors for b in ttc.bins) == actors > 10


async def test_breakdowns_and_a_never_matching_exclusion(analytics: Analytics, crowd: list[Person]) -> None:
    """Ordered chains with an exclusion that never matches count exactly as windowFunnel does."""
    await load(analytics, crowd)
    plain = await analytics.funnel(Config("ordered").query())
    chained = await analytics.funnel(Config("ordered", exclusions=(FunnelExclusion(NEVER_SENT, 1, 4),)).query())
    assert [[s.count for s in one.steps] for one in plain] == [[s.count for s in one.steps] for one in chained]
    for breakdown in ("length_bucket", "template", "kind", "language_class", "device"):
        for config in (Config("strict"), Config("ordered")):
            got = answer(await analytics.funnel(config.query(breakdown=breakdown)))
            assert got == expected_series(crowd, config, breakdown), (breakdown, config.order)
            assert len(got) >= 2


# Hand-made people: the rules themselves.


def person(*events: tuple[str, int], number: int = 1) -> Person:
    request_id = f"r{number:03d}a"
    return Person(number, events=[Event(kind, at, request_id if kind in "CRSF" else "") for kind, at in events])


async def levels(analytics: Analytics, config: Config) -> list[tuple[int, float]]:
    [series] = await analytics.funnel(config.query())
    return [(step.count, step.median_seconds_from_first) for step in series.steps]


async def test_strict_stops_at_a_step_out_of_order(analytics: Analytics) -> None:
    # E C R C R S: going back to the click ends the chain at R (ordered goes on to S).
    # E C E R S: going back to the exposure ends it at C (windowFunnel's 'strict_order' counts 4).
    await load(
        analytics,
        [
            person(("E", 1), ("C", 2), ("R", 3), ("C", 4), ("R", 5), ("S", 6)),
            person(("E", 1), ("C", 2), ("E", 3), ("R", 4), ("S", 5), number=2),
        ],
    )
    assert await levels(analytics, Config("strict")) == [(2, 0.0), (2, 1.0), (1, 2.0), (0, 0.0)]
    assert await levels(analytics, Config("ordered")) == [(2, 0.0), (2, 1.0), (2, 3.0), (2, 5.0)]


async def test_strict_allows_repeats_of_the_previous_step_and_starts_at_the_last_one(analytics: Analytics) -> None:
    # E E C C R: repeats of the previous step may come between; time counts from the second exposure.
    await load(analytics, [person(("E", 1), ("E", 5), ("C", 7), ("C", 8), ("R", 9))])
    assert await levels(analytics, Config("strict")) == [(1, 0.0), (1, 2.0), (1, 4.0), (0, 0.0)]


async def test_strict_takes_one_second_in_step_order(analytics: Analytics) -> None:
    # All four steps in one second, stored last step first: strict and complete.
    await load(analytics, [person(("S", 3), ("R", 3), ("C", 3), ("E", 3))])
    assert await levels(analytics, Config("strict")) == [(1, 0.0), (1, 0.0), (1, 0.0), (1, 0.0)]


async def test_strict_breaks_on_a_later_step_in_the_previous_steps_second(analytics: Analytics) -> None:
    # E and R in one second, C the next: R (step 3) sits between E and C.
    await load(analytics, [person(("E", 3), ("R", 3), ("C", 4), ("R", 5))])
    assert await levels(analytics, Config("strict")) == [(1, 0.0), (0, 0.0), (0, 0.0), (0, 0.0)]
    assert await levels(analytics, Config("ordered")) == [(1, 0.0), (1, 1.0), (1, 2.0), (0, 0.0)]


async def test_any_order_counts_steps_done_in_any_order_within_the_window(analytics: Analytics) -> None:
    # S R C E backwards: four steps from the success, the last one 20 s later (the window's end);
    # C R: two steps, 20 s apart; a third person's steps are 21 s apart: one step only.
    await load(
        analytics,
        [
            person(("S", 1), ("R", 2), ("C", 2), ("E", 21)),
            person(("C", 30), ("R", 50), number=2),
            person(("R", 30), ("E", 51), number=3),
        ],
    )
    assert await levels(analytics, Config("any")) == [(3, 0.0), (2, 20.0), (1, 1.0), (1, 20.0)]


async def test_an_exclusion_counts_strictly_between_its_steps_only(analytics: Analytics) -> None:
    config = Config("ordered", exclusions=(FunnelExclusion(FAILED, 2, 4),))
    crowd = [
        person(("E", 1), ("C", 2), ("F", 2), ("R", 3), ("S", 4), number=1),  # in the click's second: kept
        person(("E", 1), ("C", 2), ("F", 3), ("R", 3), ("S", 4), number=2),  # between: dropped
        person(("E", 1), ("C", 2), ("R", 3), ("S", 4), ("F", 4), number=3),  # in the success's second: kept
        person(("E", 1), ("C", 2), ("R", 3), ("F", 21), number=4),  # short of step 4, in its window: dropped
        person(("E", 1), ("C", 2), ("R", 3), ("F", 22), number=5),  # after its window: kept
        # A second start that avoids it: kept, timed from that start.
        person(("E", 1), ("C", 2), ("F", 3), ("E", 10), ("C", 11), ("R", 12), ("S", 13), number=6),
    ]
    await load(analytics, crowd)
    assert await levels(analytics, config) == [(4, 0.0), (4, 1.0), (4, 2.0), (3, 3.0)]


async def test_time_to_convert_bins_and_median(analytics: Analytics) -> None:
    crowd = [person(("E", 0), ("C", 1), ("R", 1), ("S", gap), number=n) for n, gap in enumerate((1, 2, 2, 5, 11))]
    await load(analytics, crowd)
    report = await analytics.funnel_report(Config("strict").query(time_to_convert_bins=5))
    ttc = report.time_to_convert
    assert (ttc.actors, ttc.median_s) == (5, 2.0)
    assert [(b.start_s, b.end_s, b.actors) for b in ttc.bins] == [
        (1.0, 3.0, 3),
        (3.0, 5.0, 0),
        (5.0, 7.0, 1),
        (7.0, 9.0, 0),
        (9.0, 11.0, 1),
    ]
    default = await analytics.funnel_report(Config("ordered").query())
    assert len(default.time_to_convert.bins) == funnel.DEFAULT_BINS
    assert default.time_to_convert.actors == 5
    one = await analytics.funnel_report(replace(Config("any").query(), steps=(EXPOSURE, CLICK)))
    assert [(b.start_s, b.end_s, b.actors) for b in one.time_to_convert.bins] == [(1.0, 1.0, 5)]
    nobody = await analytics.funnel_report(replace(Config("any").query(), steps=(EXPOSURE, FAILED)))
    assert (nobody.time_to_convert.bins, nobody.time_to_convert.actors) == ([], 0)


# Correlation.


def fisher_two_sided(table: list[list[int]]) -> float:
    """Fisher's exact test by hand: the hypergeometric probabilities no larger than the table's, summed."""
    (a, b), (c, d) = table
    row, column, total = a + b, a + c, a + b + c + d

    def probability(x: int) -> float:
        return math.comb(column, x) * math.comb(total - column, row - x) / math.comb(total, row)

    observed = probability(a)
    low, high = max(0, row + column - total), min(row, column)
    return min(1.0, sum(p for x in range(low, high + 1) if (p := probability(x)) <= observed * (1 + 1e-7)))


def expected_correlations(
    crowd: Sequence[Person], config: Config, step: int, properties: Sequence[str]
) -> tuple[list[tuple], int, int]:
    """(property, value, converted, dropped, odds ratio, p-value) strongest first; all converters; all drop-offs."""
    outcomes = [(person, outcome(person, config)) for person in crowd]
    converted = [p for p, result in outcomes if result and result.level >= step]
    dropped = [p for p, result in outcomes if result and result.level == step - 1]
    rows = []
    for prop in properties:
        for value in sorted({p.value(prop, config.steps) for p in converted + dropped}):
            c = sum(1 for p in converted if p.value(prop, config.steps) == value)
            d = sum(1 for p in dropped if p.value(prop, config.steps) == value)
            odds = ((c + 1) / (len(converted) - c + 1)) / ((d + 1) / (len(dropped) - d + 1))
            p_value = fisher_two_sided([[c, len(converted) - c], [d, len(dropped) - d]])
            rows.append((prop, value, c, d, odds, p_value))
    rows.sort(key=lambda row: (-abs(math.log(row[4])), row[0], row[1]))
    return rows, len(converted), len(dropped)


@pytest.mark.parametrize(("config", "step"), [(Config("ordered"), 0), (CONFIGS["strict, two exclusions"], 3)])
async def test_correlation_matches_the_key(
    analytics: Analytics, crowd: list[Person], config: Config, step: int
) -> None:
    await load(analytics, crowd)
    # The funnel's own tenant and breakdown are ignored.
    asked = replace(config.query(), tenant_id="ignored", breakdown="device")
    query = correlation.CorrelationQuery(TENANT, asked, step=step)
    result = await analytics.funnel_correlation(query)
    k = step or len(config.steps)
    want, converted, dropped = expected_correlations(crowd, config, k, correlation.PROPERTIES)
    assert (result.step, result.converted, result.dropped) == (k, converted, dropped)
    assert any(one.significant for one in result.correlations)  # the traffic has some signal to find
    got = [(one.property, one.value, one.converted, one.dropped) for one in result.correlations]
    assert got == [row[:4] for row in want]
    assert [one.odds_ratio for one in result.correlations] == [pytest.approx(row[4], rel=1e-12) for row in want]
    assert [one.p_value for one in result.correlations] == [pytest.approx(row[5], rel=1e-9) for row in want]
    assert [one.significant for one in result.correlations] == [row[5] < 0.05 for row in want]
    totals = {prop: (0, 0) for prop in correlation.PROPERTIES}
    for one in result.correlations:
        c, d = totals[one.property]
        totals[one.property] = (c + one.converted, d + one.dropped)
    assert set(totals.values()) == {(result.converted, result.dropped)}
    assert result.converted > 20 and result.dropped > 20
    # A subset, in the order asked, with a repeat.
    subset = await analytics.funnel_correlation(replace(query, properties=("variant", "device", "variant")))
    assert {one.property for one in subset.correlations} == {"variant", "device"}
    assert [one for one in result.correlations if one.property in ("variant", "device")] == subset.correlations


# Validation.


def bad_query(**overrides: Any) -> FunnelQuery:
    return replace(Config("strict").query(), **overrides)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"exclusions": (FunnelExclusion(FAILED, 0, 2),)}, "exclusions[0].from_step"),
        ({"exclusions": (FunnelExclusion(FAILED, 4, 5),)}, "exclusions[0].from_step"),
        ({"exclusions": (FunnelExclusion(FAILED, 1, 3), FunnelExclusion(FAILED, 2, 2))}, "exclusions[1].to_step"),
        ({"exclusions": (FunnelExclusion(FAILED, 3, 5),)}, "exclusions[0].to_step"),
        ({"exclusions": (FunnelExclusion(EventMatcher(None), 1, 2),)}, "exclusions[0].event.source"),
        ({"exclusions": (FunnelExclusion(FAILED, 1, 2),) * 9}, "exclusions"),
        ({"time_to_convert_bins": 51}, "time_to_convert_bins"),
        ({"order": "sideways"}, "order"),
    ],
)
async def test_bad_funnels_name_the_field(analytics: Analytics, overrides: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidArgument) as error:
        await analytics.funnel_report(bad_query(**overrides))
    assert error.value.violations[0].field == field


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"properties": ("device", "country")}, "properties[1]"),
        ({"step": 1}, "step"),
        ({"step": 5}, "step"),
        ({"funnel": bad_query(steps=(EXPOSURE,))}, "funnel.steps"),
        ({"funnel": bad_query(exclusions=(FunnelExclusion(FAILED, 2, 1),))}, "funnel.exclusions[0].to_step"),
        ({"funnel": None}, "funnel"),
    ],
)
async def test_bad_correlations_name_the_field(analytics: Analytics, overrides: dict[str, Any], field: str) -> None:
    query = replace(correlation.CorrelationQuery(TENANT, bad_query()), **overrides)
    with pytest.raises(InvalidArgument) as error:
        await analytics.funnel_correlation(query)
    assert error.value.violations[0].field == field


def test_protobuf_requests_carry_the_new_fields() -> None:
    request = pb.FunnelRequest(
        tenant_id=TENANT,
        steps=[protocol_matcher("frontend", "generate", "click"), protocol_matcher("backend")],
        window_s=60,
        order=pb.FUNNEL_ORDER_ANY,
        exclusions=[
            pb.FunnelExclusion(event=protocol_matcher("frontend", "generate", "cancel"), from_step=1, to_step=2)
        ],
        time_to_convert_bins=12,
    )
    query = protocol.funnel_from_pb(request)
    assert (query.order, query.time_to_convert_bins) == ("any", 12)
    assert query.exclusions == (FunnelExclusion(CANCEL, 1, 2),)
    assert protocol.funnel_from_pb(pb.FunnelRequest()).order == "ordered"
    with pytest.raises(InvalidArgument) as error:
        protocol.funnel_from_pb(pb.FunnelRequest(order=7))  # type: ignore[arg-type]
    assert error.value.violations[0].field == "order"
    correlation_request = pb.FunnelCorrelationRequest(tenant_id="t", funnel=request, step=2, properties=["kind"])
    parsed = protocol.correlation_from_pb(correlation_request)
    assert (parsed.tenant_id, parsed.step, parsed.properties) == ("t", 2, ("kind",))
    assert parsed.funnel == query
    unknown = pb.EventMatcher(source=pb.EVENT_SOURCE_FRONTEND, frontend_type=9)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument) as error:
        protocol.correlation_from_pb(pb.FunnelCorrelationRequest(funnel=pb.FunnelRequest(steps=[unknown])))
    assert error.value.violations[0].field == "funnel.steps[0].frontend_type"
    with pytest.raises(InvalidArgument) as error:
        protocol.correlation_from_pb(pb.FunnelCorrelationRequest(funnel=pb.FunnelRequest(order=5)))  # type: ignore[arg-type]
    assert error.value.violations[0].field == "funnel.order"


def protocol_matcher(source: str, category: str = "", action: str = "") -> pb.EventMatcher:
    if source == "frontend":
        return pb.EventMatcher(source=pb.EVENT_SOURCE_FRONTEND, category=category, action=action)
    return pb.EventMatcher(source=pb.EVENT_SOURCE_BACKEND, backend_type=pb.BACKEND_EVENT_TYPE_REQUESTED)


async def test_over_grpc(clickhouse_url: str, make_settings: SettingsFactory) -> None:
    running, starting = await launch(make_settings(clickhouse_url))
    try:
        await starting
        crowd = [person(("E", 0), ("C", 1), ("R", 1), ("S", gap), number=n) for n, gap in enumerate((1, 2, 2, 5, 11))]
        crowd.append(person(("E", 0), ("C", 1), ("R", 1), ("F", 3), ("S", 4), number=9))  # excluded
        crowd.append(person(("E", 0), ("C", 1), ("R", 1), number=10))  # a drop-off
        await load(running.app.analytics, crowd)
        request = pb.FunnelRequest(
            tenant_id=TENANT,
            steps=[protocol_matcher("frontend", "generate", "exposure"), protocol_matcher("backend")],
            window_s=WINDOW_S,
            range=pb.TimeRange(start=timestamp(RANGE.start), end=timestamp(RANGE.end)),
            order=pb.FUNNEL_ORDER_STRICT,
            exclusions=[
                pb.FunnelExclusion(
                    event=pb.EventMatcher(source=pb.EVENT_SOURCE_BACKEND, backend_type=pb.BACKEND_EVENT_TYPE_FAILED),
                    from_step=2,
                    to_step=3,
                )
            ],
            time_to_convert_bins=2,
        )
        request.steps.append(
            pb.EventMatcher(source=pb.EVENT_SOURCE_BACKEND, backend_type=pb.BACKEND_EVENT_TYPE_SUCCEEDED)
        )
        response = await running.stub.Funnel(request)
        [series] = response.series
        assert [step.count for step in series.steps] == [6, 6, 5]
        ttc = response.time_to_convert
        assert [(b.start_s, b.end_s, b.actors) for b in ttc.bins] == [(1.0, 6.0, 4), (6.0, 11.0, 1)]
        assert (ttc.actors, ttc.median_s) == (5, 2.0)
        answer = await running.stub.FunnelCorrelation(
            pb.FunnelCorrelationRequest(tenant_id=TENANT, funnel=request, properties=["variant"])
        )
        assert (answer.step, answer.converted, answer.dropped) == (3, 5, 1)
        [only] = answer.correlations
        assert (only.property, only.value, only.converted, only.dropped) == ("variant", "A", 5, 1)
        assert (only.odds_ratio, only.p_value, only.significant) == (((5 + 1) / 1) / ((1 + 1) / 1), 1.0, False)
        for bad, field in (
            (pb.FunnelCorrelationRequest(tenant_id=TENANT, funnel=request, properties=["colour"]), "properties[0]"),
            (pb.FunnelCorrelationRequest(tenant_id=TENANT, funnel=request, step=1), "step"),
            (pb.FunnelCorrelationRequest(tenant_id=TENANT), "funnel"),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as error:
                await running.stub.FunnelCorrelation(bad)
            assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert [name for name, _ in field_violations(error.value)] == [field]
        request.exclusions[0].to_step = 4
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await running.stub.Funnel(request)
        assert [name for name, _ in field_violations(error.value)] == ["exclusions[0].to_step"]
    finally:
        await running.close()
