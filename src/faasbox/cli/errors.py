"""``CliError``: a user-facing failure a command reports as one line (plus detail), exit 1.

Commands turn the errors of what they use (``StackError``, ``ScaffoldError``) into this at
their edge, so ``main`` needs to know only this and ``faasbox.client``'s errors."""

from __future__ import annotations


class CliError(Exception):
    def __init__(self, message: str, detail: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail
