"""``--help`` that reads like a command line's: ``--file FILE``, ``--tail N``, nothing after
a flag, ``NAME`` in the usage line.

Recent typer versions print Python types in help (``<str>``, ``<list[Path]>``, ``<bool>``
even after a flag, ``<int range> [x>=0]``) and write required arguments as ``{NAME}``. The
command classes here (``Typer(cls=PlainGroup)``, ``app.command(cls=PlainCommand)``) give
every option a metavar (its own, else one named after its type: ``TEXT``, ``INTEGER``,
``PATH``), none to flags, and show arguments by their name alone. With typer versions that
print click's metavars, they change nothing visible.
"""

from __future__ import annotations

import re
from typing import Any

from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

__all__ = ["PlainCommand", "PlainGroup"]

_TYPE_METAVARS = {
    "str": "TEXT",
    "int": "INTEGER",
    "float": "NUMBER",
    "path": "PATH",
    "file": "FILE",
    "dir": "DIR",
    "directory": "DIR",
}


class _PlainArgument(TyperArgument):
    def display_type_rich(self, ctx: Any) -> str | None:
        return None  # the argument's name (its metavar) says it all

    def get_usage_pieces(self, ctx: Any) -> list[str]:
        name = self.metavar or (self.name or "").upper()
        if not self.required:
            name = f"[{name}]"
        if self.nargs != 1:
            name += "..."
        return [name]

    def _get_number_range_help_str(self) -> str | None:
        return None  # "[x>=0]": the help text says what is allowed


class _PlainOption(TyperOption):
    def _get_number_range_help_str(self) -> str | None:
        return None


def _type_metavar(param: Any, ctx: Any) -> str | None:
    display = getattr(param, "display_type", None)
    if display is None:
        return None  # an older typer: click's own metavars are already plain
    try:
        label = str(display(ctx))
    except Exception:
        return None
    m = re.fullmatch(r"<?(?:list\[)?(\w+)(?: range)?\]?>?", label)
    word = m.group(1).lower() if m else ""
    return _TYPE_METAVARS.get(word, word.upper() or "VALUE")


def _plain(param: Any, ctx: Any) -> None:
    if isinstance(param, TyperArgument):
        if not isinstance(param, _PlainArgument):
            param.__class__ = _PlainArgument
    elif isinstance(param, TyperOption):
        if not isinstance(param, _PlainOption):
            param.__class__ = _PlainOption
        if param.metavar is None:
            if param.is_flag or param.count:
                param.metavar = ""
            else:
                param.metavar = _type_metavar(param, ctx)


class PlainCommand(TyperCommand):
    def get_params(self, ctx: Any) -> list[Any]:
        params = super().get_params(ctx)
        for param in params:
            _plain(param, ctx)
        return params


class PlainGroup(TyperGroup):
    def get_params(self, ctx: Any) -> list[Any]:
        params = super().get_params(ctx)
        for param in params:
            _plain(param, ctx)
        return params
