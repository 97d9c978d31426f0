"""Protobuf ↔ domain objects, at the edge. Ingest events stay protobuf (see validation.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from google.protobuf import timestamp_pb2

from inkloop.errors import InvalidArgument
from inkloop.v1 import analytics_pb2 as pb
from inkloop_analytics import (
    adoption,
    alerts,
    correlation,
    discrepancy,
    experiments,
    funnel,
    insights,
    outcomes,
    template_ranking,
    variants,
)
from inkloop_analytics.ingest import Acks, IngestResult
from inkloop_analytics.matchers import EventMatcher, Source, TimeRange

_SOURCES: dict[int, Source] = {pb.EVENT_SOURCE_FRONTEND: "frontend", pb.EVENT_SOURCE_BACKEND: "backend"}
_FRONTEND_TYPES = {pb.FRONTEND_EVENT_TYPE_PAGE_VIEW: "page_view", pb.FRONTEND_EVENT_TYPE_TRACK_EVENT: "track_event"}
_BACKEND_TYPES = {
    value: name.removeprefix("BACKEND_EVENT_TYPE_").lower()
    for name, value in pb.BackendEventType.items()
    if value != pb.BACKEND_EVENT_TYPE_UNSPECIFIED
}
_ACK_STATUS = {
    "accepted": pb.ACK_STATUS_ACCEPTED,
    "duplicate": pb.ACK_STATUS_DUPLICATE,
    "rejected": pb.ACK_STATUS_REJECTED,
}
_ALERT_KINDS: dict[str, int] = {
    "clicks_over_successes": pb.ALERT_KIND_CLICKS_OVER_SUCCESSES,
    "error_rate": pb.ALERT_KIND_ERROR_RATE,
    "latency_p95": pb.ALERT_KIND_LATENCY_P95,
    "perceived_success": pb.ALERT_KIND_PERCEIVED_SUCCESS,
    "retry_loop_rate": pb.ALERT_KIND_RETRY_LOOP_RATE,
}


def _time(message: timestamp_pb2.Timestamp, field: str) -> datetime:
    try:
        return message.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError):  # seconds outside years 1-9999, or nanos outside [0, 1e9)
        raise InvalidArgument(field, "is not a valid timestamp") from None


def _timestamp(moment: datetime) -> timestamp_pb2.Timestamp:
    message = timestamp_pb2.Timestamp()
    message.FromDatetime(moment)
    return message


def time_range_from_pb(message: pb.TimeRange, present: bool, field: str = "range") -> TimeRange | None:
    if not present:
        return None
    if not (message.HasField("start") and message.HasField("end")):
        raise InvalidArgument(field, "both start and end are required")
    return TimeRange(_time(message.start, f"{field}.start"), _time(message.end, f"{field}.end"))


def matcher_from_pb(message: pb.EventMatcher, field: str) -> EventMatcher:
    frontend_type = _FRONTEND_TYPES.get(message.frontend_type, "")
    backend_type = _BACKEND_TYPES.get(message.backend_type, "")
    if message.frontend_type and not frontend_type:
        raise InvalidArgument(f"{field}.frontend_type", "unknown value")
    if message.backend_type and not backend_type:
        raise InvalidArgument(f"{field}.backend_type", "unknown value")
    return EventMatcher(
        source=_SOURCES.get(message.source),
        name=message.name,
        frontend_type=frontend_type,
        category=message.category,
        action=message.action,
        label=message.label,
        backend_type=backend_type,
        variant=message.variant,
    )


# Ingest.


def ingest_result_to_pb(result: IngestResult) -> pb.IngestResponse:
    response = pb.IngestResponse(
        batch_id=result.batch_id,
        accepted=result.count("accepted"),
        duplicates=result.count("duplicate"),
        rejected=result.count("rejected"),
        spooled=result.spooled,
    )
    _add_acks(response.frontend_acks, result.frontend)
    _add_acks(response.backend_acks, result.backend)
    return response


def _add_acks(field: Any, acks: Acks) -> None:
    """One EventAck per event, in request order. `add` fills the repeated field in place: a fraction of
    the cost of building each EventAck and extending with it."""
    add, rejections = field.add, acks.rejections
    for index, (event_id, status) in enumerate(zip(acks.event_ids, acks.statuses, strict=True)):
        rejection = rejections.get(index) if rejections else None
        if rejection is None:
            add(event_id=event_id, status=_ACK_STATUS[status])
        else:
            add(event_id=event_id, status=_ACK_STATUS[status], reason=rejection.reason, field=rejection.field)


# Funnel.


_FUNNEL_ORDERS = {
    pb.FUNNEL_ORDER_UNSPECIFIED: "ordered",
    pb.FUNNEL_ORDER_ORDERED: "ordered",
    pb.FUNNEL_ORDER_STRICT: "strict",
    pb.FUNNEL_ORDER_ANY: "any",
}


def funnel_from_pb(request: pb.FunnelRequest, field: str = "") -> funnel.FunnelQuery:
    """`field`: where the request sits in a larger one ("funnel."), for the fields errors name."""
    order = _FUNNEL_ORDERS.get(request.order)
    if order is None:
        raise InvalidArgument(f"{field}order", "unknown value")
    return funnel.FunnelQuery(
        tenant_id=request.tenant_id,
        steps=tuple(matcher_from_pb(step, f"{field}steps[{index}]") for index, step in enumerate(request.steps)),
        window_s=request.window_s,
        range=time_range_from_pb(request.range, request.HasField("range"), f"{field}range"),
        breakdown=request.breakdown,
        actor=request.actor or "visitor",
        order=order,
        exclusions=tuple(
            funnel.FunnelExclusion(
                matcher_from_pb(exclusion.event, f"{field}exclusions[{index}].event"),
                exclusion.from_step,
                exclusion.to_step,
            )
            for index, exclusion in enumerate(request.exclusions)
        ),
        time_to_convert_bins=request.time_to_convert_bins,
    )


def funnel_to_pb(report: funnel.FunnelReport) -> pb.FunnelResponse:
    time_to_convert = report.time_to_convert
    return pb.FunnelResponse(
        series=[
            pb.FunnelSeries(
                breakdown_value=one.breakdown_value,
                steps=[
                    pb.FunnelStep(
                        name=step.name,
                        count=step.count,
                        conversion_from_previous=step.conversion_from_previous,
                        conversion_from_first=step.conversion_from_first,
                        median_seconds_from_first=step.median_seconds_from_first,
                    )
                    for step in one.steps
                ],
            )
            for one in report.series
        ],
        time_to_convert=pb.TimeToConvert(
            bins=[pb.TimeToConvertBin(start_s=b.start_s, end_s=b.end_s, actors=b.actors) for b in time_to_convert.bins],
            actors=time_to_convert.actors,
            median_s=time_to_convert.median_s,
        ),
    )


# Funnel correlation.


def correlation_from_pb(request: pb.FunnelCorrelationRequest) -> correlation.CorrelationQuery:
    return correlation.CorrelationQuery(
        tenant_id=request.tenant_id,
        funnel=funnel_from_pb(request.funnel, "funnel.") if request.HasField("funnel") else None,
        step=request.step,
        properties=tuple(request.properties),
    )


def correlation_to_pb(result: correlation.Correlation) -> pb.FunnelCorrelationResponse:
    return pb.FunnelCorrelationResponse(
        correlations=[
            pb.PropertyCorrelation(
                property=one.property,
                value=one.value,
                converted=one.converted,
                dropped=one.dropped,
                odds_ratio=one.odds_ratio,
                p_value=one.p_value,
                significant=one.significant,
            )
            for one in result.correlations
        ],
        converted=result.converted,
        dropped=result.dropped,
        step=result.step,
    )


# Discrepancy.


def discrepancy_from_pb(request: pb.DiscrepancyRequest) -> discrepancy.DiscrepancyQuery:
    return discrepancy.DiscrepancyQuery(
        tenant_id=request.tenant_id,
        frontend=matcher_from_pb(request.frontend, "frontend"),
        backend=matcher_from_pb(request.backend, "backend"),
        range=time_range_from_pb(request.range, request.HasField("range")),
        bucket_s=request.bucket_s,
        sample_size=request.sample_size,
    )


def _bucket_to_pb(bucket: discrepancy.Bucket) -> pb.DiscrepancyBucket:
    return pb.DiscrepancyBucket(
        start=_timestamp(bucket.start),
        frontend=bucket.frontend,
        backend=bucket.backend,
        matched=bucket.matched,
        frontend_only=bucket.frontend_only,
        backend_only=bucket.backend_only,
        frontend_duplicates=bucket.frontend_duplicates,
        backend_duplicates=bucket.backend_duplicates,
        loss_rate=bucket.loss_rate,
    )


def discrepancy_to_pb(result: discrepancy.Discrepancy) -> pb.DiscrepancyResponse:
    return pb.DiscrepancyResponse(
        buckets=[_bucket_to_pb(bucket) for bucket in result.buckets],
        total=_bucket_to_pb(result.total),
        frontend_only_sample=result.frontend_only_sample,
        backend_only_sample=result.backend_only_sample,
    )


# Prompt insights.


def insights_from_pb(request: pb.PromptInsightsRequest) -> insights.PromptInsightsQuery:
    return insights.PromptInsightsQuery(
        tenant_id=request.tenant_id,
        range=time_range_from_pb(request.range, request.HasField("range")),
        length_bucket_edges=tuple(request.length_bucket_edges),
    )


def _group_to_pb(group: insights.PromptGroup) -> pb.PromptGroup:
    return pb.PromptGroup(
        label=group.label,
        requests=group.requests,
        successes=group.successes,
        success_rate=group.success_rate,
        median_dwell_s=group.median_dwell_s,
    )


def insights_to_pb(result: insights.PromptInsights) -> pb.PromptInsightsResponse:
    return pb.PromptInsightsResponse(
        by_length=[_group_to_pb(group) for group in result.by_length],
        by_language=[_group_to_pb(group) for group in result.by_language],
    )


# Feature adoption.


def adoption_from_pb(request: pb.FeatureAdoptionRequest) -> adoption.FeatureAdoptionQuery:
    return adoption.FeatureAdoptionQuery(
        tenant_id=request.tenant_id,
        range=time_range_from_pb(request.range, request.HasField("range")),
        features=tuple(request.features),
    )


def adoption_to_pb(result: adoption.Adoption) -> pb.FeatureAdoptionResponse:
    return pb.FeatureAdoptionResponse(
        features=[
            pb.FeatureAdoption(
                feature=one.feature,
                exposures=one.exposures,
                clicks=one.clicks,
                click_rate=one.click_rate,
                exposed_visitors=one.exposed_visitors,
                clicked_visitors=one.clicked_visitors,
            )
            for one in result.features
        ],
        page_views=result.page_views,
        unique_visitors=result.unique_visitors,
    )


# A/B.


def variants_from_pb(request: pb.CompareVariantsRequest) -> variants.CompareVariantsQuery:
    return variants.CompareVariantsQuery(
        tenant_id=request.tenant_id, range=time_range_from_pb(request.range, request.HasField("range"))
    )


def variants_to_pb(result: list[variants.VariantStats]) -> pb.CompareVariantsResponse:
    return pb.CompareVariantsResponse(
        variants=[
            pb.VariantStats(
                variant=one.variant,
                requests=one.requests,
                successes=one.successes,
                success_rate=one.success_rate,
                latency_p50_s=one.latency_p50_s,
                latency_p95_s=one.latency_p95_s,
                downloads=one.downloads,
                downloads_per_success=one.downloads_per_success,
            )
            for one in result
        ]
    )


# Outcomes.


def _rules_from_pb(message: pb.OutcomeRules, defaults: outcomes.OutcomeRules) -> outcomes.OutcomeRules:
    return defaults.overridden(message.regenerate_window_s, message.max_intent_distance_bits)


def _rules_to_pb(rules: outcomes.OutcomeRules) -> pb.OutcomeRules:
    return pb.OutcomeRules(
        regenerate_window_s=rules.regenerate_window_s, max_intent_distance_bits=rules.max_intent_distance_bits
    )


def outcomes_from_pb(request: pb.OutcomesRequest, defaults: outcomes.OutcomeRules) -> outcomes.OutcomesQuery:
    return outcomes.OutcomesQuery(
        tenant_id=request.tenant_id,
        range=time_range_from_pb(request.range, request.HasField("range")),
        rules=_rules_from_pb(request.rules, defaults),
        breakdown=request.breakdown,
    )


def outcomes_to_pb(result: outcomes.Outcomes) -> pb.OutcomesResponse:
    return pb.OutcomesResponse(
        groups=[
            pb.OutcomeGroup(
                value=group.value,
                requests=group.requests,
                accepted=group.accepted,
                regenerated=group.regenerated,
                abandoned=group.abandoned,
                failed=group.failed,
                perceived_success=group.perceived_success,
                regenerations_per_accepted=group.regenerations_per_accepted,
                mean_dwell_s=group.mean_dwell_s,
            )
            for group in result.groups
        ],
        rules=_rules_to_pb(result.rules),
    )


def retry_loops_from_pb(request: pb.RetryLoopsRequest, defaults: outcomes.OutcomeRules) -> outcomes.RetryLoopsQuery:
    return outcomes.RetryLoopsQuery(
        tenant_id=request.tenant_id,
        range=time_range_from_pb(request.range, request.HasField("range")),
        rules=_rules_from_pb(request.rules, defaults),
        min_regenerations=request.min_regenerations or outcomes.DEFAULT_MIN_REGENERATIONS,
    )


def retry_loops_to_pb(result: outcomes.RetryLoops) -> pb.RetryLoopsResponse:
    return pb.RetryLoopsResponse(
        groups=[
            pb.RetryLoopGroup(
                language_class=group.language_class,
                users=group.users,
                looping_users=group.looping_users,
                loop_rate=group.loop_rate,
            )
            for group in result.groups
        ],
        rules=_rules_to_pb(result.rules),
        min_regenerations=result.min_regenerations,
    )


# Templates.


def recommend_templates_from_pb(
    request: pb.RecommendTemplatesRequest, defaults: outcomes.OutcomeRules, prior_strength: float
) -> template_ranking.RecommendTemplatesQuery:
    return template_ranking.RecommendTemplatesQuery(
        tenant_id=request.tenant_id,
        range=time_range_from_pb(request.range, request.HasField("range")),
        rules=_rules_from_pb(request.rules, defaults),
        language_class=request.language_class,
        template_ids=tuple(request.template_ids),
        limit=request.limit,
        prior_strength=prior_strength,
    )


def recommend_templates_to_pb(result: template_ranking.TemplateRanking) -> pb.RecommendTemplatesResponse:
    return pb.RecommendTemplatesResponse(
        templates=[
            pb.TemplateRecommendation(
                template_id=one.template_id,
                shown=one.shown,
                picked=one.picked,
                requests=one.requests,
                accepted=one.accepted,
                perceived_success=one.perceived_success,
                estimate=one.estimate,
                interval_low=one.interval_low,
                interval_high=one.interval_high,
            )
            for one in result.templates
        ],
        prior_mean=result.prior_mean,
        prior_strength=result.prior_strength,
    )


# Experiments.


def _goal_from_pb(message: pb.ExperimentGoal, field: str) -> experiments.ExperimentGoal:
    target = message.WhichOneof("target")
    if target == "event":
        return experiments.ExperimentGoal(message.name, event=matcher_from_pb(message.event, f"{field}.event"))
    return experiments.ExperimentGoal(message.name, outcome=message.outcome)  # no target: "" (check says so)


def experiment_results_from_pb(
    request: pb.ExperimentResultsRequest, defaults: outcomes.OutcomeRules
) -> experiments.ExperimentQuery:
    return experiments.ExperimentQuery(
        tenant_id=request.tenant_id,
        experiment=request.experiment,
        arms=tuple(experiments.ExperimentArm(arm.name, arm.weight) for arm in request.arms),
        goals=tuple(_goal_from_pb(goal, f"goals[{index}]") for index, goal in enumerate(request.goals)),
        range=time_range_from_pb(request.range, request.HasField("range")),
        rules=_rules_from_pb(request.rules, defaults),
        conversion_window_s=request.conversion_window_s or experiments.DEFAULT_WINDOW_S,
        min_exposures=request.min_exposures or experiments.DEFAULT_MIN_EXPOSURES,
    )


def experiment_results_to_pb(result: experiments.ExperimentResults) -> pb.ExperimentResultsResponse:
    return pb.ExperimentResultsResponse(
        experiment=result.experiment,
        goals=[
            pb.GoalResult(
                goal=goal.goal,
                arms=[
                    pb.ArmResult(
                        arm=arm.arm,
                        exposures=arm.exposures,
                        conversions=arm.conversions,
                        rate=arm.rate,
                        rate_low=arm.rate_low,
                        rate_high=arm.rate_high,
                        uplift=arm.uplift,
                        probability_to_beat_control=arm.probability_to_beat_control,
                        p_value=arm.p_value,
                    )
                    for arm in goal.arms
                ],
                enough_data=goal.enough_data,
                verdict=goal.verdict,
            )
            for goal in result.goals
        ],
        sample_ratio=pb.SampleRatioCheck(
            chi_square=result.sample_ratio.chi_square,
            p_value=result.sample_ratio.p_value,
            mismatch=result.sample_ratio.mismatch,
        ),
        crossover_visitors=result.crossover_visitors,
        min_exposures=result.min_exposures,
    )


# Alerts.


def rule_to_pb(rule: alerts.AlertRule) -> pb.AlertRule:
    return pb.AlertRule(
        name=rule.name,
        kind=_ALERT_KINDS.get(rule.kind, pb.ALERT_KIND_UNSPECIFIED),  # type: ignore[arg-type]
        threshold=rule.threshold,
        window_s=rule.window_s,
        min_events=rule.min_events,
        breakdown=rule.breakdown,
    )


def rules_to_pb(rules: tuple[alerts.AlertRule, ...]) -> pb.ListAlertRulesResponse:
    return pb.ListAlertRulesResponse(rules=[rule_to_pb(rule) for rule in rules])


def list_alerts_from_pb(request: pb.ListAlertsRequest) -> alerts.ListAlertsQuery:
    return alerts.ListAlertsQuery(
        tenant_id=request.tenant_id, range=time_range_from_pb(request.range, request.HasField("range"))
    )


def alerts_to_pb(result: list[alerts.Alert]) -> pb.ListAlertsResponse:
    return pb.ListAlertsResponse(
        alerts=[
            pb.Alert(
                rule=rule_to_pb(alert.rule),
                tenant_id=alert.tenant_id,
                value=alert.value,
                fired_at=_timestamp(alert.fired_at),
                message=alert.message,
                subject=alert.subject,
            )
            for alert in result
        ]
    )
