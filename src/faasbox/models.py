"""API models at the HTTP edge (pydantic). Inside, the platform uses ``Deployment``."""

from __future__ import annotations

import difflib
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from faasbox.errors import BadRequest, InvalidName

NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
RUNTIMES = ("python3",)


def check_name(name: str) -> str:
    if not isinstance(name, str) or len(name) > 63 or not NAME_RE.fullmatch(name):
        raise InvalidName(
            f"invalid function name {name!r}: use lower-case letters, digits and '-', "
            "starting and ending with a letter or digit, at most 63 characters"
        )
    return name


class Limits(BaseModel):
    model_config = ConfigDict(extra="forbid")
    memory: str | None = None
    cpu: str | None = None


class FunctionSpec(BaseModel):
    """The deploy body of API.md, without ``code``."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    service: str
    runtime: str = "python3"
    handler: str = "handler.handle"
    envVars: dict[str, str] = Field(default_factory=dict)
    secrets: list[str] = Field(default_factory=list)
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    limits: Limits = Field(default_factory=Limits)
    requests: Limits | None = None
    timeout: str | float | None = None
    concurrency: int = Field(default=1, ge=1, le=1000)
    # OpenFaaS clients send these; accepted and kept, not used by faasbox.
    image: str | None = None
    namespace: str | None = None
    network: str | None = None
    constraints: list[str] | None = None
    readOnlyRootFilesystem: bool | None = None

    @field_validator("runtime")
    @classmethod
    def _runtime(cls, v: str) -> str:
        if v not in RUNTIMES:
            raise ValueError(f"unsupported runtime {v!r}; supported: {', '.join(RUNTIMES)}")
        return v

    @field_validator("handler")
    @classmethod
    def _handler(cls, v: str) -> str:
        module, _, func = v.rpartition(".")
        if not module or not func or not all(p.isidentifier() for p in [*module.split("."), func]):
            raise ValueError(f"handler {v!r} must be 'module.function', e.g. handler.handle")
        return v

    @field_validator("envVars")
    @classmethod
    def _env(cls, v: dict[str, str]) -> dict[str, str]:
        for k in v:
            if not k or "=" in k or "\0" in k:
                raise ValueError(f"invalid environment variable name {k!r}")
            if k.startswith("FAASBOX_"):
                raise ValueError(f"environment variable {k!r}: the FAASBOX_ prefix is reserved")
        return v


# Names people carry over from stack files and other platforms.
_ALIASES = {"env": "envVars", "environment": "envVars", "env_vars": "envVars", "name": "service"}


def _describe(error: Any) -> str:
    loc = [str(p) for p in error["loc"]]
    where = ".".join(loc) or "body"
    if error["type"] == "extra_forbidden" and loc:
        model = Limits if len(loc) == 2 and loc[0] in ("limits", "requests") else FunctionSpec
        close = [_ALIASES[loc[-1]]] if len(loc) == 1 and loc[-1] in _ALIASES else []
        close = close or difflib.get_close_matches(loc[-1], model.model_fields, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return f"unknown field {where!r}{hint}"
    return f"{where}: {error['msg']}"


def parse_spec(data: Any) -> FunctionSpec:
    if not isinstance(data, dict):
        raise BadRequest("deploy spec must be a JSON object")
    try:
        spec = FunctionSpec.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(_describe(e) for e in exc.errors())
        raise BadRequest(f"invalid deploy spec: {problems}") from None
    check_name(spec.service)
    return spec
