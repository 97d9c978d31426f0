"""RecommendTemplates against an answer key computed use by use, on both engines.

Templates with known records: "good" (300 uses, about 80% kept), "lucky" (3 uses, all kept), "meh"
(about 35% kept), "ink" (Chinese prompts, about 70% kept), requests from no template, a template only
ever shown ("ghost") and a candidate nobody saw ("unused"). Some users ask again for the same intent
within the window (the first request is then regenerated, not accepted), some jobs fail. The key
classifies every request with plain loops; posteriors are checked against the regularised incomplete
beta function (the inverse of the quantiles the service reports).
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta

import pytest
from scipy.special import betainc

from inkloop.errors import InvalidArgument
from inkloop.v1 import analytics_pb2 as pb
from inkloop_analytics import protocol, template_ranking
from inkloop_analytics.matchers import TimeRange
from inkloop_analytics.outcomes import OutcomeRules
from inkloop_analytics.service import Analytics
from inkloop_analytics.template_ranking import RecommendTemplatesQuery

from .builders import backend, track
from .generator import T0

RULES = OutcomeRules(regenerate_window_s=600, max_intent_distance_bits=12)
RANGE = TimeRange(T0, T0 + timedelta(days=1))
CANDIDATES = ("good", "lucky", "meh", "ink", "unused", "ghost")
LANGUAGE = {"en": pb.LANGUAGE_CLASS_EN, "zh": pb.LANGUAGE_CLASS_ZH, "mixed": pb.LANGUAGE_CLASS_MIXED}
T = pb.BackendEventType


@dataclass
class Use:
    request_id: str
    user: str
    asked_at: int
    template: str
    language: str
    signature: int
    downloaded: bool = False
    failed: bool = False


@dataclass
class Traffic:
    uses: list[Use]
    shown: dict[str, set[str]]
    picked: dict[str, set[str]]
    frontend: list[pb.FrontendEvent]
    backend: list[pb.BackendEvent]


def at(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, T0.tzinfo)


def generate(seed: int = 11) -> Traffic:
    rng = random.Random(seed)
    traffic = Traffic([], defaultdict(set), defaultdict(set), [], [])
    epoch = int(T0.timestamp())
    # (template, uses, chance an image is kept, languages, with retries and failures)
    plan = [
        ("good", 300, 0.8, ["en", "en", "mixed", "zh"], True),
        ("lucky", 3, 1.0, ["en"], False),
        ("meh", 60, 0.35, ["en", "zh"], True),
        ("ink", 80, 0.7, ["zh", "zh", "mixed"], True),
        ("", 120, 0.5, ["en", "zh", "mixed"], True),
    ]
    number = 0
    for template, count, keep, languages, noisy in plan:
        for _ in range(count):
            number += 1
            user = f"u{number}"
            clock = epoch + rng.randrange(600, 20 * 3600)
            intent = rng.getrandbits(64)
            language = rng.choice(languages)
            # One in five users asks again for the same intent (one bit edited) a minute later.
            attempts = 2 if noisy and rng.random() < 0.2 else 1
            for attempt in range(attempts):
                use = Use(f"r{number}-{attempt}", user, clock + 60 * attempt, template, language, intent ^ attempt)
                traffic.uses.append(use)
                features = pb.PromptFeatures(length=30, language=LANGUAGE[language], signature=use.signature)
                traffic.backend.append(
                    backend(
                        at(use.asked_at),
                        T.BACKEND_EVENT_TYPE_REQUESTED,
                        use.request_id,
                        user_id=user,
                        template_id=template,
                        prompt=features,
                    )
                )
                if noisy and rng.random() < 0.05:
                    use.failed = True
                    traffic.backend.append(
                        backend(at(use.asked_at + 3), T.BACKEND_EVENT_TYPE_FAILED, use.request_id, user_id=user)
                    )
                    continue
                traffic.backend.append(
                    backend(at(use.asked_at + 5), T.BACKEND_EVENT_TYPE_SUCCEEDED, use.request_id, user_id=user)
                )
                if attempt == attempts - 1 and rng.random() < keep:
                    use.downloaded = True
                    traffic.backend.append(
                        backend(at(use.asked_at + 30), T.BACKEND_EVENT_TYPE_DOWNLOADED, use.request_id, user_id=user)
                    )
    # Suggestions: visitors shown templates (some twice), some picking one.
    for number in range(400):
        visitor = f"v{number}"
        moment = at(epoch + rng.randrange(0, 23 * 3600))
        for template in rng.sample(["good", "lucky", "meh", "ink", "ghost"], 2):
            for repeat in range(rng.choice([1, 1, 2])):
                traffic.frontend.append(
                    track(moment + timedelta(seconds=repeat), visitor, "template", "exposure", label=template)
                )
                traffic.shown[template].add(visitor)
            if rng.random() < 0.3:
                traffic.frontend.append(
                    track(moment + timedelta(seconds=5), visitor, "template", "pick", label=template)
                )
                traffic.picked[template].add(visitor)
    # Never counted: another category, another tenant, before the range.
    traffic.frontend.append(track(at(epoch + 100), "x1", "inpaint", "exposure", label="good"))
    traffic.frontend.append(track(at(epoch + 100), "x2", "template", "exposure", label="good", tenant_id="t2"))
    traffic.frontend.append(track(at(epoch - 100), "x3", "template", "pick", label="good"))
    early = pb.PromptFeatures(length=30, language=pb.LANGUAGE_CLASS_EN, signature=1)
    traffic.backend.append(
        backend(at(epoch - 100), T.BACKEND_EVENT_TYPE_REQUESTED, "early", template_id="good", prompt=early)
    )
    traffic.backend.append(backend(at(epoch - 50), T.BACKEND_EVENT_TYPE_DOWNLOADED, "early"))
    return traffic


def accepted(uses: list[Use]) -> dict[str, bool]:
    """Request id -> accepted, by the Outcomes rules: failed, else kept, else (regenerated or abandoned)."""
    return {use.request_id: not use.failed and use.downloaded for use in uses}


def regenerated(uses: list[Use]) -> set[str]:
    by_user = defaultdict(list)
    for use in uses:
        by_user[use.user].append(use)
    return {
        use.request_id
        for use in uses
        if not use.failed
        and not use.downloaded
        and any(
            0 < later.asked_at - use.asked_at <= RULES.regenerate_window_s
            and bin(later.signature ^ use.signature).count("1") <= RULES.max_intent_distance_bits
            for later in by_user[use.user]
        )
    }


def expected(traffic: Traffic, language: str, candidates: tuple[str, ...], strength: float) -> tuple[list, float]:
    """[(id, shown, picked, requests, accepted, estimate, a, b)] best first, and the prior mean."""
    kept = accepted(traffic.uses)
    counted = [use for use in traffic.uses if not language or use.language == language]
    prior = sum(kept[use.request_id] for use in counted) / len(counted) if counted else 0.5
    rows = []
    for template in candidates:
        mine = [use for use in counted if use.template == template]
        requests, wins = len(mine), sum(kept[use.request_id] for use in mine)
        a, b = prior * strength + wins, (1 - prior) * strength + requests - wins
        shown, picked = len(traffic.shown.get(template, ())), len(traffic.picked.get(template, ()))
        rows.append((template, shown, picked, requests, wins, a / (a + b), a, b))
    return rows, prior


@pytest.fixture
async def traffic(analytics: Analytics) -> Traffic:
    data = generate()
    for start in range(0, len(data.backend), 200):
        assert (await analytics.ingest([], data.backend[start : start + 200], "")).count("rejected") == 0
    for start in range(0, len(data.frontend), 200):
        assert (await analytics.ingest(data.frontend[start : start + 200], [], "")).count("rejected") == 0
    return data


def test_the_traffic_has_regenerations_failures_and_every_language() -> None:
    data = generate()
    assert len(regenerated(data.uses)) >= 20
    assert sum(use.failed for use in data.uses) >= 10
    assert {use.language for use in data.uses if use.template == "good"} == {"en", "mixed", "zh"}
    good = [use for use in data.uses if use.template == "good"]
    assert 0.6 < sum(accepted(data.uses)[use.request_id] for use in good) / len(good) < 0.8


@pytest.mark.parametrize("language", ["", "en", "zh"])
async def test_recommendations_match_the_answer_key(analytics: Analytics, traffic: Traffic, language: str) -> None:
    query = RecommendTemplatesQuery("t1", RANGE, RULES, language, CANDIDATES, prior_strength=10.0)
    answer = await analytics.recommend_templates(query)
    want, prior = expected(traffic, language, CANDIDATES, 10.0)
    assert answer.prior_mean == pytest.approx(prior)
    assert answer.prior_strength == 10.0
    got = {one.template_id: one for one in answer.templates}
    assert set(got) == set(CANDIDATES)
    for template, shown, picked, requests, wins, estimate, a, b in want:
        one = got[template]
        assert (one.shown, one.picked, one.requests, one.accepted) == (shown, picked, requests, wins), template
        assert one.estimate == pytest.approx(estimate), template
        assert betainc(a, b, one.interval_low) == pytest.approx(0.025, abs=1e-6), template
        assert betainc(a, b, one.interval_high) == pytest.approx(0.975, abs=1e-6), template
        if requests:
            assert one.perceived_success == pytest.approx(wins / requests), template
        else:
            assert math.isnan(one.perceived_success), template
    assert got["unused"].requests == 0 and got["unused"].estimate == pytest.approx(prior)  # the prior alone
    assert got["ghost"].shown > 0 and got["ghost"].requests == 0
    order = [one.template_id for one in answer.templates]
    assert order == [row[0] for row in sorted(want, key=lambda row: (-got[row[0]].interval_low, -row[5], row[0]))]
    lows = [one.interval_low for one in answer.templates]
    assert lows == sorted(lows, reverse=True)


async def test_three_lucky_uses_never_outrank_three_hundred_good_ones(analytics: Analytics, traffic: Traffic) -> None:
    answer = await analytics.recommend_templates(RecommendTemplatesQuery("t1", RANGE, RULES, "", CANDIDATES))
    order = [one.template_id for one in answer.templates]
    good, lucky = (next(one for one in answer.templates if one.template_id == name) for name in ("good", "lucky"))
    assert lucky.perceived_success == 1.0 > good.perceived_success  # luckier...
    assert order.index("good") == 0 and order.index("lucky") > order.index("good")  # ...yet ranked below
    assert lucky.interval_high - lucky.interval_low > 3 * (good.interval_high - good.interval_low)


async def test_the_language_filter_changes_the_records_and_the_prior(analytics: Analytics, traffic: Traffic) -> None:
    zh = await analytics.recommend_templates(RecommendTemplatesQuery("t1", RANGE, RULES, "zh", CANDIDATES))
    en = await analytics.recommend_templates(RecommendTemplatesQuery("t1", RANGE, RULES, "en", CANDIDATES))
    assert zh.prior_mean != en.prior_mean
    by_zh = {one.template_id: one for one in zh.templates}
    by_en = {one.template_id: one for one in en.templates}
    assert by_zh["ink"].requests > 0 and by_en["ink"].requests == 0
    assert by_zh["lucky"].requests == 0 and by_en["lucky"].requests == 3
    assert by_zh["ghost"].shown == by_en["ghost"].shown > 0  # suggestions have no language


async def test_without_candidates_every_template_seen_is_ranked(analytics: Analytics, traffic: Traffic) -> None:
    answer = await analytics.recommend_templates(RecommendTemplatesQuery("t1", RANGE, RULES))
    assert {one.template_id for one in answer.templates} == {"good", "lucky", "meh", "ink", "ghost"}
    # A good record beats the bare prior; a poor one (35% against a prior near 65%) ranks below it.
    only = await analytics.recommend_templates(RecommendTemplatesQuery("t1", RANGE, RULES, "", ("meh", "nope", "good")))
    assert [one.template_id for one in only.templates] == ["good", "nope", "meh"]
    assert only.templates[1].requests == only.templates[1].shown == 0
    top = await analytics.recommend_templates(RecommendTemplatesQuery("t1", RANGE, RULES, "", CANDIDATES, limit=2))
    assert [one.template_id for one in top.templates] == [one.template_id for one in answer.templates][:2]


async def test_a_tenant_without_requests_has_the_even_prior(analytics: Analytics, traffic: Traffic) -> None:
    answer = await analytics.recommend_templates(RecommendTemplatesQuery("t9", RANGE, RULES, "", ("a", "b")))
    assert answer.prior_mean == 0.5
    assert [(one.template_id, one.estimate) for one in answer.templates] == [("a", 0.5), ("b", 0.5)]


def test_the_prior_strength_comes_from_the_settings(make_settings) -> None:
    settings = make_settings("chdb:///unused", template_prior_strength=40.0)
    assert settings.template_prior_strength == 40.0
    request = pb.RecommendTemplatesRequest(tenant_id="t1", template_ids=["a"], limit=5)
    request.range.start.FromDatetime(RANGE.start)
    request.range.end.FromDatetime(RANGE.end)
    query = protocol.recommend_templates_from_pb(request, RULES, settings.template_prior_strength)
    assert (query.prior_strength, query.template_ids, query.limit, query.rules) == (40.0, ("a",), 5, RULES)
    with pytest.raises(ValueError, match="template_prior_strength"):
        make_settings("chdb:///unused", template_prior_strength=0)


def test_posterior_quantiles_and_degenerate_priors() -> None:
    mean, low, high = template_ranking.posterior(0.5, 10.0, 300, 240)
    assert mean == pytest.approx(245 / 310)
    assert betainc(245, 65, low) == pytest.approx(0.025) and betainc(245, 65, high) == pytest.approx(0.975)
    assert template_ranking.posterior(0.0, 10.0, 0, 0) == (0.0, 0.0, 0.0)  # all mass at 0
    assert template_ranking.posterior(1.0, 10.0, 4, 4) == (1.0, 1.0, 1.0)


@pytest.mark.parametrize(
    ("query", "field"),
    [
        (RecommendTemplatesQuery("", RANGE, RULES), "tenant_id"),
        (RecommendTemplatesQuery("t1", None, RULES), "range"),
        (RecommendTemplatesQuery("t1", RANGE, RULES, "latin"), "language_class"),
        (RecommendTemplatesQuery("t1", RANGE, RULES, "", tuple(f"t{n}" for n in range(201))), "template_ids"),
        (RecommendTemplatesQuery("t1", RANGE, RULES, "", ("ok", "")), "template_ids[1]"),
        (RecommendTemplatesQuery("t1", RANGE, RULES, "", ("x" * 65,)), "template_ids[0]"),
        (RecommendTemplatesQuery("t1", RANGE, RULES, "", (), 101), "limit"),
        (RecommendTemplatesQuery("t1", RANGE, OutcomeRules(0, 12)), "rules.regenerate_window_s"),
    ],
)
def test_bad_queries_name_the_field(query: RecommendTemplatesQuery, field: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        query.check()
    assert caught.value.violations[0].field == field
