"""Outcomes, RetryLoops, RecommendTemplates and ExperimentResults latency on synthetic events, against
the plain funnel on the same data.

    .venv/bin/python bench/analytics_outcomes.py --events 10000000 [--engines server,chdb] [--repeat 3]

Back-end events are generated inside ClickHouse (INSERT … SELECT FROM numbers), three slots per
request: REQUESTED; SUCCEEDED (or FAILED for one request in ten) 5 s later; DOWNLOADED 30 s later for
one request in three. Users make four requests two minutes apart, two per intent (signatures one bit
apart), so every outcome occurs; two requests in three name one of 20 templates. Front-end events
(not counted in --events): each request's generate click by its user's visitor, each visitor's
exposure to experiment "bench" (arm by parity) at its first request, and two template suggestions
per visitor, one in three picked. The anchor is the service's own 2-step funnel (requested →
succeeded, by user) over the back-end table and range, timed in turn with each query (the ratio is
of the two medians). Goal: Outcomes and RetryLoops within 2× of it.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from harness.clickhouse import ClickHouseServer, fresh_database
from inkloop_analytics import experiments, funnel, outcomes, template_ranking
from inkloop_analytics.matchers import EventMatcher, TimeRange
from inkloop_analytics.migrations import migrate
from inkloop_analytics.storage import ClickHouse

BASE = datetime(2026, 3, 1, tzinfo=UTC)

FILL = """
INSERT INTO backend_events (event_id, tenant_id, time, user_id, request_id, job_id, type, variant, kind, width,
    height, steps, true_cfg_scale, num_images, seed, latency_s, error_code, prompt_length, prompt_language,
    prompt_hash, prompt_redacted, policy, has_negative_prompt, inserted_at, prompt_signature, base_request_id,
    template_id)
SELECT generateUUIDv4(), 't1',
    toDateTime(%(base)s, 'UTC') + intDiv(r, 4) %% 80000 + (r %% 4) * 120 + slot * 5 + (slot = 2) * 20,
    concat('u', toString(intDiv(r, 4))), concat('r', toString(r)), '',
    multiIf(slot = 0, 'requested', slot = 1 AND r %% 10 = 0, 'failed', slot = 1, 'succeeded', 'downloaded'),
    if(r %% 2 = 0, 'A', 'B'), 'text_to_image', 1024, 1024, 30, 4.0, 1, r, 5.0, '', r %% 200,
    ['zh', 'en', 'mixed'][r %% 3 + 1], '', '', '', 0, toDateTime(%(base)s, 'UTC'),
    bitXor(cityHash64(intDiv(r, 2)), r %% 2), '', if(r %% 3 = 1, '', concat('tpl-', toString(r %% 20)))
FROM (SELECT intDiv(number, 3) AS r, number %% 3 AS slot FROM numbers(%(slots)s))
WHERE slot < 2 OR r %% 3 = 0
"""

# Front-end rows: (kind, number) -> kind 0 a request's click, 1 a visitor's experiment exposure, 2 and 3
# its two template suggestions, 4 a pick of the first. Visitor u is user u's browser.
FILL_FRONTEND = """
INSERT INTO frontend_events (event_id, tenant_id, time, server_time, visitor_id, session_id, user_id, page_url,
    referrer, user_agent, device, language, screen, type, category, action, label, value, request_id,
    custom_var_names, custom_var_values, inserted_at)
SELECT generateUUIDv4(), 't1', t, t, concat('v', toString(u)), concat('s', toString(u)), '', '', '', '', 'desktop',
    '', '', 'track_event',
    multiIf(kind = 0, 'generate', kind = 1, 'experiment', 'template'),
    multiIf(kind = 0, 'click', kind = 4, 'pick', 'exposure'),
    multiIf(kind = 0, '', kind = 1, concat('bench:', if(u %% 2 = 0, 'control', 'treatment')),
        concat('tpl-', toString((u + if(kind = 3, 7, 0)) %% 20))),
    CAST(NULL AS Nullable(Int64)), if(kind = 0, concat('r', toString(n)), ''), emptyArrayString(),
    emptyArrayString(), toDateTime(%(base)s, 'UTC')
FROM (
    SELECT kind, n, if(kind = 0, intDiv(n, 4), n) AS u,
        toDateTime(%(base)s, 'UTC') + u %% 80000 + if(kind = 0, (n %% 4) * 120, 0) AS t
    FROM (SELECT 0 AS kind, number AS n FROM numbers(%(requests)s)
        UNION ALL SELECT arrayJoin([1, 2, 3]) AS kind, number AS n FROM numbers(%(users)s)
        UNION ALL SELECT 4 AS kind, number * 3 AS n FROM numbers(intDiv(%(users)s, 3)))
)
"""


def fill(ch: ClickHouse, events: int) -> tuple[int, int]:
    """(back-end, front-end) events stored."""
    # Slots per request: 2 always, a third for one request in three: 7/3 events per request.
    requests = events * 3 // 7
    ch.execute(FILL, {"base": BASE, "slots": requests * 3})
    ch.execute(FILL_FRONTEND, {"base": BASE, "requests": requests, "users": (requests + 3) // 4})
    [(back,)] = ch.query("SELECT count() FROM backend_events")
    [(front,)] = ch.query("SELECT count() FROM frontend_events")
    return int(back), int(front)


def timed(run: Callable[[], object], repeat: int) -> float:
    run()  # warm caches
    samples = []
    for _ in range(repeat):
        began = time.perf_counter()
        run()
        samples.append(time.perf_counter() - began)
    return statistics.median(samples)


def paired(run: Callable[[], object], anchor: Callable[[], object], repeat: int) -> tuple[float, float]:
    """Medians of `run` and of `anchor`, timed in turn each round: on a shared machine both see the same load."""
    run()  # warm caches
    samples: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeat):
        for one, kept in ((anchor, samples[1]), (run, samples[0])):
            began = time.perf_counter()
            one()
            kept.append(time.perf_counter() - began)
    return statistics.median(samples[0]), statistics.median(samples[1])


def measure(ch: ClickHouse, engine: str, events: int, repeat: int) -> None:
    migrate(ch)
    stored, front = fill(ch, events)
    window = TimeRange(BASE, BASE + timedelta(days=1))
    rules = outcomes.DEFAULT_RULES
    plain = funnel.FunnelQuery(
        "t1",
        (EventMatcher("backend", backend_type="requested"), EventMatcher("backend", backend_type="succeeded")),
        3600,
        window,
        actor="user",
    )
    anchor = timed(lambda: funnel.run(ch, plain), repeat)
    print(
        f"{engine}: {stored:,} back-end events (+{front:,} front-end);"
        f" plain funnel (requested → succeeded, by user) {anchor:.2f} s"
    )
    templates = template_ranking.RecommendTemplatesQuery("t1", window, rules)
    readout = experiments.ExperimentQuery(
        "t1",
        "bench",
        (experiments.ExperimentArm("control", 1), experiments.ExperimentArm("treatment", 1)),
        (
            experiments.ExperimentGoal(event=EventMatcher("frontend", category="template", action="pick")),
            experiments.ExperimentGoal(event=EventMatcher("backend", backend_type="downloaded")),
            experiments.ExperimentGoal(outcome="accepted"),
        ),
        window,
        rules,
        conversion_window_s=3600,
    )
    cases = {
        "Outcomes": lambda: outcomes.run(ch, outcomes.OutcomesQuery("t1", window, rules)),
        "Outcomes by language": lambda: outcomes.run(ch, outcomes.OutcomesQuery("t1", window, rules, "language_class")),
        "Outcomes by template": lambda: outcomes.run(ch, outcomes.OutcomesQuery("t1", window, rules, "template")),
        "RetryLoops": lambda: outcomes.retry_loops(ch, outcomes.RetryLoopsQuery("t1", window, rules)),
        "RecommendTemplates": lambda: template_ranking.run(ch, templates),
        "RecommendTemplates zh": lambda: template_ranking.run(ch, replace(templates, language_class="zh")),
        "ExperimentResults": lambda: experiments.run(ch, readout),
    }
    for name, run in cases.items():
        seconds, funnel_s = paired(run, lambda: funnel.run(ch, plain), repeat)
        print(f"  {name:22s} {seconds:6.2f} s  {seconds / funnel_s:5.2f}x the funnel ({funnel_s:.2f} s alongside)")
    [group] = outcomes.run(ch, outcomes.OutcomesQuery("t1", window, rules)).groups
    print(
        f"  outcomes: {group.requests:,} requests, accepted {group.accepted:,}, regenerated {group.regenerated:,},"
        f" abandoned {group.abandoned:,}, failed {group.failed:,}"
    )
    ranking = template_ranking.run(ch, templates)
    best = ranking.templates[0]
    print(
        f"  templates: {len(ranking.templates)} ranked, prior {ranking.prior_mean:.3f}; best {best.template_id}"
        f" (shown {best.shown:,}, picked {best.picked:,}, {best.accepted:,}/{best.requests:,} accepted)"
    )
    result = experiments.run(ch, readout)
    for goal in result.goals:
        arms = ", ".join(f"{arm.arm} {arm.conversions:,}/{arm.exposures:,}" for arm in goal.arms)
        print(f"  experiment goal {goal.goal}: {arms}; {goal.verdict}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--engines", default="server,chdb")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    engines = args.engines.split(",")
    if "server" in engines:
        with ClickHouseServer() as server, fresh_database(server.url) as ch:
            measure(ch, "18.16 server", args.events, args.repeat)
    if "chdb" in engines:
        with tempfile.TemporaryDirectory() as directory, fresh_database(f"chdb://{directory}") as ch:
            measure(ch, "chDB", args.events, args.repeat)


if __name__ == "__main__":
    main()
