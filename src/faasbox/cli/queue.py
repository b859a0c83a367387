"""``faasbox queue status`` and ``faasbox queue dead list | redrive``: the asynchronous
invocations queue (``faasbox invoke --async``), its depth and its dead letters."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from faasbox.cli.errors import CliError
from faasbox.cli.params import JsonOption, check_name
from faasbox.cli.plain_help import PlainCommand, PlainGroup
from faasbox.cli.render import fmt_time, fmt_value, print_json
from faasbox.cli.state import CliState, get_state
from faasbox.client import AsyncCall, Client, ClientError, NotAGateway

_SETTINGS = {"help_option_names": ["-h", "--help"]}

app = typer.Typer(
    name="queue",
    help="The asynchronous invocations queue (`faasbox invoke NAME --async`): what waits, "
    "and the dead letters (calls whose every retry failed).",
    cls=PlainGroup,
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="markdown",
    context_settings=_SETTINGS,
)
dead = typer.Typer(
    name="dead",
    help="Dead letters: asynchronous calls that failed every retry (or waited past their "
    "maximum age). List them, or queue them again.",
    cls=PlainGroup,
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="markdown",
    context_settings=_SETTINGS,
)
app.add_typer(dead, name="dead")

NameOption = Annotated[
    str | None,
    typer.Option(
        "--name",
        metavar="NAME",
        help="Only this function's.",
        show_default=False,
        callback=check_name,
    ),
]


@app.command("status", cls=PlainCommand)
def status(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Show the asynchronous calls not finished yet (queued, running or waiting to retry),
    per function, with the age of the oldest (GET /system/async).

    Finished calls are not counted: see the dead letters (every retry failed) with
    `faasbox queue dead list`, and any call with `faasbox activation CALL_ID`.
    """
    state = get_state(ctx)
    with state.client() as client:
        summary = client.async_summary()
    if as_json:
        print_json(state.out, summary)
        return
    total, limit = summary.get("unfinished", 0), summary.get("max")
    of = f" (limit {limit}: beyond it new calls get 429)" if limit is not None else ""
    calls = "call" if total == 1 else "calls"
    state.out.print(f"{total} unfinished asynchronous {calls}{of}", markup=False, highlight=False)
    functions = summary.get("functions") or {}
    if not functions:
        return
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("FUNCTION", "UNFINISHED", "OLDEST"):
        table.add_column(column, no_wrap=True)
    for name, depth in sorted(functions.items()):
        table.add_row(name, fmt_value(depth.get("unfinished")), _age(depth.get("oldestAgeSeconds")))
    state.out.print(table)


@dead.command("list", cls=PlainCommand)
def list_dead(
    ctx: typer.Context,
    name: NameOption = None,
    limit: Annotated[
        int,
        typer.Option(
            "--limit", "-n", min=1, max=10_000, metavar="N", help="At most N (1 to 10000)."
        ),
    ] = 100,
    as_json: JsonOption = False,
) -> None:
    """List dead letters (GET /system/async/dead): each call's function, its runs and how
    the last one ended.

    Queue them again with `faasbox queue dead redrive CALL_ID` (or --name NAME, or --all);
    see one's every attempt with `faasbox activation CALL_ID`.
    """
    state = get_state(ctx)
    with state.client() as client:
        letters = client.dead_letters(name, limit)
    if as_json:
        print_json(state.out, letters)
        return
    if not letters:
        of = f" of {name!r}" if name else ""
        state.out.print(f"no dead letters{of}", markup=False, highlight=False)
        return
    table = Table(box=None, header_style="bold", pad_edge=False)
    table.add_column("CALL ID", no_wrap=True, min_width=8)
    for column in ("FUNCTION", "ATTEMPTS", "CODE", "ENQUEUED"):
        table.add_column(column, no_wrap=True)
    table.add_column("LAST ERROR", overflow="fold")
    for letter in letters:
        last = (letter.get("attempts") or [{}])[-1]
        code = last.get("statusCode")
        table.add_row(
            letter.get("callId", "?"),
            fmt_value(letter.get("function")),
            fmt_value(letter.get("attempt")),
            Text("-") if code is None else Text(str(code), style="red" if code >= 400 else ""),
            fmt_time(letter.get("enqueuedAt"), short=True),
            Text(fmt_value(last.get("error")), style="red"),
        )
    state.out.print(table)


@dead.command("redrive", cls=PlainCommand)
def redrive(
    ctx: typer.Context,
    call_id: Annotated[
        str | None,
        typer.Argument(
            metavar="CALL_ID", help="The dead letter to queue again.", show_default=False
        ),
    ] = None,
    name: Annotated[
        str | None,
        typer.Option(
            "--name",
            metavar="NAME",
            help="Queue again every dead letter of this function.",
            show_default=False,
            callback=check_name,
        ),
    ] = None,
    everything: Annotated[
        bool, typer.Option("--all", help="Queue again every dead letter.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Queue dead letters again (POST /system/async/dead/redrive), each with a fresh retry
    budget; their earlier attempts are kept.

    Give exactly one of CALL_ID, --name NAME or --all. Examples:

    * `faasbox queue dead redrive 9e3779b97f4a7c150c5474474fc020e1`
    * `faasbox queue dead redrive --name resize-image`
    """
    given = [
        what for what, on in (("CALL_ID", call_id), ("--name", name), ("--all", everything)) if on
    ]
    if not given:
        raise typer.BadParameter(
            "say which dead letters to queue again: a CALL_ID, --name NAME or --all "
            "(see them with: faasbox queue dead list)"
        )
    if len(given) > 1:
        raise typer.BadParameter(
            f"give only one of CALL_ID, --name and --all, not {' and '.join(given)}"
        )
    state = get_state(ctx)
    with state.client() as client:
        try:
            ids = client.redrive(call_id=call_id, name=name)
        except ClientError as exc:
            if call_id is None or exc.status != 404 or isinstance(exc, NotAGateway):
                raise
            raise CliError(_not_dead(client, call_id, state)) from None
    if as_json:
        print_json(state.out, {"redriven": ids})
        return
    if not ids:
        of = f" of {name!r}" if name else ""
        state.out.print(f"no dead letters{of} to queue again", markup=False, highlight=False)
        return
    plural = "dead letter" if len(ids) == 1 else "dead letters"
    lines = [f"queued {len(ids)} {plural} again:", *(f"  {i}" for i in ids)]
    lines.append(f"follow one with: faasbox{state.gateway_args()} activation {ids[0]}")
    state.out.print("\n".join(lines), markup=False, highlight=False)


def _not_dead(client: Client, call_id: str, state: CliState) -> str:
    """Why ``call_id`` could not be redriven: its state when it is an asynchronous call."""
    listing = f"see the dead letters with: faasbox{state.gateway_args()} queue dead list"
    try:
        record = client.activation(call_id)
    except ClientError as exc:
        if exc.status == 404 and not isinstance(exc, NotAGateway):
            return f"no call {call_id!r}; {listing}"
        raise
    task: AsyncCall | None = record.get("async")
    if task is None:
        return f"call {call_id!r} was synchronous: only asynchronous calls are redriven"
    return f"call {call_id!r} is not a dead letter (its state: {task.get('state', '?')}); {listing}"


def _age(seconds: object) -> str:
    if not isinstance(seconds, int | float) or isinstance(seconds, bool):
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"
