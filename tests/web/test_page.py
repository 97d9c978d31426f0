"""The creation page in headless Chromium against the real system: generate (progress, image),
inpaint (a mask painted with the mouse), outpaint, an instruction edit, download; then the front-end and back-end events
are in ClickHouse, matched request by request (Discrepancy), and a blocked tracker shows as back-only."""

from __future__ import annotations

import asyncio
import io
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from PIL import Image

from inkloop.v1 import analytics_pb2 as pb

from .conftest import System

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(240)]

SHOTS = Path(os.environ.get("INKLOOP_SCREENSHOTS") or tempfile.mkdtemp(prefix="inkloop-shots-"))
# Records every status line the page shows, so the test sees progress however fast the model is.
STATUS_LOG = """
window.__statuses = [];
new MutationObserver(() => {
  const text = document.getElementById('status-text')?.textContent;
  if (text && window.__statuses.at(-1) !== text) window.__statuses.push(text);
}).observe(document, {subtree: true, childList: true, characterData: true});
"""


def _stub(system: System) -> Any:
    assert system.analytics is not None
    return system.analytics.stub


def _range() -> pb.TimeRange:
    start, end = Timestamp(), Timestamp()
    start.FromSeconds(int(time.time()) - 3600)
    end.FromSeconds(int(time.time()) + 3600)
    return pb.TimeRange(start=start, end=end)


async def _discrepancy(system: System) -> pb.DiscrepancyResponse:
    return await _stub(system).Discrepancy(
        pb.DiscrepancyRequest(
            tenant_id="acme",
            frontend=pb.EventMatcher(source=pb.EVENT_SOURCE_FRONTEND, category="generate", action="click"),
            backend=pb.EventMatcher(source=pb.EVENT_SOURCE_BACKEND, backend_type=pb.BACKEND_EVENT_TYPE_REQUESTED),
            range=_range(),
            bucket_s=0,
            sample_size=100,
        )
    )


async def _until(check: Any, within_s: float = 30.0) -> Any:
    deadline = time.monotonic() + within_s
    while True:
        result = await check()
        if result or time.monotonic() > deadline:
            return result
        await asyncio.sleep(0.2)


async def _open(browser: Any, system: System, request_ids: list[str]) -> Any:
    context = await browser.new_context(accept_downloads=True, viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    await page.add_init_script(STATUS_LOG)
    page.on(
        "request",
        lambda r: (
            request_ids.append(json.loads(r.post_data)["requestId"])
            if r.url.endswith("/v1/jobs") and r.method == "POST"
            else None
        ),
    )
    return page


async def _login_and_generate(page: Any, system: System) -> None:
    await page.goto(system.url + "/")
    await page.locator("#key-panel").wait_for(state="visible")
    await page.fill("#api-key", system.secrets["user"])
    await page.click("#save-key")
    await page.fill("#prompt", "一只红狐狸 in the snow, watercolor")
    await page.fill("#negative", "blurry")
    await page.select_option("#size", "128x128")
    await page.fill("#steps", "3")
    await page.fill("#seed", "7")
    await page.click("#generate")
    await page.locator("#history li").first.wait_for(timeout=60_000)


async def _history(page: Any, count: int) -> None:
    await page.wait_for_function(f"document.querySelectorAll('#history li').length >= {count}", timeout=60_000)
    await page.wait_for_function("document.getElementById('image').complete")


async def test_create_inpaint_outpaint_edit_download_and_events_match(system: System, browser: Any) -> None:
    request_ids: list[str] = []
    page = await _open(browser, system, request_ids)

    # 1. Generate: progress per step, then the image.
    await _login_and_generate(page, system)
    await _history(page, 1)
    statuses = await page.evaluate("window.__statuses")
    assert any(s.startswith("生成中 Step") for s in statuses), statuses
    assert statuses[-1].endswith("Done")
    assert await page.evaluate("document.getElementById('image').naturalWidth") == 128
    await page.screenshot(path=SHOTS / "1-generated.png", full_page=True)

    # 2. Inpaint: paint a stroke on the canvas with the mouse, then repaint.
    await page.click("#inpaint")
    box = await page.locator("#mask").bounding_box()
    await page.mouse.move(box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.3)
    await page.mouse.down()
    for step in range(1, 11):
        await page.mouse.move(box["x"] + box["width"] * (0.3 + step * 0.04), box["y"] + box["height"] * 0.5)
    await page.mouse.up()
    painted = await page.evaluate(
        "(() => { const c = document.getElementById('mask');"
        " return c.getContext('2d').getImageData(0, 0, c.width, c.height).data.filter((v, i) => i % 4 === 3 && v)"
        ".length; })()"
    )
    assert painted > 100
    await page.screenshot(path=SHOTS / "2-mask.png", full_page=True)
    await page.click("#run-inpaint")
    await _history(page, 2)
    assert await page.locator("#history li").first.inner_text() == "inpaint · 128×128"

    # 3. Outpaint: extend the right side by 64 pixels.
    await page.click("#outpaint")
    await page.fill("#pixels", "64")
    await page.click("#run-outpaint")
    await _history(page, 3)
    assert await page.evaluate("document.getElementById('image').naturalWidth") == 192
    await page.screenshot(path=SHOTS / "3-outpainted.png", full_page=True)

    # 4. Edit: an instruction for the whole image, run by the edit model at the image's size.
    await page.click("#edit")
    await page.fill("#instruction", "把天空变成粉色 make the sky pink")
    await page.screenshot(path=SHOTS / "4-edit.png", full_page=True)
    await page.click("#run-edit")
    await _history(page, 4)
    assert await page.locator("#history li").first.inner_text() == "edit · 192×128"
    assert await page.locator("#edit-panel").is_hidden()  # the result replaced the panel

    # 5. Download as WebP.
    await page.select_option("#format", "webp")
    async with page.expect_download() as download_info:
        await page.click("#download")
    download = await download_info.value
    data = await asyncio.to_thread(Path(await download.path()).read_bytes)
    assert Image.open(io.BytesIO(data)).format == "WEBP"

    # 6. Hide the page (flushes the tracker), then every request is matched front to back.
    await page.evaluate("document.dispatchEvent(new Event('visibilitychange'))")
    assert len(request_ids) == 4

    async def all_matched() -> pb.DiscrepancyResponse | None:
        result = await _discrepancy(system)
        return result if result.total.matched == 4 else None

    result = await _until(all_matched)
    assert result is not None, await _discrepancy(system)
    total = result.total
    assert (total.frontend, total.backend, total.matched) == (4, 4, 4)
    assert (total.frontend_only, total.backend_only, total.loss_rate) == (0, 0, 0.0)

    async def adopted() -> pb.FeatureAdoptionResponse | None:
        reply = await _stub(system).FeatureAdoption(pb.FeatureAdoptionRequest(tenant_id="acme", range=_range()))
        names = {f.feature for f in reply.features if f.exposures and f.clicks}
        return reply if {"generate", "inpaint", "outpaint", "edit", "download"} <= names else None

    adoption = await _until(adopted)
    assert adoption is not None and adoption.page_views == 1 and adoption.unique_visitors == 1

    # The user kept every image: the first three were repainted, extended and edited (each the base of the
    # next request, found by its bytes), the last downloaded. Perceived success is 4 of 4.
    async def all_accepted() -> pb.OutcomesResponse | None:
        reply = await _stub(system).Outcomes(pb.OutcomesRequest(tenant_id="acme", range=_range()))
        return reply if reply.groups and reply.groups[0].accepted == 4 else None

    outcomes = await _until(all_accepted)
    assert outcomes is not None, await _stub(system).Outcomes(pb.OutcomesRequest(tenant_id="acme", range=_range()))
    [everything] = outcomes.groups
    assert (everything.requests, everything.perceived_success) == (4, 1.0)
    by_kind = await _stub(system).Outcomes(pb.OutcomesRequest(tenant_id="acme", range=_range(), breakdown="kind"))
    assert {group.value: group.requests for group in by_kind.groups} == {
        "text_to_image": 1,
        "inpaint": 1,
        "outpaint": 1,
        "edit": 1,
    }

    # 7. The dashboard draws the same figures for the analyst.
    await page.goto(system.url + "/dashboard")
    await page.fill("#api-key", system.secrets["analyst"])
    await page.click("#save-key")
    await page.locator("#funnel canvas").wait_for()
    await page.locator("#discrepancy canvas").wait_for()
    await page.locator("#outcomes canvas").wait_for()
    await page.wait_for_timeout(500)  # chart animations
    assert await page.locator("#error").is_hidden()
    await page.screenshot(path=SHOTS / "5-dashboard.png", full_page=True)
    await page.context.close()


async def test_blocked_tracker_shows_requests_as_back_only(system: System, browser: Any) -> None:
    request_ids: list[str] = []
    page = await _open(browser, system, request_ids)
    await page.route("**/collect", lambda route: route.abort())
    await _login_and_generate(page, system)
    await _history(page, 1)
    await page.screenshot(path=SHOTS / "4-blocked-tracker.png", full_page=True)

    async def back_only() -> pb.DiscrepancyResponse | None:
        result = await _discrepancy(system)
        return result if result.total.backend_only == 1 else None

    result = await _until(back_only)
    assert result is not None, await _discrepancy(system)
    assert list(result.backend_only_sample) == request_ids
    assert (result.total.frontend, result.total.matched, result.total.frontend_only) == (0, 0, 0)
    await page.context.close()


async def _downloads(system: System) -> tuple[int, int]:
    """Downloads as the analyst sees them: the dashboard funnel's last step and the A/B panel's count."""
    async with aiohttp.ClientSession(system.url) as http:
        async with http.get("/v1/analytics/funnel", headers=system.auth("analyst")) as reply:
            funnel = await reply.json()
        async with http.get("/v1/analytics/variants", headers=system.auth("analyst")) as reply:
            variants = await reply.json()
    series = funnel.get("series", [])
    last_step = int(series[0]["steps"][-1].get("count", 0)) if series else 0
    return last_step, sum(int(v.get("downloads", 0)) for v in variants.get("variants", []))


def _stored(system: System, kind: str) -> int:
    """Back-end events of a type in ClickHouse: proof that what the gateway sent has arrived."""
    from inkloop_analytics.storage import connect

    assert system.analytics is not None
    with connect(system.analytics.app.settings.clickhouse_url) as ch:
        [(count,)] = ch.query("SELECT uniqExact(event_id) FROM backend_events WHERE type = %(kind)s", {"kind": kind})
    return int(count)


async def _page_views(system: System) -> int:
    reply = await _stub(system).FeatureAdoption(pb.FeatureAdoptionRequest(tenant_id="acme", range=_range()))
    return reply.page_views


async def test_a_shown_image_is_not_a_download_until_the_user_downloads_it(system: System, browser: Any) -> None:
    """Generate and look: 0 downloads; click download: exactly 1; reload the page: still 1 — in the
    dashboard funnel's last step, in its A/B figure, and in the events stored."""
    page = await _open(browser, system, [])
    await _login_and_generate(page, system)
    await _history(page, 1)
    await page.evaluate("document.dispatchEvent(new Event('visibilitychange'))")  # flush the tracker

    async def shown() -> bool:
        return await asyncio.to_thread(_stored, system, "viewed") >= 1

    assert await _until(shown, 90), "the display never reached analytics"
    assert await _downloads(system) == (0, 0)

    async with page.expect_download() as download_info:
        await page.click("#download")
    await (await download_info.value).path()

    async def downloaded_once() -> bool:
        return await _downloads(system) == (1, 1)

    assert await _until(downloaded_once, 90), await _downloads(system)

    await page.reload()
    await page.locator("#generate").wait_for()
    await page.evaluate("document.dispatchEvent(new Event('visibilitychange'))")

    async def reload_seen() -> bool:
        return await _page_views(system) >= 2

    assert await _until(reload_seen, 90), "the reload's page view never reached analytics"
    assert await _downloads(system) == (1, 1)
    assert await asyncio.to_thread(_stored, system, "downloaded") == 1
    await page.screenshot(path=SHOTS / "6-after-download-and-reload.png", full_page=True)
    await page.context.close()


async def test_an_error_never_stands_beside_a_submitting_status(system: System, browser: Any) -> None:
    page = await _open(browser, system, [])
    await page.goto(system.url + "/")
    await page.locator("#key-panel").wait_for(state="visible")
    await page.fill("#api-key", "ink_not-a-key")
    await page.click("#save-key")
    await page.fill("#prompt", "a red fox")
    await page.click("#generate")
    await page.locator("#error").wait_for(state="visible")
    assert await page.locator("#error").get_attribute("data-code") == "UNAUTHENTICATED"
    status = page.locator("#status")
    assert await status.is_hidden() or "Submitting" not in await status.inner_text()
    await page.context.close()
