"""The safety wrapper: the same lifecycle guarantees for every backend."""

from __future__ import annotations

import asyncio
import socket
from typing import cast

from faasbox.errors import SandboxDead
from faasbox.sandbox.api import (
    ExitStatus,
    Injection,
    OutputSink,
    Prewarming,
    Sandbox,
    SandboxBackend,
    SandboxSpec,
)


class SafeSandbox:
    """Wraps a backend's sandbox: destroy is idempotent and safe to race; after destroy every
    other call raises ``SandboxDead``."""

    __slots__ = ("_destroy_task", "_destroyed", "_inner", "injected")

    def __init__(self, inner: Sandbox) -> None:
        self._inner = inner
        self._destroyed = False
        self._destroy_task: asyncio.Future[None] | None = None
        # A stem cell takes one function, once (``SafeBackend.inject``).
        self.injected = False

    @property
    def id(self) -> str:
        return self._inner.id

    @property
    def destroyed(self) -> bool:
        return self._destroyed

    def _check(self) -> None:
        if self._destroyed:
            raise SandboxDead(f"sandbox {self._inner.id} was destroyed")

    @property
    def channel(self) -> socket.socket:
        self._check()
        return self._inner.channel

    @property
    def exited(self) -> asyncio.Future[ExitStatus]:
        # Reading the exit status stays allowed after destroy: it is how callers learn why.
        return self._inner.exited

    async def destroy(self) -> None:
        self._destroyed = True
        if self._destroy_task is None:
            self._destroy_task = asyncio.ensure_future(self._inner.destroy())
        await asyncio.shield(self._destroy_task)


class SafeBackend:
    def __init__(self, inner: SandboxBackend) -> None:
        self._inner = inner
        self.name = inner.name
        self.capabilities = inner.capabilities

    async def create(self, spec: SandboxSpec, on_output: OutputSink) -> SafeSandbox:
        return SafeSandbox(await self._inner.create(spec, on_output))

    async def inject(self, sandbox: SafeSandbox, injection: Injection) -> None:
        """Give a stem cell its function: once per sandbox, only on backends that declare
        ``prewarm`` (see ``sandbox.api``)."""
        sandbox._check()
        if "prewarm" not in self.capabilities:
            raise RuntimeError(f"the {self.name} backend does not prewarm sandboxes")
        if sandbox.injected:
            raise RuntimeError(f"sandbox {sandbox.id} already serves a function")
        sandbox.injected = True
        await cast(Prewarming, self._inner).inject(sandbox.id, injection)
