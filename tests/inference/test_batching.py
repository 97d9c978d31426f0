"""The dynamic batcher's scheduling rules, with a plain function standing in for the pipeline call so
each rule can be observed exactly (the real pipeline under the batcher is tested in test_server.py)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

import pytest

from inkloop import errors
from inkloop_inference.batching import Batcher, Done, Queued, Step


class Recorder:
    """Runs "requests" (strings whose first letter is their shape) and records each call's batch."""

    def __init__(self, seconds: float = 0.05, steps: int = 3) -> None:
        self.calls: list[list[str]] = []
        self.seconds = seconds
        self.steps = steps
        self.gate = threading.Event()
        self.gate.set()

    def __call__(
        self, requests: list[str], *, on_step: Callable[[int, int], None], should_cancel: Callable[[], bool]
    ) -> list[str]:
        self.gate.wait()
        self.calls.append(list(requests))
        for step in range(1, self.steps + 1):
            if should_cancel():
                raise errors.Cancelled("cancelled")
            time.sleep(self.seconds / self.steps)
            on_step(step, self.steps)
        if any(r.endswith("!") for r in requests):
            raise RuntimeError("pipeline failed")
        return [r.upper() for r in requests]


def _batcher(run: Recorder, **overrides: float) -> Batcher[str, str]:
    options = {"max_batch_size": 4, "max_queue_delay_s": 0.1, "capacity": 8, **overrides}
    batcher: Batcher[str, str] = Batcher(run, lambda r: r[0], **options)  # type: ignore[arg-type]
    batcher.start()
    return batcher


async def _run(batcher: Batcher[str, str], request: str) -> list[object]:
    return [event async for event in batcher.generate(request)]


async def test_compatible_requests_within_the_window_share_one_call() -> None:
    run = Recorder()
    batcher = _batcher(run)
    results = await asyncio.gather(*(_run(batcher, r) for r in ["a1", "a2", "a3"]))
    await batcher.stop()
    assert run.calls == [["a1", "a2", "a3"]]
    assert [events[-1].result for events in results] == ["A1", "A2", "A3"]  # type: ignore[attr-defined]
    assert all(events[-1].batch_size == 3 for events in results)  # type: ignore[attr-defined]


async def test_batches_never_exceed_the_maximum() -> None:
    run = Recorder()
    batcher = _batcher(run, max_batch_size=2)
    await asyncio.gather(*(_run(batcher, f"a{i}") for i in range(5)))
    await batcher.stop()
    assert [len(call) for call in run.calls] == [2, 2, 1]


async def test_requests_after_the_window_wait_for_the_next_call() -> None:
    run = Recorder(seconds=0.2)
    batcher = _batcher(run, max_queue_delay_s=0.02)
    first = asyncio.create_task(_run(batcher, "a1"))
    await asyncio.sleep(0.1)  # a1's window has closed and it is running
    await asyncio.gather(first, _run(batcher, "a2"))
    await batcher.stop()
    assert run.calls == [["a1"], ["a2"]]


async def test_the_oldest_request_opens_the_next_batch() -> None:
    run = Recorder()
    run.gate.clear()  # hold the worker so a queue builds up
    batcher = _batcher(run, max_queue_delay_s=0.0)
    running = asyncio.create_task(_run(batcher, "a0"))
    await asyncio.sleep(0.05)  # a0 has left the queue and is held at the gate
    tasks = [asyncio.create_task(_run(batcher, r)) for r in ["b1", "a1", "b2", "c1", "a2"]]
    await asyncio.sleep(0.05)
    run.gate.set()
    await asyncio.gather(running, *tasks)
    await batcher.stop()
    # b1 is the oldest waiting request: it opens the next batch and takes b2 along; then a1 with a2.
    assert run.calls == [["a0"], ["b1", "b2"], ["a1", "a2"], ["c1"]]


async def test_positions_are_published_as_the_queue_moves() -> None:
    run = Recorder()
    run.gate.clear()
    batcher = _batcher(run, max_queue_delay_s=0.0, max_batch_size=1)
    tasks = [asyncio.create_task(_run(batcher, f"{shape}1")) for shape in "abc"]
    await asyncio.sleep(0.05)
    run.gate.set()
    events = await asyncio.gather(*tasks)
    await batcher.stop()
    positions = [[e.position for e in stream if isinstance(e, Queued)] for stream in events]
    assert positions == [[0], [1, 0], [2, 1, 0]]
    steps = [[e.step for e in stream if isinstance(e, Step)] for stream in events]
    assert steps == [[1, 2, 3]] * 3
    assert all(isinstance(stream[-1], Done) for stream in events)


async def test_leaving_while_queued_removes_the_request() -> None:
    run = Recorder()
    run.gate.clear()
    batcher = _batcher(run, max_queue_delay_s=0.0, max_batch_size=1)
    first = asyncio.create_task(_run(batcher, "a1"))
    await asyncio.sleep(0.02)
    leaving = batcher.generate("b1")
    assert await anext(leaving) == Queued(0)
    assert batcher.depth == 1
    await leaving.aclose()
    assert batcher.depth == 0
    run.gate.set()
    await first
    await batcher.stop()
    assert run.calls == [["a1"]]


async def test_a_running_batch_stops_when_all_its_callers_left() -> None:
    run = Recorder(seconds=2.0, steps=20)
    batcher = _batcher(run, max_queue_delay_s=0.0)
    stream = batcher.generate("a1")
    async for event in stream:
        if isinstance(event, Step):
            break
    await stream.aclose()
    events = await _run(batcher, "b1")
    await batcher.stop()
    assert isinstance(events[-1], Done)
    assert events[-1].queue_s < 0.5  # would be ~1.9 s had the cancelled call run on


async def test_a_full_queue_is_resource_exhausted_with_a_retry_delay() -> None:
    run = Recorder()
    run.gate.clear()
    batcher = _batcher(run, capacity=2, max_queue_delay_s=0.0, max_batch_size=1)
    tasks = [asyncio.create_task(_run(batcher, "a0"))]
    await asyncio.sleep(0.05)  # a0 has left the queue and is held at the gate
    tasks += [asyncio.create_task(_run(batcher, f"a{i}")) for i in (1, 2)]
    await asyncio.sleep(0.05)
    with pytest.raises(errors.ResourceExhausted) as caught:
        await _run(batcher, "a3")
    assert caught.value.retry_after_s is not None and caught.value.retry_after_s > 0
    run.gate.set()
    await asyncio.gather(*tasks)
    await batcher.stop()


async def test_a_failed_call_fails_every_request_in_it_and_the_batcher_goes_on() -> None:
    run = Recorder()
    batcher = _batcher(run)
    outcomes = await asyncio.gather(_run(batcher, "a1"), _run(batcher, "a2!"), return_exceptions=True)
    after = await _run(batcher, "b1")
    await batcher.stop()
    assert all(isinstance(o, RuntimeError) for o in outcomes)
    assert after[-1].result == "B1"  # type: ignore[attr-defined]
