"""Alert rules, evaluated per tenant on a schedule; fired alerts stored, listed and exported as metrics.

Rules come from the defaults below and, optionally, a YAML or JSON file (`--alert-rules-file`) whose
rules replace defaults of the same name and add others:

    rules:
      - {name: error_rate, kind: error_rate, threshold: 0.05, window_s: 600, min_events: 50}

What each kind measures over the last `window_s` seconds, per tenant (distinct event ids throughout):
- clicks_over_successes: generate clicks (front end) / successes (back end), successes floored at 1;
  `min_events` counts clicks.
- error_rate: failed / requested; `min_events` counts requests.
- latency_p95: exact 95th percentile of latency_s over successes; `min_events` counts successes.
- perceived_success: accepted / requests (`outcomes`) of each language class or each variant
  (`breakdown`), which is the alert's subject; fires when BELOW the threshold; `min_events` counts
  the subject's requests.
- retry_loop_rate: looping users / users (`outcomes.retry_loops`) of each language class (the
  subject); `min_events` counts its users.
The two outcome kinds look at requests of the window that ends one regeneration window before now:
a younger request may still be downloaded, repainted or regenerated, and would count as abandoned.
A rule fires when at least `min_events` were seen and the value is past `threshold`, then stays
quiet for that tenant and subject for `window_s` (one alert per window, not one per evaluation).

The cooldown is read back from `fired_alerts` at every evaluation: that table already records each
firing durably, so a restarted service (or another replica on the same database) does not fire
again within the window, with no second record to keep in step with the first.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from prometheus_client import Counter, Gauge

from inkloop_analytics import outcomes
from inkloop_analytics.matchers import CLICK_ACTION, GENERATE_CATEGORY, TimeRange
from inkloop_analytics.outcomes import OutcomeRules
from inkloop_analytics.storage import ClickHouse
from inkloop_analytics.tables import ALERT_COLUMNS, ALERTS_TABLE

log = logging.getLogger(__name__)

AlertKind = Literal["clicks_over_successes", "error_rate", "latency_p95", "perceived_success", "retry_loop_rate"]
KINDS: tuple[AlertKind, ...] = (
    "clicks_over_successes",
    "error_rate",
    "latency_p95",
    "perceived_success",
    "retry_loop_rate",
)
#: Kinds measured per subject of a breakdown, and the breakdowns each allows.
BREAKDOWNS: dict[str, tuple[str, ...]] = {"perceived_success": ("language_class", "variant")}
#: Kinds that fire when the value falls below the threshold (the others: above it).
FIRES_BELOW = frozenset({"perceived_success"})

ALERT_VALUE = Gauge(
    "inkloop_analytics_alert_value",
    "Latest value measured by an alert rule, per tenant and subject (language class or variant of outcome rules).",
    ["rule", "tenant", "subject"],
)
ALERT_FIRING = Gauge(
    "inkloop_analytics_alert_firing",
    "1 while an alert rule is past its threshold, per tenant and subject.",
    ["rule", "tenant", "subject"],
)
ALERTS_FIRED = Counter("inkloop_analytics_alerts_fired_total", "Alerts fired, per rule and tenant.", ["rule", "tenant"])

# Each returns (tenant_id, value numerator or value, events counted against min_events, denominator).
CLICKS_AND_SUCCESSES = """
SELECT tenant_id, sum(clicks), sum(successes)
FROM (
    SELECT tenant_id, uniqExact(event_id) AS clicks, toUInt64(0) AS successes
    FROM frontend_events
    WHERE time >= toDateTime(%(start)s, 'UTC') AND time < toDateTime(%(end)s, 'UTC')
        AND category = %(generate)s AND action = %(click)s
    GROUP BY tenant_id
    UNION ALL
    SELECT tenant_id, toUInt64(0) AS clicks, uniqExact(event_id) AS successes
    FROM backend_events
    WHERE time >= toDateTime(%(start)s, 'UTC') AND time < toDateTime(%(end)s, 'UTC') AND type = 'succeeded'
    GROUP BY tenant_id
)
GROUP BY tenant_id
"""

FAILED_AND_REQUESTED = """
SELECT tenant_id, uniqExactIf(event_id, type = 'failed'), uniqExactIf(event_id, type = 'requested')
FROM backend_events
WHERE time >= toDateTime(%(start)s, 'UTC') AND time < toDateTime(%(end)s, 'UTC') AND type IN ('failed', 'requested')
GROUP BY tenant_id
"""

SUCCESS_LATENCY_P95 = """
SELECT event_tenant, quantileExact(0.95)(event_latency_s), count()
FROM (
    SELECT event_id, any(tenant_id) AS event_tenant, any(latency_s) AS event_latency_s
    FROM backend_events
    WHERE time >= toDateTime(%(start)s, 'UTC') AND time < toDateTime(%(end)s, 'UTC') AND type = 'succeeded'
    GROUP BY event_id
)
GROUP BY event_tenant
"""

TENANTS_WITH_REQUESTS = """
SELECT DISTINCT tenant_id FROM backend_events
WHERE time >= toDateTime(%(start)s, 'UTC') AND time < toDateTime(%(end)s, 'UTC') AND type = 'requested'
"""

LAST_FIRED = """
SELECT rule_name, tenant_id, subject, max(fired_at)
FROM fired_alerts
WHERE fired_at > toDateTime(%(since)s, 'UTC')
GROUP BY rule_name, tenant_id, subject
"""

LIST_ALERTS = """
SELECT fired_at, tenant_id, rule_name, kind, threshold, window_s, min_events, value, message, subject, breakdown
FROM fired_alerts
WHERE (%(tenant)s = '' OR tenant_id = %(tenant)s)
    AND fired_at >= toDateTime(%(start)s, 'UTC') AND fired_at < toDateTime(%(end)s, 'UTC')
ORDER BY fired_at DESC, rule_name, tenant_id
LIMIT 1000
"""


@dataclass(frozen=True)
class AlertRule:
    name: str
    kind: AlertKind
    threshold: float
    window_s: int = 900
    min_events: int = 20
    breakdown: str = ""

    def check(self, where: str) -> None:
        if not self.name:
            raise ValueError(f"{where}: name is required")
        if self.kind not in KINDS:
            raise ValueError(f"{where}: kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        allowed = BREAKDOWNS.get(self.kind, ("",))
        if self.breakdown not in allowed:
            raise ValueError(f"{where}: breakdown of {self.kind} must be one of {allowed}, got {self.breakdown!r}")
        if not 60 <= self.window_s <= 7 * 86_400:
            raise ValueError(f"{where}: window_s must be 60 to 604800, got {self.window_s}")
        if self.min_events < 0:
            raise ValueError(f"{where}: min_events must be >= 0")


DEFAULT_RULES = (
    # Far more clicks than finished images: requests lost between page and back end, or failing.
    AlertRule("clicks_over_successes", "clicks_over_successes", threshold=1.5),
    AlertRule("error_rate", "error_rate", threshold=0.1),
    AlertRule("latency_p95", "latency_p95", threshold=60.0),
    # Users keep under half of what a language class gets them (the mixed-prompt case of the brief).
    AlertRule("perceived_success_by_language", "perceived_success", 0.5, 3600, 50, "language_class"),
    AlertRule("perceived_success_by_variant", "perceived_success", 0.5, 3600, 50, "variant"),
    # More than one user in five stuck regenerating one intent.
    AlertRule("retry_loop_rate", "retry_loop_rate", threshold=0.2, window_s=3600),
)


def load_rules(path: Path | None) -> tuple[AlertRule, ...]:
    """The default rules, with those of `path` (YAML or JSON) replacing or adding by name."""
    rules = {rule.name: rule for rule in DEFAULT_RULES}
    if path is None:
        return tuple(rules.values())
    text = path.read_text()
    if path.suffix in (".yaml", ".yml"):
        import yaml

        document = yaml.safe_load(text)
    else:
        document = json.loads(text)
    entries = document.get("rules", []) if isinstance(document, dict) else document
    if not isinstance(entries, list):
        raise ValueError(f"{path}: expected a list of rules or {{rules: [...]}}")
    for position, entry in enumerate(entries):
        try:
            rule = AlertRule(**entry)
        except TypeError as error:
            raise ValueError(f"{path}: rule {position}: {error}") from error
        rule.check(f"{path}: rule {position}")
        rules[rule.name] = rule
    return tuple(rules.values())


@dataclass(frozen=True)
class Alert:
    rule: AlertRule
    tenant_id: str
    value: float
    fired_at: datetime
    message: str
    subject: str = ""


@dataclass(frozen=True)
class ListAlertsQuery:
    tenant_id: str
    range: TimeRange | None

    def check(self) -> None:
        if self.range is not None:
            self.range.check()


Measured = dict[tuple[str, str], tuple[float, int]]


def measure(ch: ClickHouse, rule: AlertRule, now: datetime, rules: OutcomeRules = outcomes.DEFAULT_RULES) -> Measured:
    """(tenant, subject) -> (value, events counted against min_events) for `rule` over its window."""
    if rule.kind in ("perceived_success", "retry_loop_rate"):
        return _measure_outcomes(ch, rule, now, rules)
    params = {"start": now - timedelta(seconds=rule.window_s), "end": now, "generate": GENERATE_CATEGORY}
    params["click"] = CLICK_ACTION
    if rule.kind == "clicks_over_successes":
        rows = ch.query(CLICKS_AND_SUCCESSES, params)
        return {(tenant, ""): (int(clicks) / max(int(successes), 1), int(clicks)) for tenant, clicks, successes in rows}
    if rule.kind == "error_rate":
        rows = ch.query(FAILED_AND_REQUESTED, params)
        return {
            (tenant, ""): (int(failed) / int(requested) if requested else 0.0, int(requested))
            for tenant, failed, requested in rows
        }
    rows = ch.query(SUCCESS_LATENCY_P95, params)
    return {(tenant, ""): (float(p95), int(successes)) for tenant, p95, successes in rows}


def _measure_outcomes(ch: ClickHouse, rule: AlertRule, now: datetime, rules: OutcomeRules) -> Measured:
    settled = now - timedelta(seconds=rules.regenerate_window_s)
    window = TimeRange(settled - timedelta(seconds=rule.window_s), settled)
    tenants = [tenant for (tenant,) in ch.query(TENANTS_WITH_REQUESTS, {"start": window.start, "end": window.end})]
    measured: Measured = {}
    for tenant in sorted(tenants):
        if rule.kind == "perceived_success":
            answer = outcomes.run(ch, outcomes.OutcomesQuery(tenant, window, rules, rule.breakdown))
            measured.update({(tenant, g.value): (g.perceived_success, g.requests) for g in answer.groups})
        else:
            loops = outcomes.retry_loops(ch, outcomes.RetryLoopsQuery(tenant, window, rules))
            measured.update({(tenant, g.language_class): (g.loop_rate, g.users) for g in loops.groups})
    return measured


class AlertEvaluator:
    """Evaluates rules and records what fires; a rule fired within its window stays quiet."""

    def __init__(self, rules: Sequence[AlertRule], outcome_rules: OutcomeRules = outcomes.DEFAULT_RULES) -> None:
        self.rules = tuple(rules)
        self.outcome_rules = outcome_rules

    def evaluate(self, ch: ClickHouse, now: datetime) -> list[Alert]:
        now = now.replace(microsecond=0)
        last_fired = self._last_fired(ch, now)
        fired = []
        for rule in self.rules:
            below = rule.kind in FIRES_BELOW
            for (tenant, subject), (value, events) in sorted(measure(ch, rule, now, self.outcome_rules).items()):
                ALERT_VALUE.labels(rule.name, tenant, subject).set(value)
                past = value < rule.threshold if below else value > rule.threshold
                firing = events >= rule.min_events and past
                ALERT_FIRING.labels(rule.name, tenant, subject).set(1 if firing else 0)
                last = last_fired.get((rule.name, tenant, subject))
                if not firing or (last is not None and now - last < timedelta(seconds=rule.window_s)):
                    continue
                of = f" of {rule.breakdown or 'language_class'} {subject!r}" if subject else ""
                message = (
                    f"{rule.name}: {rule.kind}{of} = {value:.3g} {'below' if below else 'above'} "
                    f"{rule.threshold:.3g} over the last {rule.window_s} s ({events} events)"
                )
                fired.append(Alert(rule, tenant, value, now, message, subject))
        if fired:
            # Recorded before anything else: an alert that could not be stored fires again next time.
            ch.insert(ALERTS_TABLE, ALERT_COLUMNS, [_alert_row(alert) for alert in fired])
            for alert in fired:
                ALERTS_FIRED.labels(alert.rule.name, alert.tenant_id).inc()
                log.warning("alert fired", extra={"rule": alert.rule.name, "tenant": alert.tenant_id})
        return fired

    def _last_fired(self, ch: ClickHouse, now: datetime) -> dict[tuple[str, str, str], datetime]:
        """The latest stored firing per (rule name, tenant, subject) recent enough to hold a rule back."""
        since = now - timedelta(seconds=max((rule.window_s for rule in self.rules), default=0))
        rows = ch.query(LAST_FIRED, {"since": since})
        return {(name, tenant, subject): fired_at for name, tenant, subject, fired_at in rows}


def list_alerts(ch: ClickHouse, query: ListAlertsQuery, now: datetime) -> list[Alert]:
    """Alerts fired in the range (default: the 24 hours before `now`), newest first."""
    query.check()
    window = query.range or TimeRange(now - timedelta(days=1), now + timedelta(seconds=1))
    params: dict[str, Any] = {"tenant": query.tenant_id, "start": window.start, "end": window.end}
    alerts = []
    for row in ch.query(LIST_ALERTS, params):
        fired_at, tenant, name, kind, threshold, window_s, min_events, value, message, subject, breakdown = row
        rule = AlertRule(name, kind, float(threshold), int(window_s), int(min_events), breakdown)
        alerts.append(Alert(rule, tenant, float(value), fired_at, message, subject))
    return alerts


def _alert_row(alert: Alert) -> tuple[Any, ...]:
    rule = alert.rule
    return (
        alert.fired_at,
        alert.tenant_id,
        rule.name,
        rule.kind,
        rule.threshold,
        rule.window_s,
        rule.min_events,
        alert.value,
        alert.message,
        alert.subject,
        rule.breakdown,
    )
