"""Experiments on the page: arms with weights, goals, a life cycle, and sticky assignment of visitors.

A visitor's arm is `sticky_choice` over the arms' weights keyed by experiment name and visitor id, so
it is the same on every replica and page load, and independent between experiments. The visitor id is
the tracker's (`inkloop.visitors`), so assignments and exposures name the same visitor. Only running
experiments assign anyone; the page shows the control's behaviour for everything else. The page
reports an exposure (`_trackEvent("experiment", "exposure", "<name>:<arm>")`) at the moment the arms
first differ, in every arm, and analytics reads the experiment out from those.

The first built-in experiment, `inpaint_hint`, is created and started for the page's tenant on first
start unless a tenant already has one of that name: after two regenerations of one intent, the
`hint` arm shows "生成不满意？试试只修改这一块！" (try repainting just that part), the control nothing.
"""

from __future__ import annotations

import enum
import re
import time
from dataclasses import dataclass, replace
from typing import Any

from google.protobuf import json_format

from inkloop import errors
from inkloop.errors import FieldViolation, InvalidArgument
from inkloop.v1 import analytics_pb2
from inkloop_gateway.admission.variants import sticky_choice
from inkloop_gateway.nudges.documents import DocumentStore

_NAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
MIN_ARMS, MAX_ARMS = 2, 10
MAX_GOALS = 10
MAX_EXPERIMENTS = 100
GOAL_OUTCOMES = ("accepted",)
DEFAULT_CONVERSION_WINDOW_S = 86_400
MAX_CONVERSION_WINDOW_S = 30 * 86_400
DEFAULT_MIN_EXPOSURES = 100


class ExperimentState(enum.StrEnum):
    DRAFT = "draft"
    RUNNING = "running"
    STOPPED = "stopped"


@dataclass(frozen=True)
class Arm:
    name: str
    weight: int


@dataclass(frozen=True)
class Experiment:
    name: str
    arms: tuple[Arm, ...]
    goals: tuple[analytics_pb2.ExperimentGoal, ...]
    description: str = ""
    state: ExperimentState = ExperimentState.DRAFT
    started_at: float | None = None
    stopped_at: float | None = None
    conversion_window_s: int = 0
    min_exposures: int = 0

    @property
    def control(self) -> Arm:
        return self.arms[0]

    def arm_of(self, visitor_id: str) -> Arm:
        """The visitor's arm while running; the control otherwise."""
        if self.state != ExperimentState.RUNNING:
            return self.control
        return self.arms[sticky_choice([arm.weight for arm in self.arms], f"{self.name}\x00{visitor_id}")]

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "arms": [[arm.name, arm.weight] for arm in self.arms],
            "goals": [json_format.MessageToDict(goal) for goal in self.goals],
            "state": self.state.value,
            "started_at": self.started_at,
            "stopped_at": self.stopped_at,
            "conversion_window_s": self.conversion_window_s,
            "min_exposures": self.min_exposures,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Experiment:
        return cls(
            name=str(data["name"]),
            description=str(data.get("description", "")),
            arms=tuple(Arm(str(name), int(weight)) for name, weight in data["arms"]),
            goals=tuple(json_format.ParseDict(goal, analytics_pb2.ExperimentGoal()) for goal in data["goals"]),
            state=ExperimentState(data.get("state", "draft")),
            started_at=data.get("started_at"),
            stopped_at=data.get("stopped_at"),
            conversion_window_s=int(data.get("conversion_window_s", 0)),
            min_exposures=int(data.get("min_exposures", 0)),
        )


def experiment_problems(experiment: Experiment, where: str = "experiment") -> list[FieldViolation]:
    problems = []
    if not _NAME.match(experiment.name):
        problems.append(FieldViolation(f"{where}.name", "must be 1-64 characters of A-Z a-z 0-9 . _ -"))
    if len(experiment.description) > 500:
        problems.append(FieldViolation(f"{where}.description", "at most 500 characters"))
    if not MIN_ARMS <= len(experiment.arms) <= MAX_ARMS:
        problems.append(FieldViolation(f"{where}.arms", f"{MIN_ARMS} to {MAX_ARMS} arms, control first"))
    seen: set[str] = set()
    for i, arm in enumerate(experiment.arms):
        if not _NAME.match(arm.name):
            problems.append(FieldViolation(f"{where}.arms[{i}].name", "must be 1-64 characters of A-Z a-z 0-9 . _ -"))
        elif arm.name in seen:
            problems.append(FieldViolation(f"{where}.arms[{i}].name", f"duplicate arm {arm.name!r}"))
        seen.add(arm.name)
    if experiment.arms and not any(arm.weight > 0 for arm in experiment.arms):
        problems.append(FieldViolation(f"{where}.arms", "at least one arm needs a weight > 0"))
    if not 1 <= len(experiment.goals) <= MAX_GOALS:
        problems.append(FieldViolation(f"{where}.goals", f"1 to {MAX_GOALS} goals"))
    for i, goal in enumerate(experiment.goals):
        if not 1 <= len(goal.name) <= 64:
            problems.append(FieldViolation(f"{where}.goals[{i}].name", "must be 1-64 characters"))
        target = goal.WhichOneof("target")
        if target is None:
            problems.append(FieldViolation(f"{where}.goals[{i}]", "needs an event or an outcome"))
        elif target == "outcome" and goal.outcome not in GOAL_OUTCOMES:
            problems.append(FieldViolation(f"{where}.goals[{i}].outcome", f"must be one of {', '.join(GOAL_OUTCOMES)}"))
        elif target == "event" and goal.event.source == analytics_pb2.EVENT_SOURCE_UNSPECIFIED:
            problems.append(FieldViolation(f"{where}.goals[{i}].event.source", "required"))
    if not 0 <= experiment.conversion_window_s <= MAX_CONVERSION_WINDOW_S:
        problems.append(FieldViolation(f"{where}.conversion_window_s", f"at most {MAX_CONVERSION_WINDOW_S} seconds"))
    return problems


def _goal(name: str, **target: Any) -> analytics_pb2.ExperimentGoal:
    return analytics_pb2.ExperimentGoal(name=name, **target)


INPAINT_HINT = Experiment(
    name="inpaint_hint",
    description="After two regenerations of one intent, suggest repainting a part: 生成不满意？试试只修改这一块！",
    arms=(Arm("control", 50), Arm("hint", 50)),
    goals=(
        _goal(
            "inpaint started",
            event=analytics_pb2.EventMatcher(
                source=analytics_pb2.EVENT_SOURCE_FRONTEND,
                frontend_type=analytics_pb2.FRONTEND_EVENT_TYPE_TRACK_EVENT,
                category="inpaint",
                action="click",
            ),
        ),
        _goal("accepted", outcome="accepted"),
    ),
    conversion_window_s=3600,
)
BUILTIN = (INPAINT_HINT,)


class ExperimentBook:
    """Each tenant's experiments, in one shared document per tenant."""

    def __init__(self, documents: DocumentStore, clock: Any = time.time) -> None:
        self.documents = documents
        self.clock = clock

    async def list(self, tenant_id: str) -> list[Experiment]:
        return sorted((await self._all(tenant_id)).values(), key=lambda experiment: experiment.name)

    async def get(self, tenant_id: str, name: str) -> Experiment:
        experiment = (await self._all(tenant_id)).get(name)
        if experiment is None:
            raise errors.NotFound(f"tenant {tenant_id!r} has no experiment {name!r}")
        return experiment

    async def create(self, tenant_id: str, experiment: Experiment) -> Experiment:
        problems = experiment_problems(experiment)
        if problems:
            raise InvalidArgument.of(problems)
        known = await self._all(tenant_id)
        if experiment.name in known:
            raise errors.AlreadyExists(f"tenant {tenant_id!r} already has an experiment {experiment.name!r}")
        if len(known) >= MAX_EXPERIMENTS:
            raise errors.FailedPrecondition(f"a tenant may keep at most {MAX_EXPERIMENTS} experiments")
        draft = replace(experiment, state=ExperimentState.DRAFT, started_at=None, stopped_at=None)
        known[draft.name] = draft
        await self._save(tenant_id, known)
        return draft

    async def start(self, tenant_id: str, name: str) -> Experiment:
        return await self._move(tenant_id, name, ExperimentState.DRAFT, ExperimentState.RUNNING)

    async def stop(self, tenant_id: str, name: str) -> Experiment:
        return await self._move(tenant_id, name, ExperimentState.RUNNING, ExperimentState.STOPPED)

    async def assignments(self, tenant_id: str, visitor_id: str) -> dict[str, str]:
        """The visitor's arm of each running experiment."""
        return {
            experiment.name: experiment.arm_of(visitor_id).name
            for experiment in await self.list(tenant_id)
            if experiment.state == ExperimentState.RUNNING
        }

    async def ensure_builtin(self, tenant_id: str) -> None:
        """Creates and starts each built-in experiment the tenant has never had."""
        for experiment in BUILTIN:
            known = await self._all(tenant_id)
            if experiment.name not in known:
                await self.create(tenant_id, experiment)
                await self.start(tenant_id, experiment.name)

    async def _move(self, tenant_id: str, name: str, before: ExperimentState, after: ExperimentState) -> Experiment:
        known = await self._all(tenant_id)
        experiment = known.get(name)
        if experiment is None:
            raise errors.NotFound(f"tenant {tenant_id!r} has no experiment {name!r}")
        if experiment.state != before:
            raise errors.FailedPrecondition(
                f"experiment {name!r} is {experiment.state.value}; only a {before.value} one can become {after.value}"
            )
        now = self.clock()
        moved = replace(
            experiment,
            state=after,
            started_at=now if after == ExperimentState.RUNNING else experiment.started_at,
            stopped_at=now if after == ExperimentState.STOPPED else None,
        )
        known[name] = moved
        await self._save(tenant_id, known)
        return moved

    async def _all(self, tenant_id: str) -> dict[str, Experiment]:
        stored = await self.documents.get(f"experiments:{tenant_id}") or []
        return {item["name"]: Experiment.from_json(item) for item in stored}

    async def _save(self, tenant_id: str, experiments: dict[str, Experiment]) -> None:
        await self.documents.put(f"experiments:{tenant_id}", [e.to_json() for e in experiments.values()])
