"""``faasbox``: the entry point. Wires the commands and turns every user-facing error into
an ``error: ...`` line on stderr and an exit code, with no traceback:

* 1: the gateway or the function said no, or a file (the stack file, NAME/) is in the way;
* 2: the command line is wrong (a usage error: unknown command or option, a missing or
  invalid argument), or no faasbox gateway answers at the gateway address.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.text import Text

from faasbox import __version__
from faasbox.cli import activations, deploy, functions, invoke, logs, new, queue, secret
from faasbox.cli.errors import CliError
from faasbox.cli.plain_help import PlainCommand, PlainGroup
from faasbox.cli.render import print_error
from faasbox.cli.state import CliState, make_console
from faasbox.cli.up import up
from faasbox.client import ClientError, GatewayUnreachable, NotAGateway

app = typer.Typer(
    name="faasbox",
    help="faasbox: deploy a function, get an HTTP endpoint. Talks to a faasbox gateway.",
    cls=PlainGroup,
    no_args_is_help=True,
    rich_markup_mode="markdown",
    add_completion=False,
    pretty_exceptions_show_locals=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

# typer re-exports only BadParameter of click's exceptions (vendored as typer._click in
# recent versions, the click package before); every usage error and click's other
# failures derive from ClickException.
_CLICK_EXCEPTION: type[Exception] = next(
    c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException"
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
    source = ctx.get_parameter_source("gateway")
    from_flag = source is not None and source.name == "COMMANDLINE"
    ctx.obj = CliState(gateway=gateway, gateway_from_flag=from_flag)


app.command(cls=PlainCommand)(up)
app.command(cls=PlainCommand)(new.new)
app.command(cls=PlainCommand)(deploy.deploy)
app.command(cls=PlainCommand)(invoke.invoke)
app.command("list", cls=PlainCommand)(functions.list_functions)
app.command(cls=PlainCommand)(functions.describe)
app.command(cls=PlainCommand)(functions.rm)
app.command(cls=PlainCommand)(functions.scale)
app.command(cls=PlainCommand)(logs.logs)
app.command("activations", cls=PlainCommand)(activations.list_activations)
app.command("activation", cls=PlainCommand)(activations.show_activation)
app.add_typer(secret.app, name="secret")
app.add_typer(queue.app, name="queue")


def main(argv: Sequence[str] | None = None) -> None:
    err = make_console(stderr=True)
    try:
        # Not standalone: usage errors come back here to be printed like every other error.
        result = app(
            args=list(argv) if argv is not None else None,
            prog_name="faasbox",
            standalone_mode=False,
        )
    except (GatewayUnreachable, NotAGateway) as exc:
        if isinstance(exc, NotAGateway):
            print_error(err, exc.message)
        else:
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
    except typer.Abort:
        err.print("Aborted.", markup=False, highlight=False)
        sys.exit(1)
    except _CLICK_EXCEPTION as exc:
        sys.exit(_usage_error(err, exc))
    # A command that ran to its end returns None; typer.Exit(code) comes back as its code.
    sys.exit(result if isinstance(result, int) else 0)


def _usage_error(err: Console, exc: Any) -> int:
    """Print a usage error (or click's other failures) as ``error: ...`` plus where to look."""
    code = int(getattr(exc, "exit_code", 2))
    if type(exc).__name__ == "NoArgsIsHelpError":
        return code  # `faasbox` alone: the help is already printed
    print_error(err, str(exc.format_message()))
    ctx = getattr(exc, "ctx", None)
    if ctx is not None:
        err.print(ctx.get_usage(), markup=False, highlight=False, soft_wrap=True)
        err.print(f"Try '{ctx.command_path} --help' for help.", markup=False, highlight=False)
    return code
