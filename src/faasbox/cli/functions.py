"""``faasbox list``, ``describe``, ``rm`` and ``scale``: managing deployed functions."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from faasbox.cli.params import JsonOption, NameArg
from faasbox.cli.render import (
    STATUS_STYLE,
    fmt_time,
    fmt_value,
    function_state,
    key_values,
    print_json,
    versions,
)
from faasbox.cli.state import get_state
from faasbox.client import FunctionStatus

SCALE_MAX_LABEL = "com.openfaas.scale.max"


def list_functions(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """List deployed functions (GET /system/functions).

    STATUS is "ready (v2)" when version 2 serves calls; "ready (v2), v3 failed" (or "v3
    building") when a newer deploy is not ready and v2 still serves; "failed" or "building"
    when no version serves yet.
    """
    state = get_state(ctx)
    with state.client() as client:
        items = client.list_functions()
    if as_json:
        print_json(state.out, items)
        return
    if not items:
        state.out.print(
            "no functions deployed — try: faasbox new hello && faasbox deploy", markup=False
        )
        return
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("NAME", "STATUS", "REPLICAS", "INVOCATIONS", "RUNTIME", "CREATED"):
        table.add_column(column, no_wrap=True)
    for fn in sorted(items, key=lambda f: f.get("name", "")):
        table.add_row(
            fn.get("name", "?"),
            function_state(fn),
            f"{fn.get('availableReplicas', 0)}/{fn.get('replicas', 0)}",
            fmt_value(fn.get("invocationCount", 0)),
            fmt_value(fn.get("runtime")),
            fmt_time(fn.get("createdAt")),
        )
    state.out.print(table)


def describe(ctx: typer.Context, name: NameArg, as_json: JsonOption = False) -> None:
    """Show one function: status, versions, settings, labels and env var names.

    Timeout and memory are the values in effect, defaults included. When the latest deploy
    failed, its build log follows.
    """
    state = get_state(ctx)
    with state.client() as client:
        fn = client.get_function(name)
    if as_json:
        print_json(state.out, fn)
        return
    state.out.print(describe_panel(fn))


def describe_panel(fn: FunctionStatus) -> Group:
    version, latest, status, serves = versions(fn)
    limits = fn.get("limits") or {}
    replicas = f"{fn.get('availableReplicas', 0)} available / {fn.get('replicas', 0)}"
    if isinstance(fn.get("maxReplicas"), int):
        replicas += f" (max {fn['maxReplicas']})"
    rows: list[tuple[str, Text | str]] = [
        ("status", function_state(fn)),
        ("serving", f"v{version}" if serves and version is not None else "none"),
    ]
    if latest is not None:
        latest_text = Text(f"v{latest}")
        if status:
            latest_text.append(f" {status}", style=STATUS_STYLE.get(status, ""))
        if serves and latest != version:
            latest_text.append(f" (v{version} keeps serving)")
        rows.append(("latest", latest_text))
    rows += [
        ("runtime", fmt_value(fn.get("runtime"))),
        ("handler", fmt_value(fn.get("handler"))),
        ("replicas", replicas),
        ("invocations", fmt_value(fn.get("invocationCount", 0))),
        ("timeout", fmt_value(fn.get("timeout"))),
        ("concurrency", fmt_value(fn.get("concurrency"))),
        ("memory", fmt_value(limits.get("memory"))),
        ("cpu", fmt_value(limits.get("cpu"))),
    ]
    if "backend" in fn:
        backend = fmt_value(fn.get("backend"))
        if fn.get("backendReason"):
            backend += f" ({fn['backendReason']})"
        rows.append(("backend", backend))
    rows += [
        ("created", fmt_time(fn.get("createdAt"))),
        ("labels", fmt_value(fn.get("labels"))),
        ("annotations", fmt_value(fn.get("annotations"))),
        # Values may be sensitive and are one `--json` away: show the names only.
        ("env", fmt_value(sorted((fn.get("envVars") or {}).keys()))),
    ]
    if "secrets" in fn:
        rows.append(("secrets", fmt_value(fn.get("secrets"))))
    parts: list[RenderableType] = [key_values(fn.get("name", "?"), rows)]
    log = fn.get("buildLog")
    if status == "failed" and log:
        which = f"v{latest}" if latest is not None else "the latest version"
        parts += [Text(f"build log of {which} (failed):", style="bold red"), Text(log.rstrip("\n"))]
    return Group(*parts)


def rm(ctx: typer.Context, name: NameArg) -> None:
    """Remove a function, all its versions and replicas."""
    state = get_state(ctx)
    with state.client() as client:
        client.delete_function(name)
    state.out.print(f"removed function {name!r}", highlight=False, markup=False)


def scale(
    ctx: typer.Context,
    name: NameArg,
    replicas: Annotated[
        int,
        typer.Argument(
            metavar="REPLICAS",
            min=0,
            help="Replicas to run now (0 or more); 0 drains and stops every replica.",
            show_default=False,
        ),
    ],
) -> None:
    """Set the number of replicas of a function.

    Starts replicas up to REPLICAS now, at most com.openfaas.scale.max (default 5); idle
    ones still stop after com.openfaas.scale.zero-duration. 0 drains and stops every
    replica now; the next call is a cold start. The answer says how many run.
    """
    state = get_state(ctx)
    with state.client() as client:
        status = client.scale(name, replicas)
    state.out.print(scale_message(name, replicas, status), highlight=False, markup=False)


def scale_message(name: str, wanted: int, status: FunctionStatus) -> str:
    """What scaling did, from the gateway's answer: ``replicas`` is how many run now. At
    most ``com.openfaas.scale.max`` run (``maxReplicas`` in newer answers); asking for fewer
    than run stops none, idle ones stop after ``zero-duration``; 0 stops them all."""
    cap = _max_replicas(status)
    got = status.get("replicas")
    if not isinstance(got, int) or isinstance(got, bool):  # an answer without the status
        got = min(wanted, cap) if cap is not None else wanted
    plural = "replica" if got == 1 else "replicas"
    if wanted == 0 or got == wanted:
        return f"scaled {name!r} to {got} {plural}"
    if got < wanted:
        return (
            f"scaled {name!r} to {got} {plural}, not {wanted}: capped at "
            f"{cap if cap is not None else got} ({SCALE_MAX_LABEL})"
        )
    return (
        f"{name!r} has {got} {plural}, more than the {wanted} asked for: idle ones stop after "
        "com.openfaas.scale.zero-duration"
    )


def _max_replicas(status: FunctionStatus) -> int | None:
    cap = status.get("maxReplicas")
    if isinstance(cap, int) and not isinstance(cap, bool):
        return cap
    label = (status.get("labels") or {}).get(SCALE_MAX_LABEL)
    try:
        return int(label) if label is not None else None
    except ValueError:
        return None
