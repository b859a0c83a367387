"""``faasbox activations`` and ``faasbox activation``: records of past invocations."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Group
from rich.table import Table
from rich.text import Text

from faasbox.cli.params import JsonOption, check_name
from faasbox.cli.render import fmt_seconds, fmt_time, fmt_value, key_values, print_json
from faasbox.cli.state import get_state
from faasbox.client import Activation, AsyncAttempt, AsyncCall

# An asynchronous call's states: waiting or running, done, given up.
ASYNC_STYLE = {
    "queued": "yellow",
    "running": "yellow",
    "retrying": "yellow",
    "succeeded": "green",
    "failed": "red",
    "dead": "red",
}


def list_activations(
    ctx: typer.Context,
    name: Annotated[
        str | None,
        typer.Argument(
            metavar="NAME",
            help="Only this function's.",
            show_default=False,
            callback=check_name,
        ),
    ] = None,
    limit: Annotated[
        int, typer.Option("--limit", "-n", min=1, metavar="N", help="At most N (1 or more).")
    ] = 20,
    as_json: JsonOption = False,
) -> None:
    """List recent invocations (synchronous calls), newest first.

    CODE is the HTTP status; COLD shows the init time of a cold start. See one in full
    with `faasbox activation CALL_ID`.
    """
    state = get_state(ctx)
    with state.client() as client:
        records = client.activations(name, limit)
        if name and not records:
            # Gateways that answer an unknown name with an empty list rather than 404:
            # "no activations yet" would hide a typo.
            client.get_function(name)
    if as_json:
        print_json(state.out, records)
        return
    if not records:
        state.out.print("no activations yet", markup=False)
        return
    table = Table(box=None, header_style="bold", pad_edge=False)
    table.add_column("CALL ID", no_wrap=True, min_width=8)
    for column in ("FUNCTION", "VER", "START", "DURATION", "CODE", "COLD"):
        table.add_column(column, no_wrap=True)
    errors = any(a.get("error") for a in records)
    if errors:
        table.add_column("ERROR", overflow="fold")
    for a in records:
        init = _init(a)
        row: list[str | Text] = [
            a.get("callId", "?"),
            fmt_value(a.get("function")),
            fmt_value(a.get("version")),
            fmt_time(a.get("start"), short=True),
            fmt_seconds(a.get("durationSeconds")),
            _status(a),
            init or ("yes" if a.get("coldStart") else ""),
        ]
        if errors:
            row.append(Text(str(a.get("error") or ""), style="red"))
        table.add_row(*row)
    state.out.print(table)


def show_activation(
    ctx: typer.Context,
    call_id: Annotated[
        str, typer.Argument(metavar="CALL_ID", help="Call id (X-Call-Id of the response).")
    ],
    as_json: JsonOption = False,
) -> None:
    """Show the activation record of one call: function, version, status, timing, replica
    and error.

    Every synchronous call through /function/NAME leaves one; its id is the X-Call-Id
    header of the response (`faasbox invoke -v` shows it). For an asynchronous call
    (`faasbox invoke --async` prints its id) it also shows its state and every attempt;
    the other fields are those of its latest run.
    """
    state = get_state(ctx)
    with state.client() as client:
        a = client.activation(call_id)
    if as_json:
        print_json(state.out, a)
        return
    task = a.get("async")
    rows: list[tuple[str, Text | str]] = [("function", fmt_value(a.get("function")))]
    if task is not None:
        rows += _async_rows(task)
    if task is None or "statusCode" in a:  # an asynchronous call has no run until it ran
        rows += [
            ("version", fmt_value(a.get("version"))),
            ("status", _status(a)),
            ("start", fmt_time(a.get("start"))),
            ("duration", fmt_seconds(a.get("durationSeconds"))),
            ("cold start", fmt_value(bool(a.get("coldStart")))),
            ("init", _init(a) or "-"),
            ("replica", fmt_value(a.get("replica"))),
            ("error", Text(fmt_value(a.get("error")), style="red" if a.get("error") else "")),
        ]
    panel = key_values(a.get("callId", call_id), rows)
    attempts = task.get("attempts") if task is not None else None
    state.out.print(Group(panel, _attempts_table(attempts)) if attempts else panel)


def _async_rows(task: AsyncCall) -> list[tuple[str, Text | str]]:
    callback = fmt_value(task.get("callbackUrl"))
    if task.get("callbackUrl"):
        callback += f" ({task.get('callback') or 'not sent yet'})"
    state = task.get("state", "-")
    rows: list[tuple[str, Text | str]] = [
        ("state", Text(state, style=ASYNC_STYLE.get(state, ""))),
        ("attempts", f"{task.get('attempt', 0)} (retries allowed: {task.get('maxRetries', '-')})"),
        ("enqueued", fmt_time(task.get("enqueuedAt"))),
    ]
    if task.get("nextAttemptAt") is not None:
        rows.append(("next attempt", fmt_time(task.get("nextAttemptAt"))))
    rows += [("finished", fmt_time(task.get("finishedAt"))), ("callback", callback)]
    return rows


def _attempts_table(attempts: list[AsyncAttempt]) -> Table:
    table = Table(
        title="attempts", title_justify="left", box=None, header_style="bold", pad_edge=False
    )
    for column in ("#", "START", "DURATION", "CODE", "REPLICA"):
        table.add_column(column, no_wrap=True)
    table.add_column("ERROR", overflow="fold")
    for at in attempts:
        table.add_row(
            fmt_value(at.get("attempt")),
            fmt_time(at.get("start")),
            fmt_seconds(at.get("durationSeconds")),
            _status(at),
            fmt_value(at.get("replica")),
            Text(fmt_value(at.get("error")), style="red" if at.get("error") else ""),
        )
    return table


def _status(a: Activation | AsyncAttempt) -> Text:
    code = a.get("statusCode")
    if code is None:
        return Text("-")
    return Text(str(code), style="green" if code < 400 else "red")


def _init(a: Activation) -> str:
    init = a.get("initMs")
    return f"{init:.1f}ms" if isinstance(init, int | float) and a.get("coldStart") else ""
