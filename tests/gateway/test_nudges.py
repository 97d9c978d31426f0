"""Templates and experiments: the books on both stores, the admin API, and template ids on requests."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import grpc
import pytest

from inkloop import errors
from inkloop.prompts import language_class
from inkloop.rpc.status import field_violations
from inkloop.v1 import analytics_pb2, gateway_pb2
from inkloop_gateway.nudges.documents import RedisDocumentStore, SqliteDocumentStore
from inkloop_gateway.nudges.experiments import INPAINT_HINT, Arm, Experiment, ExperimentBook, ExperimentState
from inkloop_gateway.nudges.templates import CATALOG_PREFIX, Template, TemplateBook, catalog

from .conftest import Gateway, finished, spooled_events, text_task

T = analytics_pb2.BackendEventType


@pytest.fixture(params=["sqlite", "redis"])
async def documents(request: pytest.FixtureRequest, tmp_path: Path):  # type: ignore[no-untyped-def]
    if request.param == "sqlite":
        store = SqliteDocumentStore(tmp_path / "documents.db", cache_s=0)
    else:
        store = RedisDocumentStore(request.getfixturevalue("redis_url"), cache_s=0)
    yield store
    await store.aclose()


def fields_of(error: errors.InvalidArgument) -> set[str]:
    return {violation.field for violation in error.violations}


def test_every_catalog_template_reads_as_its_language_and_names_its_slots() -> None:
    templates = catalog()
    assert {t.category for t in templates} >= {"poster", "blog_cover", "product_shot", "illustration"}
    assert {t.language_class for t in templates} == {"zh", "en", "mixed"}
    for template in templates:
        assert template.id.startswith(CATALOG_PREFIX) and template.builtin
        without_slots = template.pattern
        for slot in template.slots:
            without_slots = without_slots.replace("{" + slot + "}", "")
        assert "{" not in without_slots and template.slots, template.id
        assert language_class(without_slots) == template.language_class, template.id


async def test_tenant_templates_are_kept_per_tenant_beside_the_read_only_catalog(documents) -> None:  # type: ignore[no-untyped-def]
    book = TemplateBook(documents)
    mine = Template("menu.dish", "Dish", "en", "{dish} on a rustic table, overhead shot", "product_shot")
    stored = await book.put("acme", mine)
    assert stored.slots == ("dish",) and not stored.builtin
    assert [t.id for t in await book.list("acme")][-1] == "menu.dish"
    assert "menu.dish" not in [t.id for t in await book.list("globex")]
    await book.require("acme", "menu.dish")
    await book.require("acme", "catalog.poster.en")
    with pytest.raises(errors.InvalidArgument) as unknown:
        await book.require("globex", "menu.dish")
    assert fields_of(unknown.value) == {"template_id"}
    replaced = await book.put("acme", Template("menu.dish", "Dish v2", "en", "{dish}, top view", ""))
    assert (await book.get("acme", "menu.dish")).name == replaced.name == "Dish v2"
    await book.delete("acme", "menu.dish")
    with pytest.raises(errors.NotFound):
        await book.get("acme", "menu.dish")
    with pytest.raises(errors.FailedPrecondition):
        await book.delete("acme", "catalog.poster.en")


async def test_a_bad_template_is_refused_field_by_field(documents) -> None:  # type: ignore[no-untyped-def]
    book = TemplateBook(documents)
    with pytest.raises(errors.InvalidArgument) as bad:
        await book.put("acme", Template("Bad Id", "", "fr", "", "x" * 65))
    assert fields_of(bad.value) == {
        "template.id",
        "template.name",
        "template.language_class",
        "template.pattern",
        "template.category",
    }
    with pytest.raises(errors.InvalidArgument) as wrong_language:
        await book.put("acme", Template("fox", "Fox", "zh", "a {animal} in snow"))
    assert fields_of(wrong_language.value) == {"template.language_class"}
    with pytest.raises(errors.InvalidArgument) as stray_brace:
        await book.put("acme", Template("fox", "Fox", "en", "a {Animal} in {snow"))
    assert fields_of(stray_brace.value) == {"template.pattern"}
    with pytest.raises(errors.InvalidArgument) as taken:
        await book.put("acme", Template("catalog.mine", "Mine", "en", "a fox"))
    assert fields_of(taken.value) == {"template.id"}


def _experiment(name: str = "banner", *arms: tuple[str, int]) -> Experiment:
    goal = analytics_pb2.ExperimentGoal(name="accepted", outcome="accepted")
    return Experiment(name, tuple(Arm(n, w) for n, w in arms or (("control", 1), ("treatment", 1))), (goal,))


async def test_an_experiment_goes_draft_running_stopped_and_only_that_way(documents) -> None:  # type: ignore[no-untyped-def]
    clock = iter([1000.0, 2000.0])
    book = ExperimentBook(documents, clock=lambda: next(clock))
    draft = await book.create("acme", _experiment())
    assert draft.state == ExperimentState.DRAFT and draft.started_at is None
    assert await book.assignments("acme", "visitor-1") == {}  # a draft assigns nobody
    with pytest.raises(errors.AlreadyExists):
        await book.create("acme", _experiment())
    with pytest.raises(errors.FailedPrecondition):
        await book.stop("acme", "banner")
    running = await book.start("acme", "banner")
    assert running.state == ExperimentState.RUNNING and running.started_at == 1000.0
    assert set(await book.assignments("acme", "visitor-1")) == {"banner"}
    stopped = await book.stop("acme", "banner")
    assert (stopped.started_at, stopped.stopped_at, stopped.state) == (1000.0, 2000.0, ExperimentState.STOPPED)
    assert stopped.arm_of("visitor-1").name == "control"
    assert await book.assignments("acme", "visitor-1") == {}
    with pytest.raises(errors.FailedPrecondition):
        await book.start("acme", "banner")
    with pytest.raises(errors.NotFound):
        await book.start("globex", "banner")
    assert (await book.get("acme", "banner")).goals == draft.goals  # goals survive the JSON round trip


async def test_a_bad_experiment_is_refused_field_by_field(documents) -> None:  # type: ignore[no-untyped-def]
    book = ExperimentBook(documents)
    bad = Experiment(
        "no spaces",
        (Arm("a", 0), Arm("a", 0)),
        (analytics_pb2.ExperimentGoal(name="g"), analytics_pb2.ExperimentGoal(name="h", outcome="kept")),
    )
    with pytest.raises(errors.InvalidArgument) as refused:
        await book.create("acme", bad)
    assert fields_of(refused.value) == {
        "experiment.name",
        "experiment.arms[1].name",
        "experiment.arms",
        "experiment.goals[0]",
        "experiment.goals[1].outcome",
    }


def test_assignment_is_sticky_proportional_and_independent_between_experiments() -> None:
    running = Experiment("split", (Arm("control", 1), Arm("off", 0), Arm("big", 3)), (), state=ExperimentState.RUNNING)
    other = Experiment("other", (Arm("control", 1), Arm("big", 3)), (), state=ExperimentState.RUNNING)
    visitors = [f"visitor-{i}" for i in range(20_000)]
    arms = Counter(running.arm_of(v).name for v in visitors)
    assert arms["off"] == 0
    assert abs(arms["big"] / len(visitors) - 0.75) < 0.02
    assert all(running.arm_of(v) == running.arm_of(v) for v in visitors[:100])
    together = Counter((running.arm_of(v).name, other.arm_of(v).name) for v in visitors)
    # Independent hashes: being in "big" here says nothing about "big" there (0.75 * 0.75).
    assert abs(together["big", "big"] / len(visitors) - 0.5625) < 0.02


async def test_the_builtin_inpaint_hint_is_created_and_started_once(documents) -> None:  # type: ignore[no-untyped-def]
    book = ExperimentBook(documents)
    await book.ensure_builtin("acme")
    started = await book.get("acme", "inpaint_hint")
    assert started.state == ExperimentState.RUNNING
    assert [arm.name for arm in started.arms] == ["control", "hint"]
    assert [goal.name for goal in started.goals] == [goal.name for goal in INPAINT_HINT.goals]
    await book.stop("acme", "inpaint_hint")
    await book.ensure_builtin("acme")  # an admin's stop stands
    assert (await book.get("acme", "inpaint_hint")).state == ExperimentState.STOPPED


def _code_and_fields(error: grpc.aio.AioRpcError) -> tuple[grpc.StatusCode, set[str]]:
    return error.code(), {field for field, _ in field_violations(error)}


async def test_admins_manage_templates_and_experiments_over_grpc(gateway: Gateway) -> None:
    admin = gateway.auth("admin")
    put = await gateway.admin.PutTemplate(
        gateway_pb2.PutTemplateRequest(
            template=gateway_pb2.PromptTemplate(
                id="menu.dish", name="Dish", language_class="en", pattern="{dish} on a rustic table"
            )
        ),
        metadata=admin,
    )
    assert list(put.template.slots) == ["dish"]
    listed = await gateway.admin.ListTemplates(gateway_pb2.ListTemplatesRequest(), metadata=admin)
    assert {t.id for t in listed.templates} >= {"menu.dish", "catalog.poster.zh"}
    assert all(t.builtin == t.id.startswith("catalog.") for t in listed.templates)
    # The gateway starts the built-in experiment for the page's tenant ("dev" here, not acme).
    dev = await gateway.admin.ListExperiments(gateway_pb2.ListExperimentsRequest(tenant_id="dev"), metadata=admin)
    assert [(e.name, e.state) for e in dev.experiments] == [("inpaint_hint", gateway_pb2.EXPERIMENT_STATE_RUNNING)]
    experiment = gateway_pb2.Experiment(
        name="banner",
        arms=[analytics_pb2.ExperimentArm(name="control", weight=1), analytics_pb2.ExperimentArm(name="b", weight=1)],
        goals=[analytics_pb2.ExperimentGoal(name="accepted", outcome="accepted")],
    )
    created = await gateway.admin.CreateExperiment(
        gateway_pb2.CreateExperimentRequest(experiment=experiment), metadata=admin
    )
    assert created.experiment.state == gateway_pb2.EXPERIMENT_STATE_DRAFT
    started = await gateway.admin.StartExperiment(gateway_pb2.StartExperimentRequest(name="banner"), metadata=admin)
    assert started.experiment.HasField("started_at")
    with pytest.raises(grpc.aio.AioRpcError) as twice:
        await gateway.admin.StartExperiment(gateway_pb2.StartExperimentRequest(name="banner"), metadata=admin)
    assert twice.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    with pytest.raises(grpc.aio.AioRpcError) as exists:
        await gateway.admin.CreateExperiment(gateway_pb2.CreateExperimentRequest(experiment=experiment), metadata=admin)
    assert exists.value.code() == grpc.StatusCode.ALREADY_EXISTS
    experiment.arms[1].name = "bad name"
    experiment.name = "other"
    with pytest.raises(grpc.aio.AioRpcError) as invalid:
        await gateway.admin.CreateExperiment(gateway_pb2.CreateExperimentRequest(experiment=experiment), metadata=admin)
    assert _code_and_fields(invalid.value) == (grpc.StatusCode.INVALID_ARGUMENT, {"experiment.arms[1].name"})
    with pytest.raises(grpc.aio.AioRpcError) as not_admin:
        await gateway.admin.ListTemplates(gateway_pb2.ListTemplatesRequest(), metadata=gateway.auth())
    assert not_admin.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_a_request_made_from_a_template_carries_its_id_and_an_unknown_id_is_refused(gateway: Gateway) -> None:
    job = await gateway.jobs.SubmitJob(
        gateway_pb2.SubmitJobRequest(
            task=text_task("a poster about tea, ink style", seed=1),
            request_id="from-template",
            template_id="catalog.poster.en",
        ),
        metadata=gateway.auth(),
    )
    await finished(gateway, job.job.job_id)
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await gateway.jobs.SubmitJob(
            gateway_pb2.SubmitJobRequest(task=text_task(), request_id="bad-template", template_id="nope"),
            metadata=gateway.auth(),
        )
    assert _code_and_fields(unknown.value) == (grpc.StatusCode.INVALID_ARGUMENT, {"template_id"})
    assert not await gateway.app.events.flush()  # analytics is unreachable: every event is on disk
    events = spooled_events(gateway.app.events.spool)
    requested = {e.request_id: e.template_id for e in events if e.type == T.BACKEND_EVENT_TYPE_REQUESTED}
    assert requested == {"from-template": "catalog.poster.en"}
    rejected = [e for e in events if e.request_id == "bad-template"]
    assert [(e.type, e.error_code) for e in rejected] == [(T.BACKEND_EVENT_TYPE_REJECTED, "INVALID_ARGUMENT")]
