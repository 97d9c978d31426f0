"""Alert rules: defaults and file, evaluation per tenant, storage, listing and metrics."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from inkloop.v1 import analytics_pb2 as pb
from inkloop_analytics.alerts import DEFAULT_RULES, AlertEvaluator, AlertRule, ListAlertsQuery, load_rules
from inkloop_analytics.matchers import TimeRange
from inkloop_analytics.service import Analytics
from inkloop_analytics.storage import ClickHouse, connect

from .builders import backend, track
from .generator import NOW


def test_rules_file_replaces_and_adds(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(
        "rules:\n"
        "  - {name: error_rate, kind: error_rate, threshold: 0.02, window_s: 600, min_events: 5}\n"
        "  - {name: slow, kind: latency_p95, threshold: 10}\n"
    )
    rules = {rule.name: rule for rule in load_rules(path)}
    assert set(rules) == {rule.name for rule in DEFAULT_RULES} | {"slow"}
    assert (rules["error_rate"].threshold, rules["error_rate"].window_s) == (0.02, 600)
    assert rules["slow"].window_s == 900
    bad = tmp_path / "bad.json"
    bad.write_text('[{"name": "x", "kind": "cpu", "threshold": 1}]')
    with pytest.raises(ValueError, match="kind"):
        load_rules(bad)


# The service evaluates its rules as soon as it connects, at its clock (NOW), concurrently with the
# test: events here come after NOW, so that evaluation sees none of them and cannot fire first.
LATER = NOW + timedelta(hours=1)
OUTCOME_KINDS = ("perceived_success", "retry_loop_rate")


async def test_rules_fire_once_per_window_and_are_listed(analytics: Analytics, clickhouse: ClickHouse) -> None:
    at = LATER - timedelta(seconds=600)
    front = [track(at, f"v{n}", "generate", "click", request_id=f"r{n}") for n in range(30)]
    back = [backend(at, pb.BACKEND_EVENT_TYPE_REQUESTED, f"r{n}") for n in range(20)]
    back += [backend(at, pb.BACKEND_EVENT_TYPE_FAILED, f"r{n}") for n in range(5)]
    back += [backend(at, pb.BACKEND_EVENT_TYPE_SUCCEEDED, f"r{n}", latency_s=100.0) for n in range(10, 20)]
    back += [backend(at, pb.BACKEND_EVENT_TYPE_FAILED, "x", tenant_id="t2") for _ in range(3)]
    await analytics.ingest(front, back, "")
    await analytics.ingest(front[:5], [], "")  # retries change nothing
    evaluator = AlertEvaluator(analytics.alert_rules)

    fired = [alert for alert in evaluator.evaluate(clickhouse, LATER) if alert.rule.kind not in OUTCOME_KINDS]
    # clicks/successes = 30/10 = 3 > 1.5; failed/requested = 5/20 > 0.1; latency: only 10 successes < 20.
    assert sorted((alert.rule.name, alert.tenant_id, alert.value) for alert in fired) == [
        ("clicks_over_successes", "t1", 3.0),
        ("error_rate", "t1", 0.25),
    ]
    assert (
        REGISTRY.get_sample_value(
            "inkloop_analytics_alert_value", {"rule": "latency_p95", "tenant": "t1", "subject": ""}
        )
        == 100
    )
    assert (
        REGISTRY.get_sample_value(
            "inkloop_analytics_alert_firing", {"rule": "error_rate", "tenant": "t1", "subject": ""}
        )
        == 1
    )
    assert (
        REGISTRY.get_sample_value(
            "inkloop_analytics_alert_firing", {"rule": "latency_p95", "tenant": "t1", "subject": ""}
        )
        == 0
    )
    # Still above, but already fired in this window.
    assert evaluator.evaluate(clickhouse, LATER + timedelta(seconds=60)) == []

    until_later = TimeRange(NOW, LATER + timedelta(seconds=61))
    listed = await analytics.list_alerts(ListAlertsQuery("t1", until_later))
    assert sorted(alert.rule.name for alert in listed if alert.rule.kind not in OUTCOME_KINDS) == [
        "clicks_over_successes",
        "error_rate",
    ]
    assert "0.25" in next(alert.message for alert in listed if alert.rule.name == "error_rate")
    assert await analytics.list_alerts(ListAlertsQuery("t2", until_later)) == []
    assert clickhouse.query(
        "SELECT count() FROM fired_alerts WHERE kind NOT IN ('perceived_success', 'retry_loop_rate')"
    ) == [(2,)]


def test_evaluator_with_no_events_fires_nothing(clickhouse: ClickHouse) -> None:
    from inkloop_analytics.migrations import migrate

    migrate(clickhouse)
    assert AlertEvaluator(DEFAULT_RULES).evaluate(clickhouse, NOW) == []


async def test_a_new_evaluator_honours_the_cooldown_recorded_by_the_previous_one(
    analytics: Analytics, clickhouse: ClickHouse, clickhouse_url: str
) -> None:
    """As after a restart: each evaluation by a new evaluator on a new connection, sharing only the database."""
    rules = [AlertRule("error_rate", "error_rate", threshold=0.1, window_s=3600, min_events=5)]

    def failing_requests(at: datetime, tenant: str, failed: int) -> list[pb.BackendEvent]:
        events = [backend(at, pb.BACKEND_EVENT_TYPE_REQUESTED, f"r{n}", tenant_id=tenant) for n in range(5)]
        return events + [backend(at, pb.BACKEND_EVENT_TYPE_FAILED, f"r{n}", tenant_id=tenant) for n in range(failed)]

    def evaluate_in_a_new_evaluator(at: datetime) -> list[tuple[str, float]]:
        with connect(clickhouse_url, clickhouse.cluster) as ch:
            return sorted((alert.tenant_id, alert.value) for alert in AlertEvaluator(rules).evaluate(ch, at))

    await analytics.ingest([], failing_requests(LATER - timedelta(seconds=60), "t1", failed=2), "")
    await analytics.ingest([], failing_requests(LATER + timedelta(seconds=100), "t1", failed=3), "")
    await analytics.ingest([], failing_requests(LATER + timedelta(seconds=100), "t2", failed=1), "")

    assert evaluate_in_a_new_evaluator(LATER) == [("t1", 2 / 5)]
    # Within the hour after it fired t1 stays quiet, though its rate since (3/5) is above the threshold;
    # t2 (1/5), never fired, is not held back by t1's firing.
    assert evaluate_in_a_new_evaluator(LATER + timedelta(seconds=3599)) == [("t2", 1 / 5)]
    assert evaluate_in_a_new_evaluator(LATER + timedelta(seconds=3600)) == [("t1", 3 / 5)]
    assert evaluate_in_a_new_evaluator(LATER + timedelta(seconds=3601)) == []


async def test_outcome_rules_fire_per_language_class_on_settled_requests(
    analytics: Analytics, clickhouse: ClickHouse
) -> None:
    """Settled: the rules look at requests of the hour that ended one regeneration window (30 min) ago."""
    settled = LATER - timedelta(seconds=1800) - timedelta(seconds=900)
    zh, en, mixed = pb.LANGUAGE_CLASS_ZH, pb.LANGUAGE_CLASS_EN, pb.LANGUAGE_CLASS_MIXED
    back: list[pb.BackendEvent] = []

    def request(n: str, user: str, language: int, at: datetime, signature: int) -> None:
        back.append(
            backend(
                at,
                pb.BACKEND_EVENT_TYPE_REQUESTED,
                n,
                user_id=user,
                prompt={"language": language, "signature": signature},
            )
        )

    for n in range(60):  # zh: nobody keeps anything; en: everyone downloads
        request(f"zh{n}", f"zh-user{n}", zh, settled, signature=n << 40)
        request(f"en{n}", f"en-user{n}", en, settled, signature=n << 20)
        back.append(backend(settled + timedelta(seconds=30), pb.BACKEND_EVENT_TYPE_DOWNLOADED, f"en{n}"))
    for u in range(20):  # mixed: 20 users asking for one intent four times, a minute apart
        for attempt in range(4):
            request(f"mx{u}-{attempt}", f"mx-user{u}", mixed, settled + timedelta(seconds=60 * attempt), signature=7)
    # Too young to judge: a request of the last 30 minutes counts nowhere yet.
    request("young", "zh-user0", zh, LATER - timedelta(seconds=60), signature=0)
    await analytics.ingest([], back, "")
    rules = [rule for rule in DEFAULT_RULES if rule.kind in OUTCOME_KINDS]
    fired = AlertEvaluator(rules).evaluate(clickhouse, LATER)
    got = sorted((alert.rule.name, alert.subject, round(alert.value, 3)) for alert in fired)
    # by variant (all "A"): 60 kept of 200 = 0.3, below 0.5; en (1.0) never fires; zh 0/60, mixed 0/80.
    assert got == [
        ("perceived_success_by_language", "mixed", 0.0),
        ("perceived_success_by_language", "zh", 0.0),
        ("perceived_success_by_variant", "A", 0.3),
        ("retry_loop_rate", "mixed", 1.0),
    ]
    zh_alert = next(alert for alert in fired if alert.subject == "zh")
    assert "of language_class 'zh'" in zh_alert.message and "below" in zh_alert.message
    labels = {"rule": "perceived_success_by_language", "tenant": "t1", "subject": "en"}
    assert REGISTRY.get_sample_value("inkloop_analytics_alert_value", labels) == 1.0
    # The cooldown holds per subject; listing gives the subject back.
    assert AlertEvaluator(rules).evaluate(clickhouse, LATER + timedelta(seconds=60)) == []
    listed = await analytics.list_alerts(ListAlertsQuery("t1", TimeRange(NOW, LATER + timedelta(seconds=61))))
    assert sorted(alert.subject for alert in listed if alert.rule.kind in OUTCOME_KINDS) == [
        "A",
        "mixed",
        "mixed",
        "zh",
    ]


def test_an_outcome_rule_names_a_breakdown_its_kind_allows() -> None:
    AlertRule("ok", "perceived_success", 0.5, breakdown="variant").check("rule")
    for bad in (AlertRule("x", "perceived_success", 0.5), AlertRule("y", "error_rate", 0.1, breakdown="variant")):
        with pytest.raises(ValueError, match="breakdown"):
            bad.check("rule")
