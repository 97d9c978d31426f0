"""Funnel and discrepancy latency on synthetic events, on the 18.16 server and on chDB.

    .venv/bin/python bench/analytics_queries.py --events 1000000 [--engines server,chdb] [--repeat 3]

Events are generated inside ClickHouse (INSERT … SELECT FROM numbers), 4 per visitor: page view,
generate click, inpaint exposure, inpaint click, with drop-off; plus one REQUESTED back-end event
for 90% of the generate clicks. The anchor is a hand-written 4-step windowFunnel over the same
table; the service's funnel runs the same 4 front-end steps (and, separately, a front+back funnel).
The same 4 steps then run in strict and in any order and as an ordered funnel with an exclusion
(these three count chains in per-actor arrays, not with windowFunnel), each against the plain
funnel; and a correlation of the front+back funnel's last step over all six properties (one funnel
per property) against that funnel.
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
from inkloop_analytics import correlation, discrepancy, funnel
from inkloop_analytics.matchers import EventMatcher, TimeRange
from inkloop_analytics.migrations import migrate
from inkloop_analytics.storage import ClickHouse

BASE = datetime(2026, 3, 1, tzinfo=UTC)

FILL_FRONTEND = """
INSERT INTO frontend_events (event_id, tenant_id, time, server_time, visitor_id, session_id, user_id, page_url,
    referrer, user_agent, device, language, screen, type, category, action, label, value, request_id,
    custom_var_names, custom_var_values, inserted_at)
SELECT generateUUIDv4(), 't1',
    toDateTime(%(base)s, 'UTC') + intDiv(number, 4) %% 86000 + (number %% 4) * 40 + cityHash64(number) %% 30,
    toDateTime(%(base)s, 'UTC'), concat('v', toString(intDiv(number, 4))), concat('s', toString(intDiv(number, 4))),
    '', 'https://inkloop.test/', '', 'Mozilla/5.0', if(number %% 3 = 0, 'mobile', 'desktop'), 'zh-CN', '1920x1080',
    if(number %% 4 = 0, 'page_view', 'track_event'),
    multiIf(number %% 4 = 0, '', number %% 4 = 1, 'generate', 'inpaint'),
    multiIf(number %% 4 = 0, '', number %% 4 = 2, 'exposure', cityHash64(number, 1) %% 10 < 7, 'click', 'hover'),
    '', NULL, if(number %% 4 = 1, concat('r', toString(intDiv(number, 4))), ''), [], [], toDateTime(%(base)s, 'UTC')
FROM numbers(%(count)s)
"""

FILL_BACKEND = """
INSERT INTO backend_events (event_id, tenant_id, time, user_id, request_id, job_id, type, variant, kind, width,
    height, steps, true_cfg_scale, num_images, seed, latency_s, error_code, prompt_length, prompt_language,
    prompt_hash, prompt_redacted, policy, has_negative_prompt, inserted_at)
SELECT generateUUIDv4(), 't1', toDateTime(%(base)s, 'UTC') + number %% 86000 + 45, 'u1',
    concat('r', toString(number)), '', 'requested', if(number %% 2 = 0, 'A', 'B'), 'text_to_image', 1024, 1024, 30,
    4.0, 1, number, 0.0, '', 20, 'zh', '', '', '', 0, toDateTime(%(base)s, 'UTC')
FROM numbers(%(count)s)
WHERE number %% 10 != 0
"""

HAND_WRITTEN_FUNNEL = """
SELECT level, count() FROM (
    SELECT visitor_id, windowFunnel(3600)(toUInt32(time), type = 'page_view',
        category = 'generate' AND action = 'click', category = 'inpaint' AND action = 'exposure',
        category = 'inpaint' AND action = 'click') AS level
    FROM frontend_events
    WHERE tenant_id = 't1' AND time >= toDateTime(%(start)s, 'UTC') AND time < toDateTime(%(end)s, 'UTC')
    GROUP BY visitor_id
) GROUP BY level ORDER BY level
"""

FRONT_STEPS = (
    EventMatcher("frontend", frontend_type="page_view"),
    EventMatcher("frontend", category="generate", action="click"),
    EventMatcher("frontend", category="inpaint", action="exposure"),
    EventMatcher("frontend", category="inpaint", action="click"),
)
HOVER = EventMatcher("frontend", category="inpaint", action="hover")
MIXED_STEPS = (
    EventMatcher("frontend", frontend_type="page_view"),
    EventMatcher("frontend", category="generate", action="click"),
    EventMatcher("backend", backend_type="requested"),
)


def timed(repeat: int, call: Callable[[], object]) -> float:
    call()  # warm the caches once
    runs = []
    for _ in range(repeat):
        began = time.perf_counter()
        call()
        runs.append(time.perf_counter() - began)
    return statistics.median(runs)


def bench(engine: str, ch: ClickHouse, events: int, repeat: int) -> None:
    migrate(ch)
    front = events * 4 // 5
    began = time.perf_counter()
    ch.execute(FILL_FRONTEND, {"base": BASE, "count": front})
    ch.execute(FILL_BACKEND, {"base": BASE, "count": front // 4})
    [(stored_front,)] = ch.query("SELECT count() FROM frontend_events")
    [(stored_back,)] = ch.query("SELECT count() FROM backend_events")
    print(f"{engine}: {stored_front + stored_back:,} events generated in {time.perf_counter() - began:.1f} s")
    window = TimeRange(BASE, BASE + timedelta(days=1))
    params = {"start": window.start, "end": window.end + timedelta(hours=1)}
    anchor = timed(repeat, lambda: ch.query(HAND_WRITTEN_FUNNEL, params))
    ours = timed(repeat, lambda: funnel.run(ch, funnel.FunnelQuery("t1", FRONT_STEPS, 3600, window)))
    mixed = timed(repeat, lambda: funnel.run(ch, funnel.FunnelQuery("t1", MIXED_STEPS, 3600, window)))
    by_device = timed(
        repeat, lambda: funnel.run(ch, funnel.FunnelQuery("t1", FRONT_STEPS, 3600, window, breakdown="device"))
    )
    gap = discrepancy.DiscrepancyQuery("t1", FRONT_STEPS[1], MIXED_STEPS[2], window, bucket_s=3600, sample_size=10)
    disc = timed(repeat, lambda: discrepancy.run(ch, gap))
    plain = funnel.FunnelQuery("t1", FRONT_STEPS, 3600, window)
    strict = timed(repeat, lambda: funnel.run(ch, replace(plain, order="strict")))
    any_order = timed(repeat, lambda: funnel.run(ch, replace(plain, order="any")))
    excluded = timed(repeat, lambda: funnel.run(ch, replace(plain, exclusions=(funnel.FunnelExclusion(HOVER, 2, 4),))))
    mixed_query = funnel.FunnelQuery("t1", MIXED_STEPS, 3600, window)
    correlated = timed(repeat, lambda: correlation.run(ch, correlation.CorrelationQuery("t1", mixed_query)))
    print(f"  hand-written windowFunnel (4 steps)     {anchor:7.3f} s")
    print(f"  service funnel, same 4 steps           {ours:7.3f} s  ({ours / anchor:.2f}x the anchor)")
    print(f"  service funnel, 4 steps by device      {by_device:7.3f} s  ({by_device / anchor:.2f}x)")
    print(f"  strict order, same 4 steps             {strict:7.3f} s  ({strict / ours:.2f}x the service funnel)")
    print(f"  any order, same 4 steps                {any_order:7.3f} s  ({any_order / ours:.2f}x)")
    print(f"  ordered, one exclusion (steps 2-4)     {excluded:7.3f} s  ({excluded / ours:.2f}x)")
    print(f"  service funnel, front+back (3 steps)   {mixed:7.3f} s")
    print(f"  correlation of it, 6 properties        {correlated:7.3f} s  ({correlated / mixed:.2f}x that funnel)")
    print(f"  discrepancy, hourly buckets            {disc:7.3f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--engines", default="server,chdb")
    parser.add_argument("--repeat", type=int, default=3)
    arguments = parser.parse_args()
    engines = arguments.engines.split(",")
    if "server" in engines:
        with ClickHouseServer() as server, fresh_database(server.url) as ch:
            bench(f"clickhouse-server {'.'.join(map(str, ch.version()))}", ch, arguments.events, arguments.repeat)
    if "chdb" in engines:
        with tempfile.TemporaryDirectory() as directory, fresh_database(f"chdb://{directory}") as ch:
            bench(f"chDB {'.'.join(map(str, ch.version()))}", ch, arguments.events, arguments.repeat)


if __name__ == "__main__":
    main()
