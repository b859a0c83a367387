"""The sandbox seam: one small Protocol, several one-file backends.

Behaviour every backend must have (checked by ``tests/sandbox/test_contract.py``, run
against each backend, and enforced for all of them by ``safety.SafeSandbox``):

- ``create`` starts the runtime command inside a fresh sandbox and returns once the
  process exists; the host end of the channel socket is ``Sandbox.channel``.
- Everything the process writes to stdout/stderr reaches ``on_output(stream, data)``.
- ``exited`` resolves with the ``ExitStatus`` when the sandbox's main process is gone,
  whatever the cause (normal exit, crash, kill, limit).
- ``destroy`` kills every process of the sandbox and frees what it held; calling it twice
  is harmless; any other call after it raises ``SandboxDead``.

Backends with the ``prewarm`` capability also make *stem cells*: a sandbox created (from a
spec with ``prewarm`` set) before anyone knows which function it will run, with the
runtime started and waiting for its init. ``inject`` then gives it one function, once: the
code and dependency layers appear read-only inside, the secrets at ``SECRETS_DIR``, the
cgroup limits replace the stem cell's (its runtime sets the rlimits). Nothing is ever taken back out: a stem cell serves exactly
one function and is destroyed with it.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

# stream is "stdout" or "stderr"; data is raw bytes as read from the pipe.
OutputSink = Callable[[str, bytes], None]


@dataclass(frozen=True)
class Limits:
    memory_bytes: int = 256 * 1024 * 1024
    cpu: float | None = None  # cores; None = unlimited
    max_file_bytes: int = 64 * 1024 * 1024
    pids: int = 128
    open_files: int = 1024
    # Share of the CPU when it is contended, relative to the default of 100 (cgroup v2's
    # cpu.weight scale); backends without cgroups ignore it.
    cpu_weight: int = 100

    def rlimits_from(self, start: Limits) -> dict[str, int]:
        """The rlimits a stem cell created with ``start`` must change to have these (the
        runtime sets them itself: init's ``rlimits``), by the runtime's names."""
        changed = {}
        if self.max_file_bytes != start.max_file_bytes:
            changed["fsize"] = self.max_file_bytes
        if self.open_files != start.open_files:
            changed["nofile"] = self.open_files
        return changed


@dataclass(frozen=True)
class SandboxSpec:
    sandbox_id: str
    argv: list[str]
    env: dict[str, str]
    # A private writable directory: the process's cwd and its /tmp.
    workdir: Path
    # Directories the runtime must read (code, dependency layers, the runtime itself).
    read_only: list[Path] = field(default_factory=list)
    # Network beyond the sandbox's own loopback (backends that isolate the network).
    egress: bool = False
    limits: Limits = field(default_factory=Limits)
    # Secret name -> host file holding its value; sandboxing backends mount each read-only
    # at SECRETS_DIR/<name> (the process backend cannot: it only names the host files).
    secrets: dict[str, Path] = field(default_factory=dict)
    # Set for a stem cell (backends with the "prewarm" capability only).
    prewarm: Prewarm | None = None


SECRETS_DIR = "/var/openfaas/secrets"


@dataclass(frozen=True)
class Prewarm:
    """How a stem cell is laid out: each of ``roots`` (host directories such as the code
    and layer stores) appears inside at its own path, empty, and so does ``SECRETS_DIR``,
    until ``inject`` fills them."""

    # A host directory the backend owns for this sandbox (created and removed by it);
    # no other user of the machine may reach it.
    slot: Path
    roots: tuple[Path, ...]
    # Where ``inject`` writes the secrets' plaintext, shown at SECRETS_DIR: a directory
    # inside the sandbox's working directory (removed with it), which the backend creates.
    secrets: Path


@dataclass(frozen=True)
class Injection:
    """One function for a stem cell."""

    # Directories to show read-only, each a direct child of one of ``Prewarm.roots``, at
    # the same path as on the host.
    read_only: tuple[Path, ...]
    # Secret name -> value; shown read-only at SECRETS_DIR/<name>.
    secrets: dict[str, bytes] = field(default_factory=dict)
    # Replace the stem cell's cgroup limits (memory, CPU, processes). The rlimits (file
    # size, open files) belong to the processes: the runtime sets those itself at init
    # (``Limits.rlimits_from``), since the host may not (no CAP_SYS_RESOURCE over them).
    limits: Limits = field(default_factory=Limits)


@dataclass(frozen=True)
class ExitStatus:
    returncode: int | None  # None when killed by a signal
    signal: int | None = None
    oom_killed: bool = False

    def describe(self) -> str:
        if self.oom_killed:
            return "killed: out of memory"
        if self.signal is not None:
            import signal as _signal

            try:
                name = _signal.Signals(self.signal).name
            except ValueError:
                name = str(self.signal)
            return f"killed by signal {name}"
        if self.returncode is None:  # a forked replica: not the platform's child
            return "ended"
        return f"exited with code {self.returncode}"


class Sandbox(Protocol):
    @property
    def id(self) -> str: ...

    @property
    def channel(self) -> socket.socket:
        """Host end of the runtime's channel (a connected stream socket)."""
        ...

    @property
    def exited(self) -> asyncio.Future[ExitStatus]: ...

    async def destroy(self) -> None: ...


class SandboxBackend(Protocol):
    name: str
    # Guarantees the backend gives, e.g. {"rlimits"} or {"namespaces", "cgroups", "seccomp"};
    # "mounts": it mounts SandboxSpec.secrets at SECRETS_DIR (else the files stay where
    # they are on the host, named by FAASBOX_SECRETS_DIR); "prewarm": it makes stem cells
    # and implements ``Prewarming``; "fork": it implements ``Forking``.
    capabilities: frozenset[str]

    async def create(self, spec: SandboxSpec, on_output: OutputSink) -> Sandbox: ...


class Forking(Protocol):
    """What a backend with the ``fork`` capability adds (see ``sandbox/forked.py``)."""

    async def fork(
        self,
        zygote: socket.socket,
        sandbox_id: str,
        limits: Limits,
        on_output: OutputSink,
        timeout: float,
    ) -> Sandbox:
        """A new replica forked by the zygote whose channel's host end is ``zygote`` (a
        runtime initialised with ``zygote: true`` in a sandbox of this backend), in its own
        cgroup with ``limits``. It dies with the zygote's sandbox."""
        ...


class Prewarming(Protocol):
    """What a backend with the ``prewarm`` capability adds."""

    async def relimit(self, sandbox_id: str, limits: Limits) -> None:
        """Replace a stem cell's cgroup limits before it gets its function (a stem cell
        starts with a small CPU share, raised once its runtime waits, off the cold path)."""
        ...

    async def inject(self, sandbox_id: str, injection: Injection) -> None:
        """Give a running stem cell its function (see ``Injection``). Raises
        ``FaasboxError`` or ``OSError`` if it cannot; the stem cell must then be destroyed,
        since it may hold part of the function."""
        ...
