"""``faasbox logs``: print (and follow) what a function wrote."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer
from rich.text import Text

from faasbox.cli.params import NameArg
from faasbox.cli.state import get_state
from faasbox.client import LogLine

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(s|m|h|d)$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def logs(
    ctx: typer.Context,
    name: NameArg,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new lines until Ctrl-C.")
    ] = False,
    tail: Annotated[
        int | None,
        typer.Option(
            "--tail", "-n", min=0, metavar="N", help="Only the last N lines.", show_default=False
        ),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(
            "--since",
            metavar="WHEN",
            help="Only lines after WHEN: a duration ago (30s, 5m, 2h, 1d) or an RFC 3339 time.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Print a function's logs: what its handlers printed or logged.

    Each line shows its time, the replica that wrote it and the first 8 characters of the
    call id. Ctrl-C stops following.

    Examples:

    * `faasbox logs hello --tail 20`
    * `faasbox logs hello -f --since 5m`
    """
    state = get_state(ctx)
    since_rfc3339 = parse_since(since) if since else None
    try:
        with state.client() as client:
            for line in client.logs(name, tail=tail, since=since_rfc3339, follow=follow):
                state.out.print(format_line(line), soft_wrap=True, highlight=False)
    except KeyboardInterrupt:
        raise typer.Exit(0) from None


def parse_since(text: str, now: datetime | None = None) -> str:
    """``5m`` → the RFC 3339 UTC time five minutes ago; an RFC 3339 time → itself, in UTC.

    The API takes only RFC 3339 (as the OpenFaaS logs API does), so durations are turned
    into a time here."""
    now = now or datetime.now(UTC)
    m = _DURATION.match(text.strip())
    if m:
        when = now - timedelta(seconds=float(m.group(1)) * _UNIT[m.group(2)])
    else:
        try:
            when = datetime.fromisoformat(text.strip())
        except ValueError:
            raise typer.BadParameter(
                f"{text!r}: use a duration (30s, 5m, 2h, 1d) or an RFC 3339 time "
                "(2024-05-01T12:00:00Z)",
                param_hint="--since",
            ) from None
        if when.tzinfo is None:
            when = when.astimezone()  # a time without offset is local time
    return when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def format_line(line: LogLine) -> Text:
    """``timestamp instance [call_id[:8]] text``; stderr text in red."""
    text = Text()
    if line.get("timestamp"):
        text.append(str(line["timestamp"]), style="dim")
        text.append(" ")
    if line.get("instance"):
        text.append(str(line["instance"]), style="cyan")
        text.append(" ")
    call_id = line.get("call_id")
    if call_id:
        text.append(f"[{call_id[:8]}]", style="magenta")
        text.append(" ")
    text.append(
        str(line.get("text", "")).rstrip("\n"),
        style="red" if line.get("stream") == "stderr" else "",
    )
    return text
