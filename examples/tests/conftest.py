"""Helpers for unit-testing the example handlers directly, without a faasbox server.

Events and contexts are the runtime's own classes (faasbox/runtime/python/bootstrap.py);
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

import pytest

from faasbox.runtime.python.bootstrap import Context, Event

EXAMPLES = Path(__file__).resolve().parent.parent


def FakeEvent(
    method: str = "GET",
    path: str = "/",
    query: str = "",
    body: bytes | str | dict | list | None = b"",
    headers: dict[str, str] | None = None,
) -> Event:
    """The runtime's own Event, built from what the host would send."""
    if isinstance(body, dict | list):
        body = json.dumps(body)
    if isinstance(body, str):
        body = body.encode()
    head = {"m": method, "p": path, "q": query, "h": [[k, v] for k, v in (headers or {}).items()]}
    return Event(head, body or b"")


def FakeContext(function_name: str = "test", timeout: float = 30.0) -> Context:
    return Context("test-call-id", function_name, time.time() + timeout)


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
