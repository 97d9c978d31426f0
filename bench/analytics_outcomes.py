"""Outcomes and RetryLoops latency on synthetic back-end events, against the plain funnel on the same data.

    .venv/bin/python bench/analytics_outcomes.py --events 10000000 [--engines server,chdb] [--repeat 3]

Events are generated inside ClickHouse (INSERT … SELECT FROM numbers), three slots per request:
REQUESTED; SUCCEEDED (or FAILED for one request in ten) 5 s later; DOWNLOADED 30 s later for one
request in three. Users make four requests two minutes apart, two per intent (signatures one bit
apart), so every outcome occurs. The anchor is the service's own 2-step funnel (requested →
succeeded, by user) over the same table and range. Goal: each within 2× of it.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from harness.clickhouse import ClickHouseServer, fresh_database
from inkloop_analytics import funnel, outcomes
from inkloop_analytics.matchers import EventMatcher, TimeRange
from inkloop_analytics.migrations import migrate
from inkloop_analytics.storage import ClickHouse

BASE = datetime(2026, 3, 1, tzinfo=UTC)

FILL = """
INSERT INTO backend_events (event_id, tenant_id, time, user_id, request_id, job_id, type, variant, kind, width,
    height, steps, true_cfg_scale, num_images, seed, latency_s, error_code, prompt_length, prompt_language,
    prompt_hash, prompt_redacted, policy, has_negative_prompt, inserted_at, prompt_signature, base_request_id)
SELECT generateUUIDv4(), 't1',
    toDateTime(%(base)s, 'UTC') + intDiv(r, 4) %% 80000 + (r %% 4) * 120 + slot * 5 + (slot = 2) * 20,
    concat('u', toString(intDiv(r, 4))), concat('r', toString(r)), '',
    multiIf(slot = 0, 'requested', slot = 1 AND r %% 10 = 0, 'failed', slot = 1, 'succeeded', 'downloaded'),
    if(r %% 2 = 0, 'A', 'B'), 'text_to_image', 1024, 1024, 30, 4.0, 1, r, 5.0, '', r %% 200,
    ['zh', 'en', 'mixed'][r %% 3 + 1], '', '', '', 0, toDateTime(%(base)s, 'UTC'),
    bitXor(cityHash64(intDiv(r, 2)), r %% 2), ''
FROM (SELECT intDiv(number, 3) AS r, number %% 3 AS slot FROM numbers(%(slots)s))
WHERE slot < 2 OR r %% 3 = 0
"""


def fill(ch: ClickHouse, events: int) -> int:
    # Slots per request: 2 always, a third for one request in three: 7/3 events per request.
    requests = events * 3 // 7
    ch.execute(FILL, {"base": BASE, "slots": requests * 3})
    [(count,)] = ch.query("SELECT count() FROM backend_events")
    return int(count)


def timed(run: Callable[[], object], repeat: int) -> float:
    run()  # warm caches
    samples = []
    for _ in range(repeat):
        began = time.perf_counter()
        run()
        samples.append(time.perf_counter() - began)
    return statistics.median(samples)


def measure(ch: ClickHouse, engine: str, events: int, repeat: int) -> None:
    migrate(ch)
    stored = fill(ch, events)
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
    print(f"{engine}: {stored:,} events; plain funnel (requested → succeeded, by user) {anchor:.2f} s")
    cases = {
        "Outcomes": lambda: outcomes.run(ch, outcomes.OutcomesQuery("t1", window, rules)),
        "Outcomes by language": lambda: outcomes.run(ch, outcomes.OutcomesQuery("t1", window, rules, "language_class")),
        "RetryLoops": lambda: outcomes.retry_loops(ch, outcomes.RetryLoopsQuery("t1", window, rules)),
    }
    for name, run in cases.items():
        seconds = timed(run, repeat)
        print(f"  {name:22s} {seconds:6.2f} s  {seconds / anchor:5.2f}x the funnel (goal <= 2x)")
    [group] = outcomes.run(ch, outcomes.OutcomesQuery("t1", window, rules)).groups
    print(
        f"  outcomes: {group.requests:,} requests, accepted {group.accepted:,}, regenerated {group.regenerated:,},"
        f" abandoned {group.abandoned:,}, failed {group.failed:,}"
    )


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
