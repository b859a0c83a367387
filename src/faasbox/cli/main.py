"""``faasbox``: the entry point. Wires the commands and turns every user-facing error into
one readable line and an exit code (1 for errors, 2 when the gateway cannot be reached or
the command line is wrong); no traceback for any of them."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Annotated

import typer
from rich.console import Console
from rich.text import Text

from faasbox import __version__
from faasbox.cli import activations, deploy, functions, invoke, logs, new
from faasbox.cli.errors import CliError
from faasbox.cli.render import print_error
from faasbox.cli.state import CliState
from faasbox.cli.up import up
from faasbox.client import ClientError, GatewayUnreachable

app = typer.Typer(
    name="faasbox",
    help="faasbox: deploy a function, get an HTTP endpoint. Talks to a faasbox gateway.",
    no_args_is_help=True,
    rich_markup_mode="markdown",
    add_completion=False,
    pretty_exceptions_show_locals=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"faasbox {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    gateway: Annotated[
        str | None,
        typer.Option(
            "--gateway",
            "-g",
            envvar="FAASBOX_GATEWAY",
            show_envvar=True,
            metavar="URL",
            help="Gateway to talk to. Default: provider.gateway of the stack file for "
            "deploy, else http://127.0.0.1:8080.",
        ),
    ] = None,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    ctx.obj = CliState(gateway=gateway)


app.command()(up)
app.command()(new.new)
app.command()(deploy.deploy)
app.command()(invoke.invoke)
app.command("list")(functions.list_functions)
app.command()(functions.describe)
app.command()(functions.rm)
app.command()(functions.scale)
app.command()(logs.logs)
app.command("activations")(activations.list_activations)
app.command("activation")(activations.show_activation)


def main(argv: Sequence[str] | None = None) -> None:
    err = Console(stderr=True)
    try:
        app(args=list(argv) if argv is not None else None, prog_name="faasbox")
    except GatewayUnreachable as exc:
        err.print(
            Text.assemble(
                ("error: ", "bold red"),
                f"cannot reach faasbox at {exc.url} — is `faasbox up` running?",
            ),
            soft_wrap=True,
        )
        sys.exit(2)
    except ClientError as exc:
        print_error(err, exc.message, exc.detail)
        sys.exit(1)
    except CliError as exc:
        print_error(err, exc.message, exc.detail)
        sys.exit(1)
