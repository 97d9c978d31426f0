"""Funnel correlation: the property values over- or under-represented among the actors who converted.

For a step k of the funnel (by default its last), the converters are the actors who reached step k,
the drop-offs those who reached step k - 1 but not k. An actor's value of a property is the one the
funnel's breakdown by that property gives them (the earliest matching event's, funnel.py), so the
counts come from one funnel per property broken down by it: per value, converted = n_k and dropped
= n_(k-1) - n_k. That is exact, and the funnel's order mode and exclusions count as they do there.

Actors with no value are reported under the value "" rather than left out: for a back-end property
of a funnel whose step k - 1 is a front-end step, most drop-offs never reached a back-end event, and
"" carries exactly that (as it does "no template" for the template property). Values seen neither
among the converters nor among the drop-offs are left out.

Odds ratio as PostHog computes it, each count plus one so that zeros stay finite:
((c + 1) / (C - c + 1)) / ((d + 1) / (D - d + 1)) for c converters and d drop-offs with the value out
of C and D. The p-value is Fisher's exact test, two-sided, on the unsmoothed table
[[c, C - c], [d, D - d]]; significant below 0.05. Strongest first: by |log odds ratio|, then by
property and value so that the order is the same on every call.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from scipy.stats import fisher_exact

from inkloop.errors import FieldViolation, InvalidArgument
from inkloop_analytics import funnel
from inkloop_analytics.funnel import FunnelQuery
from inkloop_analytics.matchers import require_tenant
from inkloop_analytics.storage import ClickHouse

PROPERTIES = ("language_class", "length_bucket", "device", "variant", "template", "kind")
SIGNIFICANCE = 0.05
assert set(PROPERTIES) <= set(funnel.BREAKDOWNS)


@dataclass(frozen=True)
class CorrelationQuery:
    tenant_id: str
    funnel: FunnelQuery | None
    step: int = 0  # 0: the last
    properties: tuple[str, ...] = ()  # empty: all of PROPERTIES

    @property
    def base(self) -> FunnelQuery:
        """The funnel as asked, counted for this tenant and with no breakdown of its own."""
        assert self.funnel is not None
        return replace(self.funnel, tenant_id=self.tenant_id, breakdown="")

    @property
    def resolved_step(self) -> int:
        return self.step or len(self.base.steps)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(self.properties)) or PROPERTIES

    def check(self) -> None:
        require_tenant(self.tenant_id)
        if self.funnel is None:
            raise InvalidArgument("funnel", "required")
        try:
            self.base.check()
        except InvalidArgument as error:
            raise InvalidArgument.of(
                [FieldViolation(f"funnel.{v.field}", v.description) for v in error.violations]
            ) from None
        count = len(self.base.steps)
        if self.step and not 2 <= self.step <= count:
            raise InvalidArgument("step", f"2 to {count} (0: the last step), got {self.step}")
        for index, name in enumerate(self.properties):
            if name not in PROPERTIES:
                raise InvalidArgument(f"properties[{index}]", f"one of {list(PROPERTIES)}, got {name!r}")


@dataclass(frozen=True)
class PropertyCorrelation:
    property: str
    value: str
    converted: int
    dropped: int
    odds_ratio: float
    p_value: float
    significant: bool  # p_value < SIGNIFICANCE


@dataclass(frozen=True)
class Correlation:
    correlations: list[PropertyCorrelation]
    converted: int
    dropped: int
    step: int


def run(ch: ClickHouse, query: CorrelationQuery) -> Correlation:
    query.check()
    step = query.resolved_step
    converted = dropped = 0
    correlations = []
    for name in query.names:
        series = funnel.run(ch, replace(query.base, breakdown=name))
        cells = {
            one.breakdown_value: (one.steps[step - 1].count, one.steps[step - 2].count - one.steps[step - 1].count)
            for one in series
        }
        # The same actors under every property: each is in exactly one series.
        converted = sum(c for c, _ in cells.values())
        dropped = sum(d for _, d in cells.values())
        correlations += [correlate(name, value, c, d, converted, dropped) for value, (c, d) in cells.items() if c or d]
    correlations.sort(key=lambda one: (-abs(math.log(one.odds_ratio)), one.property, one.value))
    return Correlation(correlations, converted, dropped, step)


def correlate(name: str, value: str, c: int, d: int, converted: int, dropped: int) -> PropertyCorrelation:
    """The value's 2x2 table: c of the `converted` actors and d of the `dropped` ones have it."""
    odds_ratio = ((c + 1) / (converted - c + 1)) / ((d + 1) / (dropped - d + 1))
    _, exact = fisher_exact([[c, converted - c], [d, dropped - d]], alternative="two-sided")
    p_value = min(float(exact), 1.0)  # scipy's sum may pass 1 by a rounding
    return PropertyCorrelation(name, value, c, d, odds_ratio, p_value, p_value < SIGNIFICANCE)
