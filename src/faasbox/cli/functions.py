"""``faasbox list``, ``describe``, ``rm`` and ``scale``: managing deployed functions."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from faasbox.cli.render import fmt_time, fmt_value, key_values, print_json
from faasbox.cli.state import get_state
from faasbox.client import FunctionStatus

JsonOption = Annotated[bool, typer.Option("--json", help="Print the raw JSON instead.")]
NameArg = Annotated[str, typer.Argument(metavar="NAME", help="Function name.", show_default=False)]

_STATUS_STYLE = {"ready": "green", "building": "yellow", "failed": "red"}


def list_functions(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """List deployed functions (GET /system/functions)."""
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
    for column in ("NAME", "STATUS", "VERSION", "REPLICAS", "INVOCATIONS", "RUNTIME", "CREATED"):
        table.add_column(column, no_wrap=True)
    for fn in sorted(items, key=lambda f: f.get("name", "")):
        status = fn.get("status", "-")
        table.add_row(
            fn.get("name", "?"),
            Text(status, style=_STATUS_STYLE.get(status, "")),
            fmt_value(fn.get("version")),
            f"{fn.get('availableReplicas', 0)}/{fn.get('replicas', 0)}",
            fmt_value(fn.get("invocationCount", 0)),
            fmt_value(fn.get("runtime")),
            fmt_time(fn.get("createdAt")),
        )
    state.out.print(table)


def describe(ctx: typer.Context, name: NameArg, as_json: JsonOption = False) -> None:
    """Show one function: status, version, settings, labels and env var names."""
    state = get_state(ctx)
    with state.client() as client:
        fn = client.get_function(name)
    if as_json:
        print_json(state.out, fn)
        return
    state.out.print(_describe_panel(fn))


def _describe_panel(fn: FunctionStatus) -> Group:
    status = fn.get("status", "-")
    limits = fn.get("limits") or {}
    rows: list[tuple[str, Text | str]] = [
        ("status", Text(status, style=_STATUS_STYLE.get(status, ""))),
        ("version", fmt_value(fn.get("version"))),
        ("runtime", fmt_value(fn.get("runtime"))),
        ("handler", fmt_value(fn.get("handler"))),
        ("replicas", f"{fn.get('availableReplicas', 0)} available / {fn.get('replicas', 0)}"),
        ("invocations", fmt_value(fn.get("invocationCount", 0))),
        ("timeout", fmt_value(fn.get("timeout"))),
        ("concurrency", fmt_value(fn.get("concurrency"))),
        ("memory", fmt_value(limits.get("memory"))),
        ("cpu", fmt_value(limits.get("cpu"))),
    ]
    if "backend" in fn:
        rows.append(("backend", fmt_value(fn.get("backend"))))
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
        parts += [Text("build log:", style="bold red"), Text(log.rstrip("\n"))]
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
            metavar="REPLICAS", min=0, help="Wanted replicas; 0 drains and stops every replica now."
        ),
    ],
) -> None:
    """Set the number of replicas of a function."""
    state = get_state(ctx)
    with state.client() as client:
        client.scale(name, replicas)
    plural = "replica" if replicas == 1 else "replicas"
    state.out.print(f"scaled {name!r} to {replicas} {plural}", highlight=False, markup=False)
