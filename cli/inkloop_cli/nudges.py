"""`inkloop templates …` and `inkloop experiments …`: the page's nudges, through the AdminService (admin key).

Goals are written NAME=outcome:accepted or NAME=MATCHER with the matchers of `inkloop analytics`, e.g.
`--goal "inpaint started=frontend:category=inpaint,action=click"`.
"""

from __future__ import annotations

from typing import Any

import grpc
import typer
from google.protobuf.message import Message

from inkloop.v1 import analytics_pb2, gateway_pb2, gateway_pb2_grpc
from inkloop_cli.analytics import parse_matcher, show, tabulate
from inkloop_cli.client import ClientSettings, console, fail

templates = typer.Typer(help="Prompt templates: the catalog and the tenant's own (admin key).", no_args_is_help=True)
experiments = typer.Typer(help="Page experiments: create, start, stop, list (admin key).", no_args_is_help=True)

_TENANT = typer.Option("", "--tenant", help="Tenant (default: the admin key's own).")
_JSON = typer.Option(False, "--json", help="Print JSON instead of a table.")


def _admin(method: str, request: Message) -> Any:
    settings = ClientSettings()
    with grpc.insecure_channel(settings.gateway) as channel:
        try:
            return getattr(gateway_pb2_grpc.AdminServiceStub(channel), method)(
                request, timeout=30, metadata=settings.metadata()
            )
        except grpc.RpcError as error:
            raise fail(error) from None


def _template_rows(listed: list[gateway_pb2.PromptTemplate]) -> list[list[Any]]:
    return [
        [t.id, t.name, t.language_class, t.category, ", ".join(t.slots), "yes" if t.builtin else ""] for t in listed
    ]


@templates.command("list")
def list_templates(tenant: str = _TENANT, as_json: bool = _JSON) -> None:
    """The tenant's templates: catalog first."""
    response = _admin("ListTemplates", gateway_pb2.ListTemplatesRequest(tenant_id=tenant))
    show(
        response,
        as_json,
        tables=lambda: [
            tabulate(
                "templates",
                ["id", "name", "language", "category", "slots", "catalog"],
                _template_rows(response.templates),
            )
        ],
    )


@templates.command("put")
def put_template(
    template_id: str = typer.Argument(..., help="Id: a-z 0-9 . _ - (not starting with catalog.)."),
    pattern: str = typer.Option(..., "--pattern", help="The prompt with {slot}s, e.g. '{dish} on a rustic table'."),
    name: str = typer.Option(..., "--name", help="Display name."),
    language: str = typer.Option(..., "--language", help="zh, en or mixed (what the pattern reads as)."),
    category: str = typer.Option("", "--category", help="e.g. poster, blog_cover, product_shot, illustration."),
    tenant: str = _TENANT,
) -> None:
    """Creates or replaces one of the tenant's templates."""
    template = gateway_pb2.PromptTemplate(
        id=template_id, name=name, language_class=language, pattern=pattern, category=category
    )
    stored = _admin("PutTemplate", gateway_pb2.PutTemplateRequest(tenant_id=tenant, template=template)).template
    console.print(f"stored {stored.id} (slots: {', '.join(stored.slots) or 'none'})")


@templates.command("delete")
def delete_template(template_id: str = typer.Argument(...), tenant: str = _TENANT) -> None:
    """Deletes one of the tenant's templates."""
    _admin("DeleteTemplate", gateway_pb2.DeleteTemplateRequest(tenant_id=tenant, template_id=template_id))
    console.print(f"deleted {template_id}")


def parse_goal(spec: str) -> analytics_pb2.ExperimentGoal:
    name, _, target = spec.partition("=")
    if not name or not target:
        console.print(f"[red]error: goal {spec!r} must read NAME=outcome:accepted or NAME=MATCHER[/]")
        raise typer.Exit(2)
    if target.startswith("outcome:"):
        return analytics_pb2.ExperimentGoal(name=name, outcome=target.removeprefix("outcome:"))
    return analytics_pb2.ExperimentGoal(name=name, event=parse_matcher(target))


def parse_arm(spec: str) -> analytics_pb2.ExperimentArm:
    name, _, weight = spec.partition("=")
    if not name or not weight.isdigit():
        console.print(f"[red]error: arm {spec!r} must read NAME=WEIGHT, e.g. control=50[/]")
        raise typer.Exit(2)
    return analytics_pb2.ExperimentArm(name=name, weight=int(weight))


def _state(experiment: gateway_pb2.Experiment) -> str:
    return gateway_pb2.ExperimentState.Name(experiment.state).removeprefix("EXPERIMENT_STATE_").lower()


def _arms(experiment: gateway_pb2.Experiment) -> str:
    return ", ".join(f"{arm.name}={arm.weight}" for arm in experiment.arms)


def _print_experiment(experiment: gateway_pb2.Experiment) -> None:
    console.print(f"{experiment.name}: {_state(experiment)} ({_arms(experiment)})")


@experiments.command("create")
def create_experiment(
    name: str = typer.Argument(...),
    arm: list[str] = typer.Option(..., "--arm", help="NAME=WEIGHT, control first; repeat."),
    goal: list[str] = typer.Option(..., "--goal", help="NAME=outcome:accepted or NAME=MATCHER; repeat."),
    description: str = typer.Option("", "--description"),
    window: int = typer.Option(0, "--window", help="Conversion window in seconds after exposure (0 = 1 day)."),
    min_exposures: int = typer.Option(0, "--min-exposures", help="Fewest exposed visitors per arm (0 = 100)."),
    tenant: str = _TENANT,
) -> None:
    """Creates a draft experiment."""
    experiment = gateway_pb2.Experiment(
        name=name,
        description=description,
        arms=[parse_arm(spec) for spec in arm],
        goals=[parse_goal(spec) for spec in goal],
        conversion_window_s=window,
        min_exposures=min_exposures,
    )
    request = gateway_pb2.CreateExperimentRequest(tenant_id=tenant, experiment=experiment)
    _print_experiment(_admin("CreateExperiment", request).experiment)


@experiments.command("start")
def start_experiment(name: str = typer.Argument(...), tenant: str = _TENANT) -> None:
    """Starts a draft: the page assigns visitors from now on."""
    _print_experiment(
        _admin("StartExperiment", gateway_pb2.StartExperimentRequest(tenant_id=tenant, name=name)).experiment
    )


@experiments.command("stop")
def stop_experiment(name: str = typer.Argument(...), tenant: str = _TENANT) -> None:
    """Stops a running experiment: everyone sees the control; results stay readable."""
    _print_experiment(
        _admin("StopExperiment", gateway_pb2.StopExperimentRequest(tenant_id=tenant, name=name)).experiment
    )


@experiments.command("list")
def list_experiments(tenant: str = _TENANT, as_json: bool = _JSON) -> None:
    """The tenant's experiments."""
    response = _admin("ListExperiments", gateway_pb2.ListExperimentsRequest(tenant_id=tenant))
    show(
        response,
        as_json,
        tables=lambda: [
            tabulate(
                "experiments",
                ["name", "state", "arms", "goals", "started"],
                [
                    [
                        e.name,
                        _state(e),
                        _arms(e),
                        ", ".join(g.name for g in e.goals),
                        e.started_at.ToJsonString() if e.HasField("started_at") else "",
                    ]
                    for e in response.experiments
                ],
            )
        ],
    )
