"""The gateway's stop always ends: a part that does not stop in time is reported and left behind."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from inkloop_gateway.app import _stop_within


async def test_a_part_that_does_not_stop_is_reported_where_it_waits_and_left_behind(
    caplog: pytest.LogCaptureFixture,
) -> None:
    swallowed = asyncio.Event()

    async def wait_for_a_reply_that_never_comes() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:  # swallowed, as redis-py can while it closes a connection
            swallowed.set()
            await asyncio.sleep(0.2)

    async def stubborn_stop() -> None:
        await wait_for_a_reply_that_never_comes()

    caplog.set_level(logging.ERROR, logger="inkloop_gateway.app")
    started = time.monotonic()
    await _stop_within("stubborn", stubborn_stop(), timeout_s=0.3)
    assert time.monotonic() - started < 2
    [record] = caplog.records
    assert "stopping the gateway's stubborn took over 0 s" in record.getMessage()
    assert "stubborn_stop (" in record.getMessage() and "wait_for_a_reply_that_never_comes (" in record.getMessage()
    await asyncio.wait_for(swallowed.wait(), 2)  # it was cancelled, once, and ends by itself


async def test_a_part_whose_stop_fails_is_logged_and_the_rest_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    async def failing_stop() -> None:
        raise ConnectionError("redis went away")

    caplog.set_level(logging.ERROR, logger="inkloop_gateway.app")
    await _stop_within("store", failing_stop(), timeout_s=1.0)
    [record] = caplog.records
    assert record.getMessage() == "stopping the gateway's store failed"
    assert record.exc_info is not None and isinstance(record.exc_info[1], ConnectionError)
