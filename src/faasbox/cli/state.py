"""What every command shares: the gateway chosen on the command line, and the consoles."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import typer
from rich.console import Console

from faasbox.client import DEFAULT_GATEWAY, Client, normalize_url

if TYPE_CHECKING:
    from faasbox.stack import Stack


def make_console(*, stderr: bool = False) -> Console:
    console = Console(stderr=stderr)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        # Piped or captured output has no width: rich would assume 80 and squeeze tables
        # into unreadable columns, so give them room (a table is only as wide as its cells).
        console.width = 200
    return console


@dataclass
class CliState:
    # From --gateway or FAASBOX_GATEWAY; None when neither is given.
    gateway: str | None = None
    out: Console = field(default_factory=make_console)
    err: Console = field(default_factory=lambda: make_console(stderr=True))

    def gateway_url(self, stack: Stack | None = None) -> str:
        """--gateway / FAASBOX_GATEWAY, then the stack file's provider.gateway, then the default."""
        stacked = stack.provider.gateway if stack is not None else None
        return normalize_url(self.gateway or stacked or DEFAULT_GATEWAY)

    def client(self, stack: Stack | None = None, timeout: float = 30.0) -> Client:
        return Client(self.gateway_url(stack), timeout)


def get_state(ctx: typer.Context) -> CliState:
    state = ctx.find_object(CliState)
    if state is None:
        state = ctx.ensure_object(CliState)
    return state
