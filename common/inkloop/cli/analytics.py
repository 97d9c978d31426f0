"""`inkloop analytics …`: the analytics queries, as tables or JSON."""

from __future__ import annotations

import typer

from inkloop.cli.client import console

app = typer.Typer(
    help="Query the analytics service (funnel, discrepancy, prompts, adoption, variants, alerts).", no_args_is_help=True
)

_QUERIES = ("funnel", "discrepancy", "prompts", "adoption", "variants", "alerts")


def _not_yet(name: str) -> None:
    console.print(f"[red]`inkloop analytics {name}` is not implemented yet: the analytics queries have not landed[/]")
    raise typer.Exit(2)


for _name in _QUERIES:
    app.command(_name, help=f"The {_name} query (not implemented yet).")(lambda _n=_name: _not_yet(_n))
