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


def _moving(fd: int, target: int, then: Callable[[], None]) -> Callable[[], None]:
    def apply() -> None:  # in the child: runs before the unlisted descriptors are closed
        os.dup2(fd, target)
        then()

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

    # Where the child finds its end of the channel: None keeps whatever number the
    # platform's socket has; a wrapper that only passes fixed numbers (runc passes 3, 4,
    # ...) sets one, and the child end is moved there between fork and exec.
    channel_fd: int | None = None

    def spawn_fds(self, spec: SandboxSpec) -> list[int]:
        """Further descriptors to pass to the child (opened here, closed by ``create``
        once the child holds them), e.g. a seccomp program for bwrap to read."""
        return []

    def command(
        self, spec: SandboxSpec, tmp: Path, fds: list[int]
    ) -> tuple[list[str], dict[str, str]]:
        """The command line to start and the environment changes it needs; backends that
        wrap the runtime (bwrap, runc) override this. ``fds`` are ``spawn_fds``'s."""
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
        try:
            fds = self.spawn_fds(spec)
        except BaseException:
            host_end.close()
            child_end.close()
            raise
        channel_fd = child_end.fileno() if self.channel_fd is None else self.channel_fd
        try:
            if channel_fd in fds:
                raise RuntimeError(f"descriptor {channel_fd} is reserved for the channel")
            argv, extra_env = self.command(spec, tmp, fds)
            prepare = self.preexec(spec)
        except BaseException:
            for sock in (host_end, child_end):
                sock.close()
            for fd in fds:
                os.close(fd)
            self.release(spec)
            raise
        env = dict(spec.env)
        env["FAASBOX_CHANNEL_FD"] = str(channel_fd)
        for key, value in extra_env.items():
            env.setdefault(key, value)
        if channel_fd != child_end.fileno():
            prepare = _moving(child_end.fileno(), channel_fd, prepare)
        exited: asyncio.Future[ExitStatus] = loop.create_future()
        kwargs: dict[str, Any] = {
            "stdin": asyncio.subprocess.DEVNULL,
            "stdout": asyncio.subprocess.PIPE,
            "stderr": asyncio.subprocess.PIPE,
            "cwd": str(spec.workdir),
            "env": env,
            # The target number is kept open too: the child moves the channel there before
            # the other descriptors are closed.
            "pass_fds": tuple(sorted({child_end.fileno(), channel_fd, *fds})),
            "start_new_session": True,
            "preexec_fn": prepare,
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
            for fd in fds:
                os.close(fd)
        host_end.setblocking(False)
        sandbox = ProcessSandbox(spec, host_end, transport, exited, lambda: self.release(spec))
        try:
            await self.started(spec, sandbox.pid)
        except BaseException:
            await sandbox.destroy()
            raise
        return sandbox

    async def started(self, spec: SandboxSpec, pid: int) -> None:
        """Runs once the child exists, before the sandbox is handed out (e.g. to attach
        its network)."""
