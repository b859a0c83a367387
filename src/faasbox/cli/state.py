"""What every command shares: the gateway chosen on the command line, and the consoles."""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import typer
from rich.console import Console

from faasbox.cli.errors import CliError
from faasbox.client import DEFAULT_GATEWAY, Client, ClientError, normalize_url

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
    # True when it came from --gateway on this command line (not the environment).
    gateway_from_flag: bool = False
    out: Console = field(default_factory=make_console)
    err: Console = field(default_factory=lambda: make_console(stderr=True))

    def gateway_url(self, stack: Stack | None = None) -> str:
        """--gateway / FAASBOX_GATEWAY, then the stack file's provider.gateway, then the default."""
        stacked = stack.provider.gateway if stack is not None else None
        return normalize_url(self.gateway or stacked or DEFAULT_GATEWAY)

    def client(self, stack: Stack | None = None, timeout: float = 30.0) -> Client:
        try:
            return Client(self.gateway_url(stack), timeout)
        except ClientError as exc:
            if self.gateway:  # --gateway or FAASBOX_GATEWAY: a usage error (exit 2)
                raise typer.BadParameter(exc.message, param_hint="--gateway") from None
            where = f"{stack.file}: " if stack is not None and stack.file else ""
            raise CliError(f"{where}provider.gateway: {exc.message}") from None

    def gateway_args(self) -> str:
        """`` --gateway URL`` for a command to suggest, when the user passed --gateway and
        it is not the default (FAASBOX_GATEWAY stays set for the next command); else ``""``."""
        if not self.gateway_from_flag or not self.gateway:
            return ""
        url = normalize_url(self.gateway)
        return "" if url == DEFAULT_GATEWAY else f" --gateway {shlex.quote(url)}"


def get_state(ctx: typer.Context) -> CliState:
    state = ctx.find_object(CliState)
    if state is None:
        state = ctx.ensure_object(CliState)
    return state
