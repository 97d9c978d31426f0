"""Answers to the queries about a generated day, computed from the generator's own records."""

from __future__ import annotations

from collections import defaultdict
from datetime import timedelta

from .generator import LENGTH_EDGES, T0, WINDOW_S, Day, in_range, quantile_exact


def funnel(day: Day, breakdown: str = "") -> dict[str, list[tuple[int, float]]]:
    """breakdown value -> [(count, median seconds from first)] for page view → click → requested → succeeded."""
    requests = {request.request_id: request for request in day.requests if request.visitor}
    reached: dict[str, list[list[int]]] = defaultdict(lambda: [[], [], [], []])
    for visitor in day.visitors:
        if not in_range(visitor.page_view_at):
            continue
        start = visitor.page_view_at
        limit = start + timedelta(seconds=WINDOW_S)
        times = [start]
        click = visitor.click
        if click is not None and click.at <= limit:
            times.append(click.at)
            request = requests.get(click.request_id)
            # In the click's second too: within a second, events are taken in step order.
            if request is not None and click.at <= request.at <= limit:
                times.append(request.at)
                if request.succeeded_at is not None and request.succeeded_at <= limit:
                    times.append(request.succeeded_at)
        request = requests.get(click.request_id) if click else None
        value = {"": "", "device": visitor.device, "variant": request.variant if request else ""}[breakdown]
        for step, moment in enumerate(times):
            reached[value][step].append(int((moment - start).total_seconds()))
    return {
        value: [(len(seconds), quantile_exact(seconds, 0.5) if step else 0.0) for step, seconds in enumerate(steps)]
        for value, steps in reached.items()
    }


def discrepancy(day: Day, bucket_s: int) -> list[dict[str, int]]:
    """Per bucket (in order): the DiscrepancyBucket counters."""
    sides: dict[str, dict[str, list]] = defaultdict(lambda: {"front": [], "back": []})
    for click in day.clicks:
        for extra, event_id in enumerate(click.event_ids):
            moment = click.at + timedelta(seconds=extra)
            if in_range(moment):
                key = click.request_id or f"~{event_id}"
                sides[key]["front"].append(moment)
    for request in day.requests:
        if in_range(request.at):
            sides[request.request_id]["back"].append(request.at)
    buckets: dict[int, dict[str, int]] = {}
    for side in sides.values():
        front, back = side["front"], side["back"]
        first = min(front) if front else min(back)
        index = int((first - T0).total_seconds()) // bucket_s
        bucket = buckets.setdefault(index, defaultdict(int))
        bucket["frontend"] += len(front)
        bucket["backend"] += len(back)
        bucket["matched"] += bool(front and back)
        bucket["frontend_only"] += bool(front and not back)
        bucket["backend_only"] += bool(back and not front)
        bucket["frontend_duplicates"] += max(len(front) - 1, 0)
        bucket["backend_duplicates"] += max(len(back) - 1, 0)
    return [dict(buckets[index]) for index in sorted(buckets)]


def prompt_groups(day: Day) -> tuple[dict[int, tuple[int, int, float]], dict[str, tuple[int, int, float]]]:
    """(by length bucket index, by language): (requests, successes, median dwell)."""
    dwell = {click.request_id: click.dwell_s for click in day.clicks if click.request_id}
    by_length: dict[int, list] = defaultdict(lambda: [0, 0, []])
    by_language: dict[str, list] = defaultdict(lambda: [0, 0, []])
    for request in day.requests:
        if not in_range(request.at):
            continue
        bucket = sum(1 for edge in LENGTH_EDGES if edge < request.length)
        for group in (by_length[bucket], by_language[request.language]):
            group[0] += 1
            group[1] += request.succeeded_at is not None
            if request.visitor is not None:
                group[2].append(dwell[request.request_id])
    return (
        {key: (value[0], value[1], quantile_exact(value[2], 0.5)) for key, value in by_length.items()},
        {key: (value[0], value[1], quantile_exact(value[2], 0.5)) for key, value in by_language.items()},
    )


def adoption(day: Day) -> tuple[dict[str, tuple[int, int, int, int]], int, int]:
    """(feature -> (exposures, clicks, exposed visitors, clicked visitors), page views, unique visitors)."""
    features: dict[str, list] = defaultdict(lambda: [0, 0, set(), set()])
    visitors, page_views = set(), 0
    for visitor in day.visitors:
        if in_range(visitor.page_view_at):
            page_views += 1
            visitors.add(visitor.visitor_id)
        for visitor_id, action in day.exposures["inpaint"]:
            if visitor_id != visitor.visitor_id:
                continue
            at = visitor.page_view_at + timedelta(seconds=2 if action == "exposure" else 3)
            if in_range(at):
                entry = features["inpaint"]
                entry[0 if action == "exposure" else 1] += 1
                entry[2 if action == "exposure" else 3].add(visitor_id)
                visitors.add(visitor_id)
    for click in day.clicks:
        for extra in range(len(click.event_ids)):
            if in_range(click.at + timedelta(seconds=extra)):
                features["generate"][1] += 1
                features["generate"][3].add(click.visitor)
                visitors.add(click.visitor)
    answer = {name: (entry[0], entry[1], len(entry[2]), len(entry[3])) for name, entry in features.items()}
    return answer, page_views, len(visitors)


def variants(day: Day) -> dict[str, tuple[int, int, float, float, int]]:
    """variant -> (requests, successes, p50, p95, downloads)."""
    figures: dict[str, list] = defaultdict(lambda: [0, [], 0])
    for request in day.requests:
        entry = figures[request.variant]
        entry[0] += in_range(request.at)
        if in_range(request.succeeded_at):
            entry[1].append(request.latency_s)
        if request.succeeded_at is not None and in_range(request.succeeded_at + timedelta(seconds=5)):
            entry[2] += request.downloads
    return {
        name: (entry[0], len(entry[1]), quantile_exact(entry[1], 0.5), quantile_exact(entry[1], 0.95), entry[2])
        for name, entry in figures.items()
    }
