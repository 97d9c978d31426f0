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
A rule fires when at least `min_events` were seen and the value is above `threshold`, then stays
quiet for that tenant for `window_s` (one alert per window, not one per evaluation).

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

from inkloop_analytics.matchers import CLICK_ACTION, GENERATE_CATEGORY, TimeRange
from inkloop_analytics.storage import ClickHouse
from inkloop_analytics.tables import ALERT_COLUMNS, ALERTS_TABLE

log = logging.getLogger(__name__)

AlertKind = Literal["clicks_over_successes", "error_rate", "latency_p95"]
KINDS: tuple[AlertKind, ...] = ("clicks_over_successes", "error_rate", "latency_p95")

ALERT_VALUE = Gauge(
    "inkloop_analytics_alert_value", "Latest value measured by an alert rule, per tenant.", ["rule", "tenant"]
)
ALERT_FIRING = Gauge(
    "inkloop_analytics_alert_firing", "1 while an alert rule is above its threshold, per tenant.", ["rule", "tenant"]
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

LAST_FIRED = """
SELECT rule_name, tenant_id, max(fired_at)
FROM fired_alerts
WHERE fired_at > toDateTime(%(since)s, 'UTC')
GROUP BY rule_name, tenant_id
"""

LIST_ALERTS = """
SELECT fired_at, tenant_id, rule_name, kind, threshold, window_s, min_events, value, message
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

    def check(self, where: str) -> None:
        if not self.name:
            raise ValueError(f"{where}: name is required")
        if self.kind not in KINDS:
            raise ValueError(f"{where}: kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if not 60 <= self.window_s <= 7 * 86_400:
            raise ValueError(f"{where}: window_s must be 60 to 604800, got {self.window_s}")
        if self.min_events < 0:
            raise ValueError(f"{where}: min_events must be >= 0")


DEFAULT_RULES = (
    # Far more clicks than finished images: requests lost between page and back end, or failing.
    AlertRule("clicks_over_successes", "clicks_over_successes", threshold=1.5),
    AlertRule("error_rate", "error_rate", threshold=0.1),
    AlertRule("latency_p95", "latency_p95", threshold=60.0),
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


@dataclass(frozen=True)
class ListAlertsQuery:
    tenant_id: str
    range: TimeRange | None

    def check(self) -> None:
        if self.range is not None:
            self.range.check()


def measure(ch: ClickHouse, rule: AlertRule, now: datetime) -> dict[str, tuple[float, int]]:
    """tenant -> (value, events counted against min_events) for `rule` over the window ending `now`."""
    params = {"start": now - timedelta(seconds=rule.window_s), "end": now, "generate": GENERATE_CATEGORY}
    params["click"] = CLICK_ACTION
    if rule.kind == "clicks_over_successes":
        rows = ch.query(CLICKS_AND_SUCCESSES, params)
        return {tenant: (int(clicks) / max(int(successes), 1), int(clicks)) for tenant, clicks, successes in rows}
    if rule.kind == "error_rate":
        rows = ch.query(FAILED_AND_REQUESTED, params)
        return {
            tenant: (int(failed) / int(requested) if requested else 0.0, int(requested))
            for tenant, failed, requested in rows
        }
    rows = ch.query(SUCCESS_LATENCY_P95, params)
    return {tenant: (float(p95), int(successes)) for tenant, p95, successes in rows}


class AlertEvaluator:
    """Evaluates rules and records what fires; a rule fired within its window stays quiet."""

    def __init__(self, rules: Sequence[AlertRule]) -> None:
        self.rules = tuple(rules)

    def evaluate(self, ch: ClickHouse, now: datetime) -> list[Alert]:
        now = now.replace(microsecond=0)
        last_fired = self._last_fired(ch, now)
        fired = []
        for rule in self.rules:
            for tenant, (value, events) in sorted(measure(ch, rule, now).items()):
                ALERT_VALUE.labels(rule.name, tenant).set(value)
                above = events >= rule.min_events and value > rule.threshold
                ALERT_FIRING.labels(rule.name, tenant).set(1 if above else 0)
                last = last_fired.get((rule.name, tenant))
                if not above or (last is not None and now - last < timedelta(seconds=rule.window_s)):
                    continue
                message = (
                    f"{rule.name}: {rule.kind} = {value:.3g} above {rule.threshold:.3g} "
                    f"over the last {rule.window_s} s ({events} events)"
                )
                fired.append(Alert(rule, tenant, value, now, message))
        if fired:
            # Recorded before anything else: an alert that could not be stored fires again next time.
            ch.insert(ALERTS_TABLE, ALERT_COLUMNS, [_alert_row(alert) for alert in fired])
            for alert in fired:
                ALERTS_FIRED.labels(alert.rule.name, alert.tenant_id).inc()
                log.warning("alert fired", extra={"rule": alert.rule.name, "tenant": alert.tenant_id})
        return fired

    def _last_fired(self, ch: ClickHouse, now: datetime) -> dict[tuple[str, str], datetime]:
        """The latest stored firing per (rule name, tenant) recent enough to hold a rule back."""
        since = now - timedelta(seconds=max((rule.window_s for rule in self.rules), default=0))
        return {(name, tenant): fired_at for name, tenant, fired_at in ch.query(LAST_FIRED, {"since": since})}


def list_alerts(ch: ClickHouse, query: ListAlertsQuery, now: datetime) -> list[Alert]:
    """Alerts fired in the range (default: the 24 hours before `now`), newest first."""
    query.check()
    window = query.range or TimeRange(now - timedelta(days=1), now + timedelta(seconds=1))
    params: dict[str, Any] = {"tenant": query.tenant_id, "start": window.start, "end": window.end}
    alerts = []
    for fired_at, tenant, name, kind, threshold, window_s, min_events, value, message in ch.query(LIST_ALERTS, params):
        rule = AlertRule(name, kind, float(threshold), int(window_s), int(min_events))
        alerts.append(Alert(rule, tenant, float(value), fired_at, message))
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
    )
