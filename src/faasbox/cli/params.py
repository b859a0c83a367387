"""Parameters several commands share. A function name that cannot exist (not a DNS-1123
label) is a usage error, exit 2, before anything is sent."""

from __future__ import annotations

from typing import Annotated

import typer

from faasbox.client import valid_name


def check_name(value: str | None) -> str | None:
    """typer callback: refuse a NAME that is not a valid function name."""
    if value is not None:
        problem = valid_name(value)
        if problem:
            raise typer.BadParameter(problem)
    return value


NameArg = Annotated[
    str,
    typer.Argument(metavar="NAME", help="Function name.", show_default=False, callback=check_name),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the raw JSON instead.")]
