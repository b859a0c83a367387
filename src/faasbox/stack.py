"""The stack file (``faasbox.yml``): its model, its loader, and zipping a function directory.

The format follows OpenFaaS ``stack.yml`` in spirit::

    version: 1
    provider:
      gateway: http://127.0.0.1:8080     # optional
    functions:
      hello:
        runtime: python3                 # default python3
        handler: handler.handle          # default handler.handle
        path: ./hello                    # relative to this file; default ./<name>
        env: {KEY: value}
        secrets: []
        labels: {com.openfaas.scale.min: "0"}
        annotations: {}
        limits: {memory: 128Mi, cpu: 500m}
        timeout: 30s
        concurrency: 1

Every problem is a ``StackError`` whose message names the file and the field.
"""

from __future__ import annotations

import difflib
import io
import os
import re
import stat
import zipfile
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
)

from faasbox.client import valid_name
from faasbox.errors import BadRequest
from faasbox.units import parse_cpu, parse_duration, parse_memory

__all__ = [
    "DEFAULT_STACK_FILE",
    "EXCLUDED_DIRS",
    "FunctionDef",
    "Stack",
    "StackError",
    "load_stack",
    "valid_name",
    "zip_directory",
]

DEFAULT_STACK_FILE = "faasbox.yml"
HANDLER_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$")
EXCLUDED_DIRS = frozenset({"__pycache__", ".git", ".venv"})
EXCLUDED_SUFFIXES = (".pyc",)
# A fixed timestamp (the earliest a zip can hold) keeps the bundle, and its sha256, the
# same for the same files.
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


class StackError(Exception):
    """The stack file or a function directory is not usable; the message says why."""


def _scalar_str(value: Any) -> Any:
    # YAML turns `min: 0` and `DEBUG: true` into int and bool; users mean the text.
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return value


def _str_map(value: Any) -> Any:
    if value is None:
        return {}
    if isinstance(value, dict):
        return {str(k): _scalar_str(v) for k, v in value.items()}
    return value


StrMap = Annotated[dict[str, str], BeforeValidator(_str_map)]


class Limits(BaseModel):
    model_config = ConfigDict(extra="forbid")

    memory: Annotated[str | None, BeforeValidator(_scalar_str)] = None
    cpu: Annotated[str | None, BeforeValidator(_scalar_str)] = None

    @field_validator("memory")
    @classmethod
    def _memory(cls, v: str | None) -> str | None:
        if v is not None:
            _check_unit(parse_memory, v)
        return v

    @field_validator("cpu")
    @classmethod
    def _cpu(cls, v: str | None) -> str | None:
        if v is not None:
            _check_unit(parse_cpu, v)
        return v


def _check_unit(parse: Any, value: str) -> None:
    try:
        parse(value)
    except BadRequest as exc:
        raise ValueError(exc.message) from None


class FunctionDef(BaseModel):
    """One function of the stack; ``path`` is absolute once loaded."""

    model_config = ConfigDict(extra="forbid")

    name: str
    runtime: str = "python3"
    handler: str = "handler.handle"
    path: Path
    env: StrMap = Field(default_factory=dict)
    secrets: list[str] = Field(default_factory=list)
    labels: StrMap = Field(default_factory=dict)
    annotations: StrMap = Field(default_factory=dict)
    limits: Limits = Field(default_factory=Limits)
    timeout: Annotated[str | None, BeforeValidator(_scalar_str)] = None
    concurrency: int | None = Field(default=None, ge=1)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        problem = valid_name(v)
        if problem:
            raise ValueError(problem)
        return v

    @field_validator("handler")
    @classmethod
    def _handler(cls, v: str) -> str:
        if not HANDLER_RE.match(v):
            raise ValueError(f"{v!r} is not of the form module.function (e.g. handler.handle)")
        return v

    @field_validator("runtime")
    @classmethod
    def _runtime(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("runtime must not be empty")
        return v.strip()

    @field_validator("timeout")
    @classmethod
    def _timeout(cls, v: str | None) -> str | None:
        if v is not None:
            _check_unit(parse_duration, v)
            # A bare number means seconds; the API wants a duration with its unit.
            if re.fullmatch(r"\s*\d+(\.\d+)?\s*", v):
                v = f"{v.strip()}s"
        return v

    def to_spec(self) -> dict[str, Any]:
        """The deploy JSON of the API (without ``code``)."""
        spec: dict[str, Any] = {
            "service": self.name,
            "runtime": self.runtime,
            "handler": self.handler,
            "envVars": dict(self.env),
            "secrets": list(self.secrets),
            "labels": dict(self.labels),
            "annotations": dict(self.annotations),
            "limits": self.limits.model_dump(exclude_none=True),
        }
        if self.timeout is not None:
            spec["timeout"] = self.timeout
        if self.concurrency is not None:
            spec["concurrency"] = self.concurrency
        return spec


class Provider(BaseModel):
    # `name: openfaas` and the like from OpenFaaS stack files are harmless.
    model_config = ConfigDict(extra="allow")

    gateway: str | None = None


class Stack(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: Literal[1] = 1
    provider: Provider = Field(default_factory=Provider)
    functions: dict[str, FunctionDef] = Field(default_factory=dict)
    # The file it was loaded from (absolute), set by load_stack.
    _file: Path | None = PrivateAttr(default=None)

    @property
    def file(self) -> Path | None:
        return self._file

    @field_validator("provider", mode="before")
    @classmethod
    def _provider(cls, v: Any) -> Any:
        return {} if v is None else v

    @field_validator("version", mode="before")
    @classmethod
    def _version(cls, v: Any) -> Any:
        if v in ("1", "1.0", 1.0):
            return 1
        return v


def load_stack(path: str | os.PathLike[str]) -> Stack:
    """Read and validate a stack file; function paths come back absolute."""
    file = Path(path)
    shown = _shown(file)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise StackError(
            f"{shown} not found (create one with `faasbox new NAME`, or pass -f FILE)"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise StackError(f"cannot read {shown}: {exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = ""
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:
            where = f" at line {mark.line + 1}, column {mark.column + 1}"
        problem = getattr(exc, "problem", None) or str(exc)
        raise StackError(f"{shown}: invalid YAML{where}: {problem}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise StackError(f"{shown}: expected a mapping with `version`, `provider`, `functions`")
    functions = data.get("functions")
    if functions is None:
        functions = {}
    if not isinstance(functions, dict):
        raise StackError(f"{shown}: functions: expected a mapping of name → function")
    base = file.resolve().parent
    prepared: dict[str, Any] = {}
    for name, fn in functions.items():
        fn = {} if fn is None else fn
        if not isinstance(fn, dict):
            raise StackError(f"{shown}: functions.{name}: expected a mapping of settings")
        fn = dict(fn)
        fn["name"] = str(name)
        raw_path = fn.get("path") or f"./{name}"
        fn["path"] = (base / str(raw_path)).resolve()
        prepared[str(name)] = fn
    data = {**data, "functions": prepared}
    try:
        stack = Stack.model_validate(data)
    except ValidationError as exc:
        raise StackError(_describe(shown, exc)) from None
    stack._file = file.resolve()
    return stack


def _shown(file: Path) -> str:
    try:
        return str(file.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(file)


def _describe(shown: str, exc: ValidationError) -> str:
    lines = [f"{shown} is not valid:"]
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = f"unknown field {err['loc'][-1]!r}"
            hint = _did_you_mean(err["loc"])
            if hint:
                msg += f" (did you mean {hint!r}?)"
        elif err["type"] == "literal_error" and err["loc"] == ("version",):
            msg = "only version 1 is supported"
        lines.append(f"  {loc}: {msg}")
    return "\n".join(lines)


def _did_you_mean(loc: tuple[int | str, ...]) -> str | None:
    model: type[BaseModel]
    if len(loc) == 1:
        model = Stack
    elif loc[0] == "functions" and len(loc) == 3:
        model = FunctionDef
    elif loc[0] == "functions" and len(loc) == 4 and loc[2] == "limits":
        model = Limits
    else:
        return None
    known = [f for f in model.model_fields if f != "name"]
    aliases = {"environment": "env", "lang": "runtime", "env_vars": "env", "envVars": "env"}
    word = str(loc[-1])
    if word in aliases and aliases[word] in known:
        return aliases[word]
    close = difflib.get_close_matches(word, known, n=1)
    return close[0] if close else None


def zip_directory(path: str | os.PathLike[str]) -> bytes:
    """A deterministic zip of a function directory.

    Skips ``__pycache__``, ``.git``, ``.venv`` and ``*.pyc``. Entries are sorted, dated
    1980-01-01 and carry only the executable bit of their mode, so the same files give the
    same bytes. Symlinks and special files are refused: a bundle holds regular files only.
    """
    root = Path(path)
    if root.is_symlink():
        raise StackError(f"{root}: the function directory must not be a symlink")
    if not root.is_dir():
        raise StackError(f"function directory {root} does not exist")
    files: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if d not in EXCLUDED_DIRS)
        for d in dirnames:
            if (here / d).is_symlink():
                raise StackError(f"{_rel(root, here / d)}: symlinks are not allowed in a bundle")
        for f in filenames:
            full = here / f
            if f.endswith(EXCLUDED_SUFFIXES):
                continue
            mode = full.lstat().st_mode
            if stat.S_ISLNK(mode):
                raise StackError(f"{_rel(root, full)}: symlinks are not allowed in a bundle")
            if not stat.S_ISREG(mode):
                raise StackError(f"{_rel(root, full)}: not a regular file")
            files.append((full.relative_to(root).as_posix(), full))
    files.sort()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
        for arcname, full in files:
            info = zipfile.ZipInfo(arcname, date_time=_ZIP_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            executable = full.stat().st_mode & stat.S_IXUSR
            info.external_attr = (stat.S_IFREG | (0o755 if executable else 0o644)) << 16
            info.create_system = 3  # unix, whatever machine made it
            zf.writestr(info, full.read_bytes())
    return buffer.getvalue()


def _rel(root: Path, p: Path) -> str:
    return str(root.name / p.relative_to(root))
