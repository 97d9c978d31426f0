"""Outcomes and retry loops against an answer key computed request by request, on both engines.

The traffic has known behaviour: users retry an intent with small prompt edits (some past the window,
some failing), download some results, repaint some (an inpaint whose base is the result), and move
on to unrelated prompts. The key classifies every request with plain loops over the same events;
the service must give exactly the same counts, after duplicates were sent again.
"""

from __future__ import annotations

import math
import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import pytest

from inkloop.errors import InvalidArgument
from inkloop.prompts import PrivacyPolicy, language_class, prompt_features
from inkloop.v1 import analytics_pb2 as pb
from inkloop_analytics import insights, outcomes
from inkloop_analytics.matchers import TimeRange
from inkloop_analytics.service import Analytics

from .builders import backend
from .generator import T0

POLICY = PrivacyPolicy(store_text="none", salt="outcomes-salt")
RULES = outcomes.OutcomeRules(regenerate_window_s=600, max_intent_distance_bits=12)
RANGE = TimeRange(T0, T0 + timedelta(days=1))
EDGES = (20, 50, 100, 200, 500)
T = pb.BackendEventType

INTENTS = [
    "一只在雪地里奔跑的红狐狸，电影感光影",
    "a lighthouse on a cliff at dusk, oil painting",
    "赛博朋克城市夜景 neon rain, 4k",
    "product shot of a ceramic mug on a wooden table, soft light",
    "水墨画风格的山水，远处有小船",
    "poster for a jazz festival, bold typography, 1960s style",
    "一碗热腾腾的拉面 ramen close-up, food photography",
    "a cozy reading nook with plants and warm lamp light, isometric illustration",
]
EDITS = ["", "，高清", " highly detailed", "，8k", " ", "！", " trending"]
TEMPLATES = ["", "", "tpl-fox", "tpl-poster", "tpl-ink"]  # "": a request made from no template


@dataclass
class Request:
    request_id: str
    user: str
    asked_at: int
    prompt: str
    variant: str
    kind: int
    failed: bool = False
    result_at: int | None = None
    looks: list[int] = field(default_factory=list)
    downloaded: bool = False
    base_of_edit: bool = False
    template: str = ""

    @property
    def signature(self) -> int:
        return POLICY.signature(self.prompt)


def generate(seed: int = 5) -> tuple[list[Request], list[pb.BackendEvent]]:
    rng = random.Random(seed)
    templates = random.Random(seed + 1)  # its own draws: the rest of the traffic is as before templates
    requests: list[Request] = []
    events: list[pb.BackendEvent] = []
    epoch = int(T0.timestamp())

    def at(seconds: int) -> datetime:
        return datetime.fromtimestamp(seconds, T0.tzinfo)

    def emit(request: Request, event_type: int, when: int, **fields: object) -> None:
        event = backend(at(when), event_type, request.request_id, user_id=request.user, variant=request.variant)
        event.kind = request.kind  # a field of the builder's own name: set after it
        for name, value in fields.items():
            if name == "prompt":
                event.prompt.CopyFrom(value)  # type: ignore[arg-type]
            else:
                setattr(event, name, value)
        events.append(event)

    for u in range(40):
        user = f"user-{u}"
        clock = epoch + rng.randrange(3600, 3 * 3600)
        for _intent in range(rng.randint(1, 4)):
            base = rng.choice(INTENTS)
            for _attempt in range(rng.randint(1, 5)):
                number = len(requests)
                prompt = base + rng.choice(EDITS)
                request = Request(f"r{number}", user, clock, prompt, rng.choice("AB"), 1)
                request.template = templates.choice(TEMPLATES)
                requests.append(request)
                features = prompt_features(prompt, POLICY).to_pb()
                emit(request, T.BACKEND_EVENT_TYPE_REQUESTED, clock, prompt=features, template_id=request.template)
                if rng.random() < 0.1:
                    request.failed = True
                    emit(request, T.BACKEND_EVENT_TYPE_FAILED, clock + 2, error_code="INTERNAL")
                else:
                    request.result_at = clock + rng.randint(2, 20)
                    emit(request, T.BACKEND_EVENT_TYPE_SUCCEEDED, request.result_at, latency_s=3.0)
                    for _ in range(rng.randint(0, 2)):
                        look = request.result_at + rng.randint(1, 120)
                        request.looks.append(look)
                        emit(request, T.BACKEND_EVENT_TYPE_VIEWED, look)
                    if rng.random() < 0.25:
                        look = request.result_at + rng.randint(5, 200)
                        request.looks.append(look)
                        request.downloaded = True
                        emit(request, T.BACKEND_EVENT_TYPE_DOWNLOADED, look)
                    elif rng.random() < 0.15:  # repainted: an inpaint request on this image
                        request.base_of_edit = True
                        edit = Request(
                            f"r{len(requests)}e", user, request.result_at + 30, prompt + " 修改背景", request.variant, 2
                        )
                        requests.append(edit)
                        edit.result_at = edit.asked_at + 5
                        emit(
                            edit,
                            T.BACKEND_EVENT_TYPE_REQUESTED,
                            edit.asked_at,
                            prompt=prompt_features(edit.prompt, POLICY).to_pb(),
                            base_request_id=request.request_id,
                        )
                        emit(edit, T.BACKEND_EVENT_TYPE_SUCCEEDED, edit.result_at)
                # Retries come quickly (inside the window) or after a pause (outside it).
                clock += rng.choice([rng.randint(30, 300), rng.randint(30, 300), rng.randint(700, 1500)])
            clock += rng.randint(60, 2000)
    assert all(RANGE.start.timestamp() <= r.asked_at < RANGE.end.timestamp() - 3600 for r in requests)
    # Outside the range: counts nowhere.
    early = Request("before-range", "user-0", epoch - 100, INTENTS[0], "A", 1)
    emit(early, T.BACKEND_EVENT_TYPE_REQUESTED, early.asked_at, prompt=prompt_features(early.prompt, POLICY).to_pb())
    return requests, events


def distance(a: int, b: int) -> int:
    return bin(a ^ b).count("1")


def classify(requests: list[Request]) -> dict[str, str]:
    by_user: dict[str, list[Request]] = defaultdict(list)
    for request in requests:
        by_user[request.user].append(request)
    outcome = {}
    for request in requests:
        if request.failed:
            outcome[request.request_id] = "failed"
        elif request.downloaded or request.base_of_edit:
            outcome[request.request_id] = "accepted"
        elif any(
            0 < later.asked_at - request.asked_at <= RULES.regenerate_window_s
            and distance(later.signature, request.signature) <= RULES.max_intent_distance_bits
            for later in by_user[request.user]
        ):
            outcome[request.request_id] = "regenerated"
        else:
            outcome[request.request_id] = "abandoned"
    return outcome


def dwell(request: Request, mine: list[Request]) -> int | None:
    if request.result_at is None:
        return None
    following = [
        later.asked_at
        for later in mine
        if later.asked_at > request.asked_at
        and later.asked_at >= request.result_at
        and later.asked_at - request.result_at <= RULES.regenerate_window_s
    ]
    if following:
        return min(following) - request.result_at
    return max(request.looks) - request.result_at if request.looks else None


def bucket(chars: int) -> str:
    return insights.length_labels(EDGES)[sum(chars > edge for edge in EDGES)]


def key_of(request: Request, breakdown: str) -> str:
    return {
        "": "",
        "language_class": language_class(request.prompt),
        "variant": request.variant,
        "kind": {1: "text_to_image", 2: "inpaint"}[request.kind],
        "length_bucket": bucket(len(request.prompt)),
        "template": request.template,
    }[breakdown]


def expected_outcomes(requests: list[Request], breakdown: str, language: str = "") -> dict[str, tuple]:
    """Every request is classified against all the others; only those of `language` (if given) are counted."""
    outcome = classify(requests)
    by_user: dict[str, list[Request]] = defaultdict(list)
    for request in requests:
        by_user[request.user].append(request)
    groups: dict[str, Counter[str]] = defaultdict(Counter)
    dwells: dict[str, list[int]] = defaultdict(list)
    for request in requests:
        if language and language_class(request.prompt) != language:
            continue
        key = key_of(request, breakdown)
        groups[key][outcome[request.request_id]] += 1
        seconds = dwell(request, by_user[request.user])
        if seconds is not None:
            dwells[key].append(seconds)
    return {
        key: (
            sum(counts.values()),
            *(counts[name] for name in outcomes.OUTCOMES),
            sum(dwells[key]) / len(dwells[key]) if dwells[key] else math.nan,
        )
        for key, counts in groups.items()
    }


def expected_loops(requests: list[Request], loop: int) -> dict[str, tuple[int, int]]:
    by_user: dict[str, list[Request]] = defaultdict(list)
    for request in requests:
        by_user[request.user].append(request)
    users: dict[str, set[str]] = defaultdict(set)
    looping: dict[str, set[str]] = defaultdict(set)
    span = RULES.regenerate_window_s * loop
    for request in requests:
        lang = language_class(request.prompt)
        users[lang].add(request.user)
        same = [
            later
            for later in by_user[request.user]
            if 0 < later.asked_at - request.asked_at <= span
            and distance(later.signature, request.signature) <= RULES.max_intent_distance_bits
        ]
        accepted = request.downloaded or request.base_of_edit or any(r.downloaded or r.base_of_edit for r in same)
        if len(same) >= loop and not accepted:
            looping[lang].add(request.user)
    return {lang: (len(users[lang]), len(looping[lang])) for lang in users}


@pytest.fixture
async def traffic(analytics: Analytics) -> list[Request]:
    requests, events = generate()
    for start in range(0, len(events), 80):
        result = await analytics.ingest([], events[start : start + 80], "")
        assert result.count("rejected") == 0, result
    again = random.Random(3).sample(events, len(events) // 5)
    assert (await analytics.ingest([], again, "retry")).count("duplicate") == len(again)
    return requests


def test_the_traffic_has_every_outcome_and_retry_loops() -> None:
    requests, _ = generate()
    counts = Counter(classify(requests).values())
    assert all(counts[name] >= 5 for name in outcomes.OUTCOMES), counts
    assert any(looping for _, looping in expected_loops(requests, 3).values())


@pytest.mark.parametrize("breakdown", outcomes.BREAKDOWNS)
async def test_outcomes_match_the_answer_key(analytics: Analytics, traffic: list[Request], breakdown: str) -> None:
    answer = await analytics.outcomes(outcomes.OutcomesQuery("t1", RANGE, RULES, breakdown))
    got = {
        group.value: (
            group.requests,
            group.accepted,
            group.regenerated,
            group.abandoned,
            group.failed,
            group.mean_dwell_s,
        )
        for group in answer.groups
    }
    want = expected_outcomes(traffic, breakdown)
    assert got.keys() == want.keys()
    for key, figures in want.items():
        assert got[key][:5] == figures[:5], key
        assert got[key][5] == pytest.approx(figures[5], nan_ok=True), key
    assert [g.requests for g in answer.groups] == sorted((g.requests for g in answer.groups), reverse=True)
    whole = answer.groups[0] if breakdown == "" else None
    if whole is not None:
        assert whole.perceived_success == whole.accepted / whole.requests
        assert whole.regenerations_per_accepted == whole.regenerated / whole.accepted


def figures(answer: outcomes.Outcomes) -> dict[str, tuple]:
    return {
        g.value: (g.requests, g.accepted, g.regenerated, g.abandoned, g.failed, g.mean_dwell_s) for g in answer.groups
    }


@pytest.mark.parametrize("language", outcomes.LANGUAGE_CLASSES)
async def test_a_language_filter_counts_only_its_requests_classified_among_all(
    analytics: Analytics, traffic: list[Request], language: str
) -> None:
    answer = await analytics.outcomes(outcomes.OutcomesQuery("t1", RANGE, RULES, "template", language))
    got = figures(answer)
    want = expected_outcomes(traffic, "template", language)
    assert got.keys() == want.keys()
    for key, expected in want.items():
        assert got[key][:5] == expected[:5], key
        assert got[key][5] == pytest.approx(expected[5], nan_ok=True), key
    # Classified among all requests: a request of another class can regenerate one of this class.
    whole = await analytics.outcomes(outcomes.OutcomesQuery("t1", RANGE, RULES, "template"))
    assert sum(g.requests for g in answer.groups) < sum(g.requests for g in whole.groups)


def test_the_template_traffic_has_every_template_and_class_mixed() -> None:
    requests, _ = generate()
    seen = Counter((request.template, language_class(request.prompt)) for request in requests)
    assert {template for template, _ in seen} == set(TEMPLATES)
    assert all(sum(n for (t, _), n in seen.items() if t == template) >= 10 for template in TEMPLATES)
    assert len({lang for _, lang in seen}) >= 3
    # Some request is regenerated only by a later request of another language class.
    outcome = classify(requests)
    assert any(
        outcome[request.request_id] == "regenerated"
        and not any(
            0 < later.asked_at - request.asked_at <= RULES.regenerate_window_s
            and distance(later.signature, request.signature) <= RULES.max_intent_distance_bits
            and language_class(later.prompt) == language_class(request.prompt)
            for later in requests
            if later.user == request.user
        )
        for request in requests
    )


@pytest.mark.parametrize("loop", [2, 3])
async def test_retry_loops_match_the_answer_key(analytics: Analytics, traffic: list[Request], loop: int) -> None:
    answer = await analytics.retry_loops(outcomes.RetryLoopsQuery("t1", RANGE, RULES, loop))
    got = {group.language_class: (group.users, group.looping_users) for group in answer.groups}
    assert got == expected_loops(traffic, loop)


async def test_a_wider_window_turns_abandoned_requests_into_regenerated_ones(
    analytics: Analytics, traffic: list[Request]
) -> None:
    narrow = (await analytics.outcomes(outcomes.OutcomesQuery("t1", RANGE, RULES))).groups[0]
    wide_rules = RULES.overridden(window_s=4 * 3600, distance_bits=0)
    wide = (await analytics.outcomes(outcomes.OutcomesQuery("t1", RANGE, wide_rules))).groups[0]
    assert wide.regenerated > narrow.regenerated and wide.abandoned < narrow.abandoned
    assert (wide.accepted, wide.failed, wide.requests) == (narrow.accepted, narrow.failed, narrow.requests)


@pytest.mark.parametrize(
    ("query", "field"),
    [
        (outcomes.OutcomesQuery("t1", RANGE, RULES, "device"), "breakdown"),
        (outcomes.OutcomesQuery("t1", RANGE, RULES, "template", "latin"), "language_class"),
        (outcomes.OutcomesQuery("t1", None, RULES), "range"),
        (outcomes.OutcomesQuery("t1", RANGE, outcomes.OutcomeRules(0, 12)), "rules.regenerate_window_s"),
        (outcomes.OutcomesQuery("t1", RANGE, outcomes.OutcomeRules(60, 64)), "rules.max_intent_distance_bits"),
        (outcomes.RetryLoopsQuery("t1", RANGE, RULES, 0), "min_regenerations"),
    ],
)
def test_bad_queries_name_the_field(query: outcomes.OutcomesQuery | outcomes.RetryLoopsQuery, field: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        query.check()
    assert caught.value.violations[0].field == field
