"""``faasbox secret create | update | list | rm``: values functions read as files.

A value comes from ``--from-literal``, ``--from-file``, or stdin (piped, or typed at a
hidden prompt); it is sent to the gateway and never printed.
"""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from faasbox.cli.errors import CliError
from faasbox.cli.params import JsonOption
from faasbox.cli.plain_help import PlainCommand, PlainGroup
from faasbox.cli.render import print_json
from faasbox.cli.state import get_state
from faasbox.client import ClientError, NotAGateway, valid_secret_name

MAX_VALUE = 1024 * 1024

app = typer.Typer(
    name="secret",
    help="Manage secrets. A function that lists a secret reads it at /var/openfaas/secrets/NAME.",
    cls=PlainGroup,
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="markdown",
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _check_name(value: str | None) -> str | None:
    if value is not None:
        problem = valid_secret_name(value)
        if problem:
            raise typer.BadParameter(problem)
    return value


SecretNameArg = Annotated[
    str,
    typer.Argument(metavar="NAME", help="Secret name.", show_default=False, callback=_check_name),
]
LiteralOption = Annotated[
    str | None,
    typer.Option(
        "--from-literal",
        metavar="VALUE",
        help="The value itself (it stays in your shell history: prefer --from-file or stdin).",
        show_default=False,
    ),
]
FileOption = Annotated[
    str | None,
    typer.Option(
        "--from-file",
        metavar="FILE",
        help="Read the value from FILE, byte for byte ('-' for stdin).",
        show_default=False,
    ),
]


@app.command("create", cls=PlainCommand)
def create(
    ctx: typer.Context,
    name: SecretNameArg,
    from_literal: LiteralOption = None,
    from_file: FileOption = None,
) -> None:
    """Create a secret (POST /system/secrets).

    The value comes from --from-literal, --from-file, or stdin: piped (one trailing newline
    is dropped), or typed at a hidden prompt on a terminal.

    Examples:

    * `faasbox secret create db-password --from-file ./password.txt`
    * `printf %s "$TOKEN" | faasbox secret create api-token`
    """
    value = _value(name, from_literal, from_file)
    state = get_state(ctx)
    with state.client() as client:
        try:
            client.create_secret(name, value)
        except ClientError as exc:
            if exc.status == 409:
                raise CliError(
                    f"secret {name!r} already exists; change its value with: "
                    f"faasbox secret update {name}"
                ) from None
            raise
    state.out.print(f"created secret {name!r}", highlight=False, markup=False)


@app.command("update", cls=PlainCommand)
def update(
    ctx: typer.Context,
    name: SecretNameArg,
    from_literal: LiteralOption = None,
    from_file: FileOption = None,
) -> None:
    """Change the value of a secret (PUT /system/secrets).

    Replicas started from now on read the new value; running ones keep the value they
    started with until they stop (`faasbox scale FUNCTION 0` restarts them on the next
    call). The value comes from the same places as for `create`.
    """
    value = _value(name, from_literal, from_file)
    state = get_state(ctx)
    with state.client() as client:
        try:
            client.update_secret(name, value)
        except ClientError as exc:
            if exc.status == 404 and not isinstance(exc, NotAGateway):
                raise CliError(
                    f"secret {name!r} not found; create it with: faasbox secret create {name}"
                ) from None
            raise
    state.out.print(f"updated secret {name!r}", highlight=False, markup=False)


@app.command("list", cls=PlainCommand)
def list_secrets(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """List the names of the secrets (GET /system/secrets); values are never shown."""
    state = get_state(ctx)
    with state.client() as client:
        items = client.list_secrets()
    if as_json:
        print_json(state.out, items)
        return
    if not items:
        state.out.print("no secrets — create one: faasbox secret create NAME", markup=False)
        return
    table = Table(box=None, header_style="bold", pad_edge=False)
    table.add_column("NAME", no_wrap=True)
    for item in sorted(items, key=lambda s: s.get("name", "")):
        table.add_row(item.get("name", "?"))
    state.out.print(table)


@app.command("rm", cls=PlainCommand)
def rm(ctx: typer.Context, name: SecretNameArg) -> None:
    """Remove a secret (DELETE /system/secrets). Refused while a function lists it."""
    state = get_state(ctx)
    with state.client() as client:
        client.delete_secret(name)
    state.out.print(f"removed secret {name!r}", highlight=False, markup=False)


def _value(name: str, literal: str | None, file: str | None) -> bytes:
    if literal is not None and file is not None:
        raise typer.BadParameter("give either --from-literal or --from-file, not both")
    if literal is not None:
        value = literal.encode()
    elif file == "-":
        value = sys.stdin.buffer.read()
    elif file is not None:
        try:
            value = Path(file).read_bytes()
        except OSError as exc:
            raise typer.BadParameter(
                f"cannot read {file}: {exc.strerror}", param_hint="--from-file"
            ) from None
    else:
        value = _from_stdin(name)
    if not value:
        raise typer.BadParameter(f"the value of secret {name!r} is empty")
    if len(value) > MAX_VALUE:
        raise typer.BadParameter(
            f"the value of secret {name!r} is {len(value)} bytes; at most 1 MiB"
        )
    return value


def _from_stdin(name: str) -> bytes:
    source = _stdin_kind()
    if source == "terminal":
        typed: str = typer.prompt(
            f"value of secret {name!r}", hide_input=True, confirmation_prompt=True, err=True
        )
        return typed.encode()
    if source == "none":
        raise typer.BadParameter(
            "a secret needs a value: give --from-literal VALUE or --from-file FILE, "
            "or pipe it on stdin"
        )
    value = sys.stdin.buffer.read()
    # `echo value | ...` adds a newline nobody means as part of the secret.
    if value.endswith(b"\r\n"):
        return value[:-2]
    return value.removesuffix(b"\n")


def _stdin_kind() -> str:
    """ "terminal", "data" (a pipe, file or socket) or "none" (closed, /dev/null)."""
    if sys.stdin is None:
        return "none"
    try:
        fd = sys.stdin.fileno()
        mode = os.fstat(fd).st_mode
    except (OSError, ValueError):
        return "none"
    if os.isatty(fd):
        return "terminal"
    if stat.S_ISFIFO(mode) or stat.S_ISREG(mode) or stat.S_ISSOCK(mode):
        return "data"
    return "none"
