"""Helpers for unit-testing the example handlers directly, without a faasbox server.

The fake event mirrors the handler contract (shared API.md, "Python handler contract");
these are unit tests of the examples only. End-to-end proof that they deploy and run on
faasbox lives in the project's own tests and in bench/.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import parse_qsl

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent


class FakeHeaders(dict):
    def __init__(self, items: dict[str, str] | None = None) -> None:
        super().__init__({k.lower(): v for k, v in (items or {}).items()})

    def __getitem__(self, key: str) -> str:
        return dict.__getitem__(self, key.lower())

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and dict.__contains__(self, key.lower())

    def get(self, key: str, default: Any = None) -> Any:
        return dict.get(self, key.lower(), default)


class FakeEvent:
    def __init__(
        self,
        method: str = "GET",
        path: str = "/",
        query: str = "",
        body: bytes | str | dict | list | None = b"",
        headers: dict[str, str] | None = None,
    ) -> None:
        if isinstance(body, dict | list):
            body = json.dumps(body)
        if isinstance(body, str):
            body = body.encode()
        self.body = body or b""
        self.method = method
        self.path = path
        self.query_string = query
        self.query = dict(parse_qsl(query, keep_blank_values=True))
        self.headers = FakeHeaders(headers)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


class FakeContext:
    def __init__(self, function_name: str = "test", timeout: float = 30.0) -> None:
        self.call_id = "test-call-id"
        self.function_name = function_name
        self.deadline = time.time() + timeout

    def remaining_time(self) -> float:
        return max(0.0, self.deadline - time.time())


def load_handler(directory: str) -> ModuleType:
    """Import examples/<directory>/handler.py fresh, under a unique module name."""
    name = "example_" + directory.replace("-", "_")
    path = EXAMPLES / directory / "handler.py"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


@pytest.fixture
def event():
    return FakeEvent


@pytest.fixture
def context():
    return FakeContext()


@pytest.fixture(scope="session")
def load():
    return load_handler
