"""Sandbox backends by alias, imported lazily (kombu style)."""

from __future__ import annotations

import difflib
import importlib

from faasbox.errors import BadRequest
from faasbox.sandbox.api import SandboxBackend

BACKENDS = {
    "process": "faasbox.sandbox.backends.process:ProcessBackend",
    "namespaces": "faasbox.sandbox.backends.namespaces:NamespacesBackend",
    "oci": "faasbox.sandbox.backends.oci:OciBackend",
}


def load_backend(name: str) -> SandboxBackend:
    target = BACKENDS.get(name)
    if target is None:
        close = difflib.get_close_matches(name, BACKENDS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise BadRequest(
            f"unknown sandbox backend {name!r}{hint} (available: {', '.join(sorted(BACKENDS))})"
        )
    module_name, _, attr = target.partition(":")
    cls = getattr(importlib.import_module(module_name), attr)
    backend: SandboxBackend = cls()
    return backend
