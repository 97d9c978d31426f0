"""`inkloop analytics …`: the analytics queries, as tables or JSON.

Every command goes through the gateway (INKLOOP_GATEWAY, default 127.0.0.1:50051) with the caller's
API key (INKLOOP_API_KEY, or the development key of `inkloop up`), like the dashboard: the key needs
the analyst or admin role, its tenant is the one counted, and only an admin key may name another
with --tenant. The analytics port itself is for the gateway only.

Event matchers are written SOURCE[:key=value,…], e.g. `frontend:type=page_view`,
`frontend:category=generate,action=click`, `backend:type=succeeded,variant=B,name=done`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import typer
from google.protobuf.message import Message
from rich.console import Console
from rich.table import Table

from inkloop.v1 import analytics_pb2 as pb
from inkloop.v1 import gateway_pb2_grpc
from inkloop_cli.client import ClientSettings, console, fail

app = typer.Typer(
    help="Query analytics through the gateway (funnel, correlation, discrepancy, prompts, outcomes, retry-loops, "
    "templates, experiments, adoption, variants, alerts).",
    no_args_is_help=True,
)

#: What a figure that cannot be computed (no denominator) prints as.
UNDEFINED = "–"

_TENANT = typer.Option("", "--tenant", help="Tenant whose events are counted (default: the key's own; admin only).")
_START = typer.Option(None, "--start", help="Range start, ISO 8601 (default: 24 hours before --end).")
_END = typer.Option(None, "--end", help="Range end, ISO 8601, exclusive (default: now).")
_JSON = typer.Option(False, "--json", help="Print JSON instead of a table.")


def _call(method: str, request: Message) -> Any:
    """One unary call to the gateway's AnalyticsQueryService; a failed one prints its status and exits 1."""
    settings = ClientSettings()
    with grpc.insecure_channel(settings.gateway) as channel:
        stub = gateway_pb2_grpc.AnalyticsQueryServiceStub(channel)
        try:
            return getattr(stub, method)(request, timeout=120, metadata=settings.metadata())
        except grpc.RpcError as error:
            raise fail(error) from None


def _time(text: str | None, default: datetime) -> datetime:
    if text is None:
        return default
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        console.print(f"[red]error: {text!r} is not an ISO 8601 time[/]")
        raise typer.Exit(2) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _optional_range(start: str | None, end: str | None) -> pb.TimeRange | None:
    """The range given, or None (the gateway picks one) when neither end is."""
    return None if start is None and end is None else _range(start, end)


def _range(start: str | None, end: str | None) -> pb.TimeRange:
    until = _time(end, datetime.now(UTC))
    since = _time(start, until - timedelta(days=1))
    time_range = pb.TimeRange()
    time_range.start.FromDatetime(since)
    time_range.end.FromDatetime(until)
    return time_range


def parse_matcher(spec: str) -> pb.EventMatcher:
    """`frontend:category=generate,action=click` → EventMatcher."""
    source, _, rest = spec.partition(":")
    sources = {"frontend": pb.EVENT_SOURCE_FRONTEND, "backend": pb.EVENT_SOURCE_BACKEND}
    if source not in sources:
        console.print(f"[red]error: matcher {spec!r} must start with frontend: or backend:[/]")
        raise typer.Exit(2)
    matcher = pb.EventMatcher(source=sources[source])
    for pair in filter(None, rest.split(",")):
        key, _, value = pair.partition("=")
        if key == "type":
            prefix = "FRONTEND_EVENT_TYPE_" if source == "frontend" else "BACKEND_EVENT_TYPE_"
            enum = pb.FrontendEventType if source == "frontend" else pb.BackendEventType
            try:
                number = enum.Value(prefix + value.upper())
            except ValueError:
                console.print(f"[red]error: unknown {source} type {value!r}[/]")
                raise typer.Exit(2) from None
            setattr(matcher, "frontend_type" if source == "frontend" else "backend_type", number)
        elif key in ("name", "category", "action", "label", "variant"):
            setattr(matcher, key, value)
        else:
            console.print(f"[red]error: unknown matcher key {key!r} in {spec!r}[/]")
            raise typer.Exit(2)
    return matcher


def plain(message: Message) -> dict[str, Any]:
    """A message as JSON-ready data: numbers stay numbers, enums are names, times ISO 8601."""
    result: dict[str, Any] = {}
    for field in message.DESCRIPTOR.fields:
        value = getattr(message, field.name)
        convert: Callable[[Any], Any]
        if field.message_type is not None and field.message_type.full_name == "google.protobuf.Timestamp":
            convert = lambda item: item.ToDatetime(tzinfo=UTC).isoformat()  # noqa: E731
        elif field.message_type is not None:
            convert = plain
        elif field.enum_type is not None:
            names = {value.number: value.name for value in field.enum_type.values}
            convert = names.__getitem__
        else:
            convert = lambda item: item  # noqa: E731
        is_repeated = field.is_repeated
        result[field.name] = [convert(item) for item in value] if is_repeated else convert(value)
    return result


def _defined(value: Any) -> Any:
    """JSON has no NaN: an undefined figure is null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _defined(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_defined(item) for item in value]
    return value


def show(response: Message, as_json: bool, tables: Callable[[], list[Table]], empty: str | None = None) -> None:
    """The answer as JSON or tables; `empty` says why an answer without data has none (stderr)."""
    out = Console()
    if as_json:
        out.print_json(json.dumps(_defined(plain(response))))
        return
    if empty is not None:
        console.print(f"[yellow]{empty}[/]")
        return
    for table in tables():
        out.print(table)


def cell(value: Any) -> str:
    """A table cell: floats to three places, an undefined figure (NaN) as a dash."""
    if isinstance(value, float):
        return f"{value:.3f}" if math.isfinite(value) else UNDEFINED
    return str(value)


def tabulate(title: str, columns: list[str], rows: list[list[Any]]) -> Table:
    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*(cell(value) for value in row))
    return table


def funnel_empty(response: pb.FunnelResponse, actor: str) -> str | None:
    """Why a funnel shows nothing, or None when some actor reached its first step."""
    if any(series.steps and series.steps[0].count for series in response.series):
        return None
    hint = " (back-end-only traffic: try --actor user)" if actor == "visitor" else ""
    return f"no {actor} reached step 1 in the range{hint}"


_ORDERS = {"ordered": pb.FUNNEL_ORDER_ORDERED, "strict": pb.FUNNEL_ORDER_STRICT, "any": pb.FUNNEL_ORDER_ANY}
_STEP = typer.Option(..., "--step", help="A step matcher; repeat in order (2 to 16).")
_FUNNEL_WINDOW = typer.Option(3600, "--window", help="Conversion window in seconds.")
_ORDER = typer.Option("ordered", "--order", help="ordered, strict (no other step between) or any (any order).")
_EXCLUDE = typer.Option(
    [], "--exclude", help="FROM-TO=MATCHER: drop actors who did MATCHER between steps FROM and TO; repeat."
)
_ACTOR = typer.Option("visitor", "--actor", help="visitor or user.")


def parse_exclusion(spec: str) -> pb.FunnelExclusion:
    """`1-2=frontend:category=error` → FunnelExclusion between steps 1 and 2."""
    steps, _, matcher = spec.partition("=")
    first, _, last = steps.partition("-")
    if not (first.isdigit() and last.isdigit() and matcher):
        console.print(f"[red]error: exclusion {spec!r} must read FROM-TO=MATCHER, e.g. 1-2=frontend:category=error[/]")
        raise typer.Exit(2)
    return pb.FunnelExclusion(event=parse_matcher(matcher), from_step=int(first), to_step=int(last))


def _funnel_request(
    steps: list[str], window: int, order: str, exclusions: list[str], actor: str, tenant: str, time_range: pb.TimeRange
) -> pb.FunnelRequest:
    if order not in _ORDERS:
        console.print(f"[red]error: --order must be one of {', '.join(_ORDERS)}[/]")
        raise typer.Exit(2)
    return pb.FunnelRequest(
        tenant_id=tenant,
        steps=[parse_matcher(spec) for spec in steps],
        window_s=window,
        range=time_range,
        actor=actor,
        order=_ORDERS[order],
        exclusions=[parse_exclusion(spec) for spec in exclusions],
    )


@app.command()
def funnel(
    step: list[str] = _STEP,
    window: int = _FUNNEL_WINDOW,
    order: str = _ORDER,
    exclude: list[str] = _EXCLUDE,
    breakdown: str = typer.Option("", help="'', variant, language_class, length_bucket, template, kind or device."),
    actor: str = _ACTOR,
    bins: int = typer.Option(0, "--bins", help="Bins of the time-to-convert histogram (0 = 10)."),
    tenant: str = _TENANT,
    start: str | None = _START,
    end: str | None = _END,
    as_json: bool = _JSON,
) -> None:
    """Conversion funnel (ordered, strict or any order, with exclusions) and the time to convert."""
    request = _funnel_request(step, window, order, exclude, actor, tenant, _range(start, end))
    request.breakdown = breakdown
    request.time_to_convert_bins = bins
    response = _call("Funnel", request)
    converted = response.time_to_convert
    show(
        response,
        as_json,
        empty=funnel_empty(response, actor),
        tables=lambda: [
            *(
                tabulate(
                    f"funnel {series.breakdown_value or ''}".strip(),
                    ["step", "count", "from previous", "from first", "median s"],
                    [
                        [
                            s.name,
                            s.count,
                            s.conversion_from_previous,
                            s.conversion_from_first,
                            s.median_seconds_from_first,
                        ]
                        for s in series.steps
                    ],
                )
                for series in response.series
            ),
            tabulate(
                f"time to convert ({converted.actors} actors, median {cell(converted.median_s)} s)",
                ["from s", "to s", "actors"],
                [[b.start_s, b.end_s, b.actors] for b in converted.bins],
            ),
        ],
    )


@app.command()
def correlation(
    step: list[str] = _STEP,
    window: int = _FUNNEL_WINDOW,
    order: str = _ORDER,
    exclude: list[str] = _EXCLUDE,
    actor: str = _ACTOR,
    of_step: int = typer.Option(0, "--of-step", help="Step (1-based) whose converters are examined; 0 = the last."),
    prop: list[str] = typer.Option([], "--property", help="A property to examine; repeat; none = all."),
    tenant: str = _TENANT,
    start: str | None = _START,
    end: str | None = _END,
    as_json: bool = _JSON,
) -> None:
    """Properties over- or under-represented among a funnel step's converters vs its drop-offs."""
    request = pb.FunnelCorrelationRequest(
        tenant_id=tenant,
        funnel=_funnel_request(step, window, order, exclude, actor, tenant, _range(start, end)),
        step=of_step,
        properties=prop,
    )
    response = _call("FunnelCorrelation", request)
    show(
        response,
        as_json,
        empty=None if response.converted + response.dropped else "no actor reached the step before it in the range",
        tables=lambda: [
            tabulate(
                f"correlation with step {response.step} ({response.converted} converted, {response.dropped} dropped)",
                ["property", "value", "converted", "dropped", "odds ratio", "p-value", "significant"],
                [
                    [
                        c.property,
                        c.value,
                        c.converted,
                        c.dropped,
                        c.odds_ratio,
                        c.p_value,
                        "yes" if c.significant else "",
                    ]
                    for c in response.correlations
                ],
            )
        ],
    )


@app.command()
def discrepancy(
    frontend: str = typer.Option("frontend:category=generate,action=click", help="Front-end matcher."),
    backend: str = typer.Option("backend:type=requested", help="Back-end matcher."),
    bucket: int = typer.Option(0, help="Bucket width in seconds (0 = one bucket)."),
    samples: int = typer.Option(10, help="Unmatched request ids to show per side."),
    tenant: str = _TENANT,
    start: str | None = _START,
    end: str | None = _END,
    as_json: bool = _JSON,
) -> None:
    """Front-end vs back-end counts, matched by request id."""
    request = pb.DiscrepancyRequest(
        tenant_id=tenant,
        frontend=parse_matcher(frontend),
        backend=parse_matcher(backend),
        range=_range(start, end),
        bucket_s=bucket,
        sample_size=samples,
    )
    response = _call("Discrepancy", request)
    columns = ["start", "front", "back", "matched", "front only", "back only", "front dup", "back dup", "loss"]

    def row(name: str, b: pb.DiscrepancyBucket) -> list[Any]:
        counts = [b.frontend, b.backend, b.matched, b.frontend_only, b.backend_only]
        return [name, *counts, b.frontend_duplicates, b.backend_duplicates, b.loss_rate]

    show(
        response,
        as_json,
        empty=None
        if response.total.frontend or response.total.backend
        else "no matching front-end or back-end events in the range",
        tables=lambda: [
            tabulate(
                "discrepancy",
                columns,
                [row(b.start.ToDatetime(tzinfo=UTC).isoformat(), b) for b in response.buckets]
                + [row("total", response.total)],
            ),
            tabulate(
                "unmatched samples",
                ["front only", "back only"],
                [[", ".join(response.frontend_only_sample), ", ".join(response.backend_only_sample)]],
            ),
        ],
    )


@app.command()
def prompts(
    edges: str = typer.Option("", help="Length bucket upper bounds, e.g. 20,50,100 (default 20,50,100,200,500)."),
    tenant: str = _TENANT,
    start: str | None = _START,
    end: str | None = _END,
    as_json: bool = _JSON,
) -> None:
    """Success and volume by prompt length and language; dwell by language."""
    try:
        bounds = [int(edge) for edge in edges.split(",") if edge.strip()]
    except ValueError:
        console.print(f"[red]error: --edges must be integers separated by commas, got {edges!r}[/]")
        raise typer.Exit(2) from None
    request = pb.PromptInsightsRequest(tenant_id=tenant, range=_range(start, end), length_bucket_edges=bounds)
    response = _call("PromptInsights", request)
    columns = ["group", "requests", "successes", "success rate", "median dwell s"]

    def rows(groups: Any) -> list[list[Any]]:
        return [[g.label, g.requests, g.successes, g.success_rate, g.median_dwell_s] for g in groups]

    show(
        response,
        as_json,
        empty=None if any(g.requests for g in response.by_length) else "no generation requests in the range",
        tables=lambda: [
            tabulate("by length", columns, rows(response.by_length)),
            tabulate("by language", columns, rows(response.by_language)),
        ],
    )


_WINDOW = typer.Option(0, "--window-s", help="Regeneration window in seconds (default: the service's).")
_BITS = typer.Option(0, "--max-distance-bits", help="Bits two prompt signatures of one intent may differ in.")


@app.command()
def outcomes(
    breakdown: str = typer.Option("", help="'', language_class, length_bucket, variant, kind or template."),
    window_s: int = _WINDOW,
    max_distance_bits: int = _BITS,
    tenant: str = _TENANT,
    start: str | None = _START,
    end: str | None = _END,
    as_json: bool = _JSON,
) -> None:
    """Requests by perceived outcome: accepted, regenerated, abandoned, failed; perceived success, dwell."""
    rules = pb.OutcomeRules(regenerate_window_s=window_s, max_intent_distance_bits=max_distance_bits)
    request = pb.OutcomesRequest(tenant_id=tenant, range=_range(start, end), breakdown=breakdown, rules=rules)
    response = _call("Outcomes", request)
    used = response.rules
    show(
        response,
        as_json,
        empty=None if response.groups else "no generation requests in the range",
        tables=lambda: [
            tabulate(
                f"outcomes (window {used.regenerate_window_s} s, same intent within "
                f"{used.max_intent_distance_bits} bits)",
                [
                    "group",
                    "requests",
                    "accepted",
                    "regenerated",
                    "abandoned",
                    "failed",
                    "perceived success",
                    "regen per accepted",
                    "mean dwell s",
                ],
                [
                    [
                        g.value,
                        g.requests,
                        g.accepted,
                        g.regenerated,
                        g.abandoned,
                        g.failed,
                        g.perceived_success,
                        g.regenerations_per_accepted,
                        g.mean_dwell_s,
                    ]
                    for g in response.groups
                ],
            )
        ],
    )


@app.command("retry-loops")
def retry_loops(
    min_regenerations: int = typer.Option(0, help="Regenerations of one intent that make a loop (default 3)."),
    window_s: int = _WINDOW,
    max_distance_bits: int = _BITS,
    tenant: str = _TENANT,
    start: str | None = _START,
    end: str | None = _END,
    as_json: bool = _JSON,
) -> None:
    """Users stuck regenerating one intent without accepting an image, by language class."""
    rules = pb.OutcomeRules(regenerate_window_s=window_s, max_intent_distance_bits=max_distance_bits)
    request = pb.RetryLoopsRequest(
        tenant_id=tenant, range=_range(start, end), rules=rules, min_regenerations=min_regenerations
    )
    response = _call("RetryLoops", request)
    show(
        response,
        as_json,
        empty=None if response.groups else "no generation requests in the range",
        tables=lambda: [
            tabulate(
                f"retry loops ({response.min_regenerations}+ regenerations of one intent, nothing accepted)",
                ["language", "users", "looping users", "loop rate"],
                [[g.language_class, g.users, g.looping_users, g.loop_rate] for g in response.groups],
            )
        ],
    )


@app.command()
def templates(
    language: str = typer.Option("", "--language", help="Only this language class: zh, en, mixed or other."),
    limit: int = typer.Option(0, help="How many (0 = all)."),
    window_s: int = _WINDOW,
    max_distance_bits: int = _BITS,
    tenant: str = _TENANT,
    start: str | None = typer.Option(None, "--start", help="Range start, ISO 8601 (default: 30 days back)."),
    end: str | None = _END,
    as_json: bool = _JSON,
) -> None:
    """Prompt templates ranked by perceived success, and the suggestion loop: shown, picked, used, accepted."""
    request = pb.RecommendTemplatesRequest(
        tenant_id=tenant,
        language_class=language,
        limit=limit,
        rules=pb.OutcomeRules(regenerate_window_s=window_s, max_intent_distance_bits=max_distance_bits),
    )
    chosen = _optional_range(start, end)
    if chosen is not None:
        request.range.CopyFrom(chosen)
    response = _call("RecommendTemplates", request)
    show(
        response,
        as_json,
        empty=None if response.templates else "no templates",
        tables=lambda: [
            tabulate(
                f"templates (prior {cell(response.prior_mean)} over {response.prior_strength:g} requests)",
                ["template", "name", "shown", "picked", "requests", "accepted", "success", "estimate", "95% interval"],
                [
                    [
                        t.template_id,
                        t.name,
                        t.shown,
                        t.picked,
                        t.requests,
                        t.accepted,
                        t.perceived_success,
                        t.estimate,
                        f"{cell(t.interval_low)}-{cell(t.interval_high)}",
                    ]
                    for t in response.templates
                ],
            )
        ],
    )


@app.command()
def experiments(
    name: str = typer.Option(..., "--name", help="The experiment, e.g. inpaint_hint."),
    min_exposures: int = typer.Option(0, help="Fewest exposed visitors per arm for a verdict (0 = its own)."),
    tenant: str = _TENANT,
    start: str | None = typer.Option(None, "--start", help="Range start, ISO 8601 (default: when it started)."),
    end: str | None = typer.Option(None, "--end", help="Range end, ISO 8601 (default: when it stopped, or now)."),
    as_json: bool = _JSON,
) -> None:
    """An experiment's readout: per arm and goal, rate, uplift, chance to beat control, p-value; SRM check."""
    request = pb.ExperimentResultsRequest(tenant_id=tenant, experiment=name, min_exposures=min_exposures)
    chosen = _optional_range(start, end)
    if chosen is not None:
        request.range.CopyFrom(chosen)
    response = _call("ExperimentResults", request)
    ratio = response.sample_ratio
    srm = "SAMPLE RATIO MISMATCH: do not trust this readout" if ratio.mismatch else "split as weighted"
    show(
        response,
        as_json,
        tables=lambda: [
            tabulate(
                f"{response.experiment} · {goal.goal}: {goal.verdict} (min {response.min_exposures} per arm; {srm}, "
                f"p={cell(ratio.p_value)}; {response.crossover_visitors} in several arms)",
                ["arm", "exposed", "converted", "rate", "95% interval", "uplift", "P(beats control)", "p-value"],
                [
                    [
                        a.arm,
                        a.exposures,
                        a.conversions,
                        a.rate,
                        f"{cell(a.rate_low)}-{cell(a.rate_high)}",
                        a.uplift,
                        a.probability_to_beat_control,
                        a.p_value,
                    ]
                    for a in goal.arms
                ],
            )
            for goal in response.goals
        ],
    )


@app.command()
def adoption(
    feature: list[str] = typer.Option([], "--feature", help="Entry (tracked category); repeat; none = all seen."),
    tenant: str = _TENANT,
    start: str | None = _START,
    end: str | None = _END,
    as_json: bool = _JSON,
) -> None:
    """Exposure → click rate of page entries; page views and unique visitors."""
    request = pb.FeatureAdoptionRequest(tenant_id=tenant, range=_range(start, end), features=feature)
    response = _call("FeatureAdoption", request)
    show(
        response,
        as_json,
        empty=None if response.features or response.page_views else "no page views or tracked entries in the range",
        tables=lambda: [
            tabulate(
                f"adoption (page views {response.page_views}, unique visitors {response.unique_visitors})",
                ["feature", "exposures", "clicks", "click rate", "exposed visitors", "clicked visitors"],
                [
                    [f.feature, f.exposures, f.clicks, f.click_rate, f.exposed_visitors, f.clicked_visitors]
                    for f in response.features
                ],
            )
        ],
    )


@app.command()
def variants(tenant: str = _TENANT, start: str | None = _START, end: str | None = _END, as_json: bool = _JSON) -> None:
    """A/B: per model variant."""
    response = _call("CompareVariants", pb.CompareVariantsRequest(tenant_id=tenant, range=_range(start, end)))
    show(
        response,
        as_json,
        empty=None if any(v.requests for v in response.variants) else "no generation requests in the range",
        tables=lambda: [
            tabulate(
                "variants",
                ["variant", "requests", "successes", "success rate", "p50 s", "p95 s", "downloads", "per success"],
                [
                    [
                        v.variant,
                        v.requests,
                        v.successes,
                        v.success_rate,
                        v.latency_p50_s,
                        v.latency_p95_s,
                        v.downloads,
                        v.downloads_per_success,
                    ]
                    for v in response.variants
                ],
            )
        ],
    )


@app.command()
def alerts(
    rules: bool = typer.Option(False, "--rules", help="List the rules in force instead of fired alerts."),
    tenant: str = _TENANT,
    start: str | None = _START,
    end: str | None = _END,
    as_json: bool = _JSON,
) -> None:
    """Fired alerts (newest first), or the alert rules."""
    if rules:
        listed = _call("ListAlertRules", pb.ListAlertRulesRequest())
        show(
            listed,
            as_json,
            empty=None
            if listed.rules
            else "no alert rules are configured (see the analytics alert-rules-file setting)",
            tables=lambda: [
                tabulate(
                    "alert rules",
                    ["name", "kind", "per", "threshold", "window s", "min events"],
                    [
                        [r.name, pb.AlertKind.Name(r.kind), r.breakdown, r.threshold, r.window_s, r.min_events]
                        for r in listed.rules
                    ],
                )
            ],
        )
        return
    request = pb.ListAlertsRequest(tenant_id=tenant)
    if start is not None or end is not None:
        request.range.CopyFrom(_range(start, end))
    fired = _call("ListAlerts", request)
    show(
        fired,
        as_json,
        empty=None if fired.alerts else "no alert fired in the range",
        tables=lambda: [
            tabulate(
                "alerts",
                ["fired at", "tenant", "rule", "subject", "value", "message"],
                [
                    [
                        a.fired_at.ToDatetime(tzinfo=UTC).isoformat(),
                        a.tenant_id,
                        a.rule.name,
                        a.subject,
                        a.value,
                        a.message,
                    ]
                    for a in fired.alerts
                ],
            )
        ],
    )
