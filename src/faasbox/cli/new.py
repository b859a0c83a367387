"""``faasbox new``: scaffold a function and add it to faasbox.yml."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from faasbox.cli.errors import CliError
from faasbox.cli.params import check_name
from faasbox.cli.state import get_state


def new(
    ctx: typer.Context,
    name: Annotated[
        str,
        typer.Argument(
            metavar="NAME",
            help="Function name: lowercase letters, digits and '-' (a DNS-1123 label).",
            show_default=False,
            callback=check_name,
        ),
    ],
    lang: Annotated[
        str,
        typer.Option(
            "--lang", "-l", metavar="LANG", help="Language of the template: python (or python3)."
        ),
    ] = "python",
    directory: Annotated[
        Path,
        typer.Option(
            "--dir",
            "-d",
            metavar="DIR",
            help="Where to create NAME/ and faasbox.yml (created if missing).",
            file_okay=False,
        ),
    ] = Path("."),
) -> None:
    """Create a new function NAME/ from a template and list it in faasbox.yml.

    Writes NAME/handler.py and NAME/requirements.txt, then creates faasbox.yml or appends
    NAME to it. Refuses when NAME/ or the function already exists.

    Example: `faasbox new hello && faasbox deploy && faasbox invoke hello`
    """
    # Imported here: pydantic and the stack model are only needed by new and deploy, and
    # every other command starts faster without them.
    from faasbox.scaffold import ScaffoldError, scaffold_function

    state = get_state(ctx)
    out = state.out
    try:
        made = scaffold_function(name, lang=lang, directory=directory)
    except ScaffoldError as exc:
        if exc.param is not None:  # the command line asked for something impossible
            raise typer.BadParameter(str(exc), param_hint=exc.param) from None
        raise CliError(str(exc)) from None
    here = Path.cwd()
    for path in [*made.files, made.stack_file]:
        verb = "created" if path != made.stack_file or made.stack_created else "updated"
        out.print(Text.assemble((f"{verb:>8} ", "green"), _rel(path, here)), highlight=False)
    out.print()
    out.print(f"Next: edit {_rel(made.function_dir / 'handler.py', here)}, then", highlight=False)
    stack_arg = (
        "" if made.stack_file.parent == here.resolve() else f" -f {_rel(made.stack_file, here)}"
    )
    # The next commands need the same gateway; FAASBOX_GATEWAY stays set by itself.
    faasbox = f"faasbox{state.gateway_args()}"
    out.print(f"  {faasbox} deploy{stack_arg} {name}", highlight=False, markup=False)
    out.print(f"  {faasbox} invoke {name} --data 'hi'", highlight=False, markup=False)


def _rel(path: Path, base: Path) -> str:
    try:
        return os.path.relpath(path, base)
    except ValueError:
        return str(path)
