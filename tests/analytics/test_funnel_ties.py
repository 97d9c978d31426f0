"""Events of one second are taken in funnel-step order, on both engines, whatever order they were stored in.

Event times are whole seconds, and a page's generate click and the gateway's REQUESTED event for the
same request usually share one. Found by the browser test on 18.16: a visitor's funnel read
(1,1,1,1,1), and (1,1,0,0,0) after the same visitor merely reloaded the page.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from inkloop.v1 import analytics_pb2 as pb
from inkloop_analytics import funnel
from inkloop_analytics.matchers import EventMatcher, TimeRange
from inkloop_analytics.service import Analytics

from .builders import backend, page_view, track

TENANT = "acme"
AT = datetime(2026, 3, 1, 7, 50, 41, tzinfo=UTC)  # the browser test's second; within a day before generator.NOW
RANGE = TimeRange(AT.replace(minute=0, second=0), AT.replace(hour=8, minute=0, second=0))
WINDOW_S = 86_400
STEPS = (
    EventMatcher("frontend", category="generate", action="exposure"),
    EventMatcher("frontend", category="generate", action="click"),
    EventMatcher("backend", backend_type="requested"),
    EventMatcher("backend", backend_type="succeeded"),
    EventMatcher("backend", backend_type="downloaded"),
)
REPEATS = 5  # the same question asked again must get the same answer


@dataclass
class Ids:
    """Event ids in a chosen order: tables are sorted by event id, so this is the order rows are read in."""

    next: int = 1

    def __call__(self) -> str:
        n = self.next
        self.next += 1
        # Increasing in both 64-bit halves: ClickHouse versions disagree on which half sorts first.
        return str(uuid.UUID(f"{n:08x}-{n:04x}-4{n:03x}-8{n:03x}-{n:012x}"))


def sec(seconds: int) -> datetime:
    return AT + timedelta(seconds=seconds - 41)


async def answer(analytics: Analytics, actor: str = "visitor") -> list[list[list[tuple[int, float]]]]:
    """Each series' (count, median) per step, asked REPEATS times."""
    answers = []
    for _ in range(REPEATS):
        series = await analytics.funnel(funnel.FunnelQuery(TENANT, STEPS, WINDOW_S, RANGE, actor=actor))
        answers.append([[(step.count, step.median_seconds_from_first) for step in one.steps] for one in series])
    return answers


async def ingest(analytics: Analytics, front: list[pb.FrontendEvent], back: list[pb.BackendEvent]) -> None:
    result = await analytics.ingest(front, back, "")
    assert result.count("accepted") == len(front) + len(back), result


async def test_the_browser_tests_visitor_reaches_every_step_before_and_after_a_reload(analytics: Analytics) -> None:
    ids = Ids()
    who: dict[str, Any] = {"tenant_id": TENANT, "user_id": "U"}

    def front(seconds: int, category: str, action: str, **fields: Any) -> pb.FrontendEvent:
        return track(sec(seconds), "V", category, action, event_id=ids(), **who, **fields)

    def back(seconds: int, kind: int) -> pb.BackendEvent:
        return backend(sec(seconds), kind, "R", event_id=ids(), **who)

    # Stored later steps first (smaller event ids, earlier inserts): the order a tie must not depend on.
    await ingest(
        analytics,
        [front(53, "download", "click", request_id="R"), front(52, "download", "exposure", request_id="R")],
        [
            back(53, pb.BACKEND_EVENT_TYPE_DOWNLOADED),
            back(52, pb.BACKEND_EVENT_TYPE_VIEWED),
            back(52, pb.BACKEND_EVENT_TYPE_SUCCEEDED),
            back(43, pb.BACKEND_EVENT_TYPE_REQUESTED),
            back(43, pb.BACKEND_EVENT_TYPE_STARTED),
            back(43, pb.BACKEND_EVENT_TYPE_QUEUED),
        ],
    )
    await ingest(analytics, [front(43, "generate", "click", request_id="R"), front(41, "generate", "exposure")], [])
    # Reached at 07:50:41, then 43, 43, 52, 53: seconds from the first step 0, 2, 2, 11, 12.
    want = [[(1, 0.0), (1, 2.0), (1, 2.0), (1, 11.0), (1, 12.0)]]
    assert await answer(analytics) == [want] * REPEATS
    assert await answer(analytics, actor="user") == [want] * REPEATS

    # The reload: a page view and another exposure 10 s after the download changes nothing.
    reload = [
        page_view(sec(54), "V", event_id=ids(), **who),
        front(54, "generate", "exposure"),
    ]
    await ingest(analytics, reload, [])
    assert await answer(analytics) == [want] * REPEATS
    assert await answer(analytics, actor="user") == [want] * REPEATS


@dataclass
class Visitor:
    """One visitor's step times in seconds after AT (None: the step never happens)."""

    number: int
    times: list[int | None]

    @property
    def name(self) -> str:
        return f"v{self.number:03d}"

    @property
    def request_id(self) -> str:
        return f"r{self.number:03d}"


def visitors(count: int) -> Iterator[Visitor]:
    """Exposure, click and request in one second; success and download in one later second (or the same)."""
    for number in range(count):
        start = 5 * number
        done = start + number % 3  # 0, 1 or 2 s later: success (and download) often in the request's second
        times: list[int | None] = [start, start, start, done, done]
        if number % 7 == 0:
            times[2:] = [None, None, None]  # no request reached the back end
        elif number % 5 == 0:
            times[3:] = [None, None]  # failed
        elif number % 2 == 0:
            times[4] = None  # never downloaded
        yield Visitor(number, times)


def hand_count(people: list[Visitor]) -> list[tuple[int, float]]:
    """The tie rule by hand: a step counts when it happens at or after the previous one, within the window."""
    reached: list[list[int]] = [[] for _ in STEPS]
    for person in people:
        first = previous = person.times[0]
        assert first is not None and previous is not None
        for step, moment in enumerate(person.times):
            if moment is None or moment < previous or moment - first > WINDOW_S:
                break
            reached[step].append(moment - first)
            previous = moment
    answer = []
    for step, seconds in enumerate(reached):
        ordered = sorted(seconds)
        median = float(ordered[len(ordered) // 2]) if step and ordered else 0.0  # quantileExact(0.5)
        answer.append((len(seconds), median))
    return answer


async def test_later_steps_stored_first_in_the_same_second_do_not_hide_earlier_ones(analytics: Analytics) -> None:
    people = list(visitors(60))
    ids = Ids()
    front: list[pb.FrontendEvent] = []
    back: list[pb.BackendEvent] = []
    # Built (and so stored and read) from the last step to the first, in separate inserts.
    kinds = {
        2: pb.BACKEND_EVENT_TYPE_REQUESTED,
        3: pb.BACKEND_EVENT_TYPE_SUCCEEDED,
        4: pb.BACKEND_EVENT_TYPE_DOWNLOADED,
    }
    for step in reversed(range(len(STEPS))):
        for person in people:
            moment = person.times[step]
            if moment is None:
                continue
            when = AT + timedelta(seconds=moment)
            common: dict[str, Any] = {"tenant_id": TENANT, "user_id": person.name, "event_id": ids()}
            if step in kinds:
                back.append(backend(when, kinds[step], person.request_id, **common))
            else:
                action = "exposure" if step == 0 else "click"
                extra = {"request_id": person.request_id} if step == 1 else {}
                front.append(track(when, person.name, "generate", action, **common, **extra))
        await ingest(analytics, front, back)
        front, back = [], []
    want = hand_count(people)
    assert [count for count, _ in want] == [60, 60, 51, 41, 21]  # the drop-offs in visitors(), counted once by hand
    assert await answer(analytics) == [[want]] * REPEATS
    assert await answer(analytics, actor="user") == [[want]] * REPEATS


@pytest.mark.parametrize("window_s", [1, 2])
async def test_the_window_stays_exact_in_seconds(analytics: Analytics, window_s: int) -> None:
    """Steps exactly window_s after the first count; one second more does not, whatever the step order."""
    ids = Ids()
    common: dict[str, Any] = {"tenant_id": TENANT, "user_id": "U"}
    front = [
        track(AT, "V", "generate", "exposure", event_id=ids(), **common),
        track(AT, "V", "generate", "click", request_id="R", event_id=ids(), **common),
    ]
    back = [
        backend(AT + timedelta(seconds=window_s), pb.BACKEND_EVENT_TYPE_REQUESTED, "R", event_id=ids(), **common),
        backend(AT + timedelta(seconds=window_s), pb.BACKEND_EVENT_TYPE_SUCCEEDED, "R", event_id=ids(), **common),
        backend(AT + timedelta(seconds=window_s + 1), pb.BACKEND_EVENT_TYPE_DOWNLOADED, "R", event_id=ids(), **common),
    ]
    await ingest(analytics, front, back)
    [series] = await analytics.funnel(funnel.FunnelQuery(TENANT, STEPS, window_s, RANGE))
    assert [(step.count, step.median_seconds_from_first) for step in series.steps] == [
        (1, 0.0),
        (1, 0.0),
        (1, float(window_s)),
        (1, float(window_s)),
        (0, 0.0),
    ]


async def test_an_event_matching_two_steps_counts_for_both_in_step_order(analytics: Analytics) -> None:
    """Step 1 is any generate event, step 2 a generate click: a lone click is both, as on current ClickHouse."""
    steps = (
        EventMatcher("frontend", category="generate"),
        EventMatcher("frontend", category="generate", action="click"),
        EventMatcher("backend", backend_type="requested"),
    )
    ids = Ids()
    common: dict[str, Any] = {"tenant_id": TENANT}
    back = [
        backend(sec(61), pb.BACKEND_EVENT_TYPE_REQUESTED, "R2", event_id=ids(), **common),
        backend(sec(61), pb.BACKEND_EVENT_TYPE_REQUESTED, "R1", event_id=ids(), **common),
    ]
    front = [
        track(sec(61), "V2", "generate", "click", request_id="R2", event_id=ids(), **common),
        track(sec(61), "V1", "generate", "click", request_id="R1", event_id=ids(), **common),
        track(sec(51), "V1", "generate", "exposure", event_id=ids(), **common),
    ]
    await ingest(analytics, front, back)
    query = funnel.FunnelQuery(TENANT, steps, WINDOW_S, RANGE)
    for _ in range(REPEATS):
        [series] = await analytics.funnel(query)
        # V1 from its exposure: 10 s to the click and the request; V2 from its click: 0 s. quantileExact → 10.
        assert [(step.count, step.median_seconds_from_first) for step in series.steps] == [
            (2, 0.0),
            (2, 10.0),
            (2, 10.0),
        ]
