"""The ``process`` backend: a child process with rlimits. Portable, for development.

It isolates little: the child runs as the platform's user and sees its filesystem. What it
does give: its own session and process group (destroy kills every process in it), a
private working directory, a scrubbed environment, and limits on address space, file size
and open files.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import shutil
import signal
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from faasbox.sandbox.api import ExitStatus, Limits, OutputSink, SandboxSpec


def _rlimits(limits: Limits, *, address_space: bool = True) -> Callable[[], None]:
    def apply() -> None:  # runs in the child between fork and exec
        if address_space:
            resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
        resource.setrlimit(resource.RLIMIT_FSIZE, (limits.max_file_bytes, limits.max_file_bytes))
        resource.setrlimit(resource.RLIMIT_NOFILE, (limits.open_files, limits.open_files))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    return apply


class _Pipes(asyncio.SubprocessProtocol):
    def __init__(
        self,
        on_output: OutputSink,
        exited: asyncio.Future[ExitStatus],
        classify: Callable[[ExitStatus], ExitStatus],
    ) -> None:
        self._on_output = on_output
        self._exited = exited
        self._classify = classify
        self.transport: asyncio.SubprocessTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        self._on_output("stdout" if fd == 1 else "stderr", data)

    def process_exited(self) -> None:
        assert self.transport is not None
        rc = self.transport.get_returncode()
        if not self._exited.done():
            died = rc is not None and rc < 0
            status = ExitStatus(None, signal=-rc) if died and rc else ExitStatus(rc)
            self._exited.set_result(self._classify(status))


class ProcessSandbox:
    def __init__(
        self,
        spec: SandboxSpec,
        channel: socket.socket,
        transport: asyncio.SubprocessTransport,
        exited: asyncio.Future[ExitStatus],
        release: Callable[[], None],
    ) -> None:
        self._spec = spec
        self._release = release
        self._channel = channel
        self._transport = transport
        self._exited = exited
        self.pid = transport.get_pid()

    @property
    def id(self) -> str:
        return self._spec.sandbox_id

    @property
    def channel(self) -> socket.socket:
        return self._channel

    @property
    def exited(self) -> asyncio.Future[ExitStatus]:
        return self._exited

    async def destroy(self) -> None:
        # The child leads its own process group; killing the group takes along anything it
        # forked, including children that outlived their parent's response.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._exited), 5)
        self._transport.close()
        self._channel.close()
        await asyncio.to_thread(shutil.rmtree, self._spec.workdir, True)
        await asyncio.to_thread(self._release)


class ProcessBackend:
    name = "process"
    capabilities = frozenset({"rlimits", "process-group", "private-workdir", "scrubbed-env"})

    def command(self, spec: SandboxSpec, tmp: Path) -> tuple[list[str], dict[str, str]]:
        """The command line to start and the environment changes it needs; backends that
        wrap the runtime (bwrap, runc) override this and nothing else."""
        return list(spec.argv), {"TMPDIR": str(tmp), "HOME": str(spec.workdir)}

    def preexec(self, spec: SandboxSpec) -> Callable[[], None]:
        """Prepare the sandbox's resources (in the platform), and return what runs in the
        child between fork and exec: here, only the rlimits."""
        return _rlimits(spec.limits)

    def classify(self, spec: SandboxSpec, status: ExitStatus) -> ExitStatus:
        """Refine how the sandbox ended (a wrapper's exit code, an OOM kill)."""
        return status

    def release(self, spec: SandboxSpec) -> None:
        """Free what the sandbox held beyond its processes (runs after they are gone)."""

    async def create(self, spec: SandboxSpec, on_output: OutputSink) -> ProcessSandbox:
        loop = asyncio.get_running_loop()
        spec.workdir.mkdir(parents=True, exist_ok=True)
        tmp = spec.workdir / "tmp"
        tmp.mkdir(exist_ok=True)
        host_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        argv, extra_env = self.command(spec, tmp)
        env = dict(spec.env)
        env["FAASBOX_CHANNEL_FD"] = str(child_end.fileno())
        for key, value in extra_env.items():
            env.setdefault(key, value)
        exited: asyncio.Future[ExitStatus] = loop.create_future()
        kwargs: dict[str, Any] = {
            "stdin": asyncio.subprocess.DEVNULL,
            "stdout": asyncio.subprocess.PIPE,
            "stderr": asyncio.subprocess.PIPE,
            "cwd": str(spec.workdir),
            "env": env,
            "pass_fds": (child_end.fileno(),),
            "start_new_session": True,
            "preexec_fn": self.preexec(spec),
        }
        try:
            transport, _ = await loop.subprocess_exec(
                lambda: _Pipes(on_output, exited, lambda st: self.classify(spec, st)),
                *argv,
                **kwargs,
            )
        except BaseException:
            host_end.close()
            self.release(spec)
            raise
        finally:
            child_end.close()
        host_end.setblocking(False)
        return ProcessSandbox(spec, host_end, transport, exited, lambda: self.release(spec))
