"""Prompt templates ranked by perceived success, with the suggestion loop measured.

For each template: shown and picked are distinct visitors with a front-end `_trackEvent("template",
"exposure", id)` / `_trackEvent("template", "pick", id)` in the range; requests and accepted are the
generation requests made from it (their REQUESTED event's `template_id`) and, of those, the ones
Outcomes classifies accepted, of one language class when asked.

Few uses say little: a template's perceived success is estimated as the mean of a Beta posterior whose
prior is the perceived success of all the tenant's requests of that language class in the range
(0.5 when there were none), worth `prior_strength` pseudo-requests. Templates are ranked by the 2.5%
quantile of that posterior, so three lucky uses never outrank three hundred good ones.

Two queries: the front-end counts, and the Outcomes classification's per-request stage broken down by
template (accepted is decided per request; only regenerated vs abandoned needs the user's arrays).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from scipy.stats import beta

from inkloop.errors import FieldViolation, InvalidArgument
from inkloop_analytics import outcomes
from inkloop_analytics.matchers import EXPOSURE_ACTION, TimeRange, require_tenant
from inkloop_analytics.outcomes import OutcomeRules
from inkloop_analytics.storage import ClickHouse

TEMPLATE_CATEGORY = "template"
PICK_ACTION = "pick"
MAX_TEMPLATES = 200
MAX_TEMPLATE_ID_CHARS = 64
MAX_LIMIT = 100
DEFAULT_PRIOR_STRENGTH = 10.0
NO_DATA_PRIOR = 0.5
INTERVAL = (0.025, 0.975)

SUGGESTIONS = """
SELECT label, uniqExactIf(visitor_id, action = %(exposure)s), uniqExactIf(visitor_id, action = %(pick)s)
FROM frontend_events
WHERE tenant_id = %(tenant)s
    AND time >= toDateTime(%(start)s, 'UTC') AND time < toDateTime(%(end)s, 'UTC') AND type = 'track_event'
    AND category = %(category)s AND action IN (%(exposure)s, %(pick)s) AND label != '' {only_candidates}
GROUP BY label
"""

# Per template id ("" = requests made from none): requests and accepted ones.
USES = """
SELECT group_value, count(), countIf(outcome = {accepted})
FROM ({classified})
GROUP BY group_value
"""


@dataclass(frozen=True)
class RecommendTemplatesQuery:
    tenant_id: str
    range: TimeRange | None
    rules: OutcomeRules
    language_class: str = ""
    #: Candidates; empty = every template id seen in the range.
    template_ids: tuple[str, ...] = ()
    #: At most this many (0 = all).
    limit: int = 0
    prior_strength: float = DEFAULT_PRIOR_STRENGTH

    def check(self) -> None:
        require_tenant(self.tenant_id)
        if self.range is None:
            raise InvalidArgument("range", "required")
        self.range.check()
        outcomes.check_language_class(self.language_class)
        if len(self.template_ids) > MAX_TEMPLATES:
            raise InvalidArgument("template_ids", f"at most {MAX_TEMPLATES}, got {len(self.template_ids)}")
        problems = [
            FieldViolation(f"template_ids[{index}]", f"must be 1 to {MAX_TEMPLATE_ID_CHARS} characters")
            for index, template_id in enumerate(self.template_ids)
            if not 1 <= len(template_id) <= MAX_TEMPLATE_ID_CHARS
        ]
        if problems:
            raise InvalidArgument.of(problems)
        if not 0 <= self.limit <= MAX_LIMIT:
            raise InvalidArgument("limit", f"must be 1 to {MAX_LIMIT} (0 = all), got {self.limit}")
        if not (math.isfinite(self.prior_strength) and self.prior_strength > 0):
            raise InvalidArgument("prior_strength", "must be a positive number")
        self.rules.check()


@dataclass(frozen=True)
class TemplateRecommendation:
    template_id: str
    shown: int
    picked: int
    requests: int
    accepted: int
    estimate: float
    interval_low: float
    interval_high: float

    @property
    def perceived_success(self) -> float:
        return self.accepted / self.requests if self.requests else math.nan


@dataclass(frozen=True)
class TemplateRanking:
    templates: list[TemplateRecommendation]
    prior_mean: float
    prior_strength: float


def posterior(prior_mean: float, prior_strength: float, requests: int, accepted: int) -> tuple[float, float, float]:
    """(mean, 2.5% quantile, 97.5% quantile) of Beta(prior_mean·strength + accepted,
    (1 - prior_mean)·strength + requests - accepted)."""
    a = prior_mean * prior_strength + accepted
    b = (1 - prior_mean) * prior_strength + requests - accepted
    if a == 0:  # a prior at 0 and nothing accepted: all the mass at 0
        return 0.0, 0.0, 0.0
    if b == 0:
        return 1.0, 1.0, 1.0
    low, high = beta.ppf(INTERVAL, a, b)
    return a / (a + b), float(low), float(high)


def run(ch: ClickHouse, query: RecommendTemplatesQuery) -> TemplateRanking:
    query.check()
    assert query.range is not None
    candidates = list(dict.fromkeys(query.template_ids))  # first occurrence of each, in order
    bound: dict[str, Any] = outcomes.params(query.tenant_id, query.range, query.rules, query.language_class)
    bound.update(category=TEMPLATE_CATEGORY, exposure=EXPOSURE_ACTION, pick=PICK_ACTION, candidates=tuple(candidates))
    only = "AND label IN %(candidates)s" if candidates else ""
    suggestions = {
        str(label): (int(shown), int(picked))
        for label, shown, picked in ch.query(SUGGESTIONS.format(only_candidates=only), bound)
    }
    # Accepted is decided per request: the regenerated/abandoned split (users' arrays) is not needed.
    classified = outcomes.settled_sql(outcomes.value_expression("template"), query.language_class)
    uses = {
        str(template): (int(requests), int(accepted))
        for template, requests, accepted in ch.query(
            USES.format(classified=classified, accepted=outcomes.ACCEPTED), bound
        )
    }
    all_requests = sum(requests for requests, _ in uses.values())
    all_accepted = sum(accepted for _, accepted in uses.values())
    prior_mean = all_accepted / all_requests if all_requests else NO_DATA_PRIOR

    ids = candidates or sorted((set(suggestions) | set(uses)) - {""})
    ranked = []
    for template_id in ids:
        shown, picked = suggestions.get(template_id, (0, 0))
        requests, accepted = uses.get(template_id, (0, 0))
        estimate, low, high = posterior(prior_mean, query.prior_strength, requests, accepted)
        ranked.append(TemplateRecommendation(template_id, shown, picked, requests, accepted, estimate, low, high))
    ranked.sort(key=lambda one: (-one.interval_low, -one.estimate, one.template_id))
    return TemplateRanking(ranked[: query.limit or None], prior_mean, query.prior_strength)
