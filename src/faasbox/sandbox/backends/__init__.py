"""Sandbox backends by alias, imported lazily (kombu style)."""

from __future__ import annotations

import difflib
import importlib
import sys
from typing import NamedTuple

from faasbox.errors import BadRequest, FaasboxError
from faasbox.sandbox.api import SandboxBackend

BACKENDS = {
    "process": "faasbox.sandbox.backends.process:ProcessBackend",
    "namespaces": "faasbox.sandbox.backends.namespaces:NamespacesBackend",
    "oci": "faasbox.sandbox.backends.oci:OciBackend",
}


# The default: the strongest backend this machine allows.
AUTO = "auto"


class Choice(NamedTuple):
    name: str
    # Why this backend runs, for `faasbox up`, /system/info and `faasbox describe`.
    reason: str


def choose_backend(name: str = AUTO) -> Choice:
    """Resolve ``auto`` to ``namespaces`` where the kernel and tools allow it, else
    ``process`` with the reason; a named backend is loaded as asked (or fails clearly)."""
    if name != AUTO:
        load_backend(name)
        return Choice(name, "chosen with --backend")
    if sys.platform != "linux":
        return Choice("process", f"the namespaces backend needs Linux, not {sys.platform}")
    try:
        load_backend("namespaces")
    except FaasboxError as exc:
        return Choice("process", f"namespaces unavailable: {exc.message}")
    return Choice("namespaces", "default on Linux")


def load_backend(name: str) -> SandboxBackend:
    target = BACKENDS.get(name)
    if target is None:
        close = difflib.get_close_matches(name, [*BACKENDS, AUTO], n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise BadRequest(
            f"unknown sandbox backend {name!r}{hint} (available: {AUTO}, {', '.join(sorted(BACKENDS))})"
        )
    module_name, _, attr = target.partition(":")
    cls = getattr(importlib.import_module(module_name), attr)
    backend: SandboxBackend = cls()
    return backend
