"""The `inkloop` command: run the system, one service, or talk to the gateway."""

from __future__ import annotations

import typer

from inkloop_cli import analytics, client_commands, cover, keys, nudges, serve, up

app = typer.Typer(
    name="inkloop",
    help="Qwen-Image text-to-image platform: inference, gateway and analytics services.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.command(
    "serve",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []},
)(serve.serve)
app.command("up")(up.up)
app.command("generate")(client_commands.generate)
app.command("inpaint")(client_commands.inpaint)
app.command("outpaint")(client_commands.outpaint)
app.command("edit")(client_commands.edit)
app.command("cover")(cover.cover)
app.add_typer(keys.app, name="keys")
app.add_typer(analytics.app, name="analytics")
app.add_typer(nudges.templates, name="templates")
app.add_typer(nudges.experiments, name="experiments")


def main() -> None:
    app()
