"""The safety wrapper: the same lifecycle guarantees for every backend."""

from __future__ import annotations

import asyncio
import socket
from typing import cast

from faasbox.errors import SandboxDead
from faasbox.sandbox.api import (
    ExitStatus,
    Forking,
    Injection,
    Limits,
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

    def report_exit(self, code: int) -> None:
        """How a forked sandbox's process ended, as its zygote saw it (``sandbox/forked``)."""
        report = getattr(self._inner, "report_exit", None)
        if report is not None:
            report(code)

    @property
    def ns_pid(self) -> int | None:
        """A forked sandbox's pid as its zygote knows it."""
        pid: int | None = getattr(self._inner, "ns_pid", None)
        return pid

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

    async def relimit(self, sandbox: SafeSandbox, limits: Limits) -> None:
        """A stem cell's cgroup limits, before ``inject`` (backends with ``prewarm``)."""
        sandbox._check()
        if "prewarm" not in self.capabilities or sandbox.injected:
            raise RuntimeError(f"sandbox {sandbox.id} is not a waiting stem cell")
        await cast(Prewarming, self._inner).relimit(sandbox.id, limits)

    async def fork(
        self,
        zygote: SafeSandbox,
        sandbox_id: str,
        limits: Limits,
        on_output: OutputSink,
        timeout: float,
    ) -> SafeSandbox:
        """A replica forked by the zygote running in ``zygote`` (backends with ``fork``)."""
        if "fork" not in self.capabilities:
            raise RuntimeError(f"the {self.name} backend does not fork replicas")
        inner = cast(Forking, self._inner)
        return SafeSandbox(await inner.fork(zygote.channel, sandbox_id, limits, on_output, timeout))
