"""Small formatting helpers shared by the commands."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from rich.console import Console, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from faasbox.client import FunctionStatus

STATUS_STYLE = {"ready": "green", "building": "yellow", "failed": "red"}


def print_error(console: Console, message: str, detail: str | None = None) -> None:
    """``error: message`` in red, then ``detail`` (a build log, a traceback) as plain text."""
    console.print(Text.assemble(("error: ", "bold red"), message), soft_wrap=True)
    if detail:
        console.print(Text(detail.rstrip("\n")), soft_wrap=True, highlight=False)


def print_json(console: Console, value: Any) -> None:
    console.print_json(json.dumps(value), indent=2)


def fmt_time(value: object, *, short: bool = False) -> str:
    """An RFC 3339 string or a unix time (s, ms, µs or ns) → local ``YYYY-MM-DD HH:MM:SS``;
    with ``short``, only ``HH:MM:SS`` for a time of today."""
    if value is None or value == "":
        return "-"
    when: datetime | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
        for scale in (1e9, 1e6, 1e3):
            if seconds > scale * 1e8:  # later than 1973 in that unit
                seconds /= scale
                break
        when = datetime.fromtimestamp(seconds, tz=UTC)
    elif isinstance(value, str):
        try:
            when = datetime.fromisoformat(value)
        except ValueError:
            return value
    if when is None:
        return str(value)
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    local = when.astimezone()
    if short and local.date() == datetime.now().astimezone().date():
        return local.strftime("%H:%M:%S")
    return local.strftime("%Y-%m-%d %H:%M:%S")


def fmt_seconds(value: object) -> str:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return "-"
    if value < 1:
        return f"{value * 1000:.1f}ms"
    return f"{value:.2f}s"


def fmt_value(value: object) -> str:
    if value is None or value == "" or value == {} or value == []:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, Mapping):
        return "\n".join(f"{k}={v}" for k, v in value.items())
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)
    return str(value)


def key_values(title: str, rows: Iterable[tuple[str, RenderableType | str]]) -> Panel:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold cyan", no_wrap=True)
    grid.add_column(overflow="fold")
    for key, value in rows:
        grid.add_row(key, Text(value) if isinstance(value, str) else value)
    return Panel(grid, title=title, title_align="left", expand=False)


def versions(fn: FunctionStatus) -> tuple[object, object, str | None, bool]:
    """``(serving, latest, status of latest, something serves)`` of a function.

    ``version`` is the version serving calls, or the latest one when none is ready;
    ``latestVersion`` (older gateways lack it) the newest deploy, whose status ``status``
    is. So a failed or building update leaves the older version serving."""
    version = fn.get("version")
    latest = fn.get("latestVersion", version)
    status = fn.get("status")
    serves = status == "ready" or (latest is not None and latest != version)
    return version, latest, status, serves


def function_state(fn: FunctionStatus) -> Text:
    """``ready (v2)``; ``ready (v2), v3 failed`` or ``…, v3 building`` while an update is
    not (yet) ready; ``failed`` or ``building`` when no version serves."""
    version, latest, status, serves = versions(fn)
    if status is None:
        return Text("-")
    if not serves:
        return Text(status, style=STATUS_STYLE.get(status, ""))
    text = Text(f"ready (v{version})" if version is not None else "ready", style="green")
    if status != "ready" and latest != version:
        text.append(", ")
        text.append(f"v{latest} {status}", style=STATUS_STYLE.get(status, ""))
    return text
