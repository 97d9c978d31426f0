"""The page's nudges in headless Chromium against the real system: template suggestions beside the
prompt (shown → picked → used → accepted, as RecommendTemplates counts them), and the built-in
inpaint-hint experiment (a visitor regenerates twice, sees the hint only in the `hint` arm, repaints
and downloads; the readout counts one conversion there and none in the control)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import grpc
import pytest

from inkloop.v1 import analytics_pb2 as pb
from inkloop.v1 import gateway_pb2_grpc
from inkloop.visitors import daily_visitor_id
from inkloop_gateway.admission.keys import Role

from .conftest import TENANT, System
from .test_page import SHOTS, _history, _range, _stub, _until

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(300)]


def _queries(system: System) -> tuple[gateway_pb2_grpc.AnalyticsQueryServiceStub, grpc.aio.Channel]:
    channel = grpc.aio.insecure_channel(system.grpc_target)
    return gateway_pb2_grpc.AnalyticsQueryServiceStub(channel), channel


def _analyst(system: System) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {system.secrets['analyst']}"),)


async def _visitor_page(browser: Any, system: System, user_agent: str, key: str | None = None) -> Any:
    context = await browser.new_context(
        accept_downloads=True, viewport={"width": 1280, "height": 900}, user_agent=user_agent
    )
    page = await context.new_page()
    await page.goto(system.url + "/")
    await page.locator("#key-panel").wait_for(state="visible")
    await page.fill("#api-key", key or system.secrets["user"])
    await page.click("#save-key")
    await page.select_option("#size", "128x128")
    await page.fill("#steps", "2")
    return page


async def _generate(page: Any, prompt: str, results: int) -> None:
    await page.fill("#prompt", prompt)
    await page.click("#generate")
    await _history(page, results)


async def test_a_picked_suggestion_is_counted_from_shown_to_accepted(system: System, browser: Any) -> None:
    page = await _visitor_page(browser, system, "inkloop-suggestions")
    suggestions = page.locator("#suggestions button")
    await suggestions.first.wait_for()
    assert await suggestions.count() == 3  # the English catalog (no data yet: catalog order)
    await page.fill("#prompt", "一只猫")
    await page.wait_for_function(
        "[...document.querySelectorAll('#suggestions button')].every(b => b.dataset.templateId.endsWith('.zh'))"
    )
    first = suggestions.first
    template_id = await first.get_attribute("data-template-id")
    pattern = await first.get_attribute("title")
    await first.click()
    assert await page.input_value("#prompt") == pattern
    await page.screenshot(path=SHOTS / "7-template-picked.png", full_page=True)
    # The visitor fills the slots in (the prompt stays made from the template, and reads as Chinese).
    await page.fill("#prompt", re.sub(r"\{[a-z_]+\}", "猫", pattern or ""))
    await page.click("#generate")
    await _history(page, 1)
    async with page.expect_download() as download_info:
        await page.click("#download")
    await (await download_info.value).path()
    await page.evaluate("document.dispatchEvent(new Event('visibilitychange'))")  # flush the tracker

    queries, channel = _queries(system)
    request = pb.RecommendTemplatesRequest(language_class="zh", range=_range())

    async def loop_closed() -> pb.TemplateRecommendation | None:
        reply = await queries.RecommendTemplates(request, metadata=_analyst(system))
        mine = [t for t in reply.templates if t.template_id == template_id]
        return mine[0] if mine and mine[0].accepted == 1 and mine[0].picked == 1 else None

    used = await _until(loop_closed, 90)
    reply = await queries.RecommendTemplates(request, metadata=_analyst(system))
    await channel.close()
    assert used is not None, reply
    assert (used.shown, used.picked, used.requests, used.accepted) == (1, 1, 1, 1)
    assert used.name  # filled in by the gateway from the catalog
    await page.context.close()


async def test_the_inpaint_hint_shows_in_its_arm_only_and_counts_the_conversion(system: System, browser: Any) -> None:
    experiment = await system.gateway.experiments.get(TENANT, "inpaint_hint")
    day = datetime.now(UTC).date()
    by_arm: dict[str, str] = {}
    for i in range(64):
        agent = f"inkloop-visitor-{i}"
        visitor = daily_visitor_id("127.0.0.1", agent, TENANT, day, system.gateway.settings.web_visitor_secret)
        by_arm.setdefault(experiment.arm_of(visitor).name, agent)
    assert set(by_arm) == {"control", "hint"}

    # Two people (two keys, so two users for outcomes), each regenerating one intent twice.
    keys = {"hint": system.secrets["user"], "control": system.gateway.keys.create(TENANT, Role.USER, "second")[1]}
    pages = {}
    for arm, agent in by_arm.items():
        page = pages[arm] = await _visitor_page(browser, system, agent, keys[arm])
        for results in (1, 2, 3):
            assert await page.locator("#inpaint-hint").is_hidden()  # fewer than two regenerations: no hint
            await _generate(page, "一只红狐狸在雪地里奔跑，水彩风格", results)
    hint_page, control_page = pages["hint"], pages["control"]
    await hint_page.locator("#inpaint-hint").wait_for(state="visible")
    assert await control_page.locator("#inpaint-hint").is_hidden()
    await hint_page.screenshot(path=SHOTS / "8-inpaint-hint.png", full_page=True)

    await hint_page.click("#try-inpaint")
    await hint_page.locator("#inpaint-panel").wait_for(state="visible")
    box = await hint_page.locator("#mask").bounding_box()
    await hint_page.mouse.move(box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.5)
    await hint_page.mouse.down()
    await hint_page.mouse.move(box["x"] + box["width"] * 0.7, box["y"] + box["height"] * 0.5, steps=8)
    await hint_page.mouse.up()
    await hint_page.click("#run-inpaint")
    await _history(hint_page, 4)
    assert await hint_page.locator("#inpaint-hint").is_hidden()  # repainting is keeping the image
    async with hint_page.expect_download() as download_info:
        await hint_page.click("#download")
    await (await download_info.value).path()
    for page in pages.values():
        await page.evaluate("document.dispatchEvent(new Event('visibilitychange'))")

    queries, channel = _queries(system)

    async def read_out() -> pb.ExperimentResultsResponse | None:
        reply = await queries.ExperimentResults(
            pb.ExperimentResultsRequest(experiment="inpaint_hint"), metadata=_analyst(system)
        )
        inpaint = {a.arm: (a.exposures, a.conversions) for a in reply.goals[0].arms} if reply.goals else {}
        accepted = {a.arm: (a.exposures, a.conversions) for a in reply.goals[1].arms} if reply.goals else {}
        done = inpaint == {"control": (1, 0), "hint": (1, 1)} and accepted.get("hint") == (1, 1)
        return reply if done else None

    readout = await _until(read_out, 90)
    await channel.close()
    assert readout is not None
    assert [goal.goal for goal in readout.goals] == ["inpaint started", "accepted"]
    assert {a.arm: (a.exposures, a.conversions) for a in readout.goals[1].arms} == {"control": (1, 0), "hint": (1, 1)}
    assert all(goal.verdict == "not enough data" and not goal.enough_data for goal in readout.goals)

    # The hint visitor's repainted base and the downloaded repaint are accepted; none of the others was.
    # (Which of those count as regenerated depends on whole seconds between clicks: event times are
    # seconds, and a request in the same second as the one before is not "later".)
    # The download's event may reach analytics after the readout above was complete: wait for it.
    async def both_accepted() -> pb.OutcomesResponse | None:
        reply = await _stub(system).Outcomes(pb.OutcomesRequest(tenant_id=TENANT, range=_range()))
        return reply if reply.groups and reply.groups[0].accepted >= 2 else None

    outcomes = await _until(both_accepted, 30) or await _stub(system).Outcomes(
        pb.OutcomesRequest(tenant_id=TENANT, range=_range())
    )
    [everything] = outcomes.groups
    assert (everything.requests, everything.accepted, everything.failed) == (7, 2, 0)
    assert everything.regenerated + everything.abandoned == 5
    for page in pages.values():
        await page.context.close()
