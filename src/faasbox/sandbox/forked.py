"""Replicas forked from a zygote: a runtime inside a sandbox that imported its function and
then only forks (see the protocol in ``faasbox/runtime/python/bootstrap.py``).

A fork shares its zygote's sandbox: its namespaces, mounts, seccomp filter, user and
rlimits, and its ``/tmp`` (the replicas of one function trust each other as much as the
calls of one replica do). It gets what makes it a replica of its own: a channel, stdout
and stderr pipes, and its own cgroup (memory, CPU, pids), which the host puts it in before
it runs a call. It dies with its zygote's sandbox (its PID namespace ends with it).

The host learns the fork's pid from the kernel, not from the fork: the first frame on its
channel carries SCM_CREDENTIALS, with the pid as the host sees it; a pidfd then names the
process for its whole life (kill, exit), so a recycled pid is never signalled.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import os
import signal
import socket
import struct
from collections.abc import Callable
from typing import Any

from faasbox.errors import ReplicaFailed
from faasbox.runtime.protocol import FrameDecoder, ProtocolError, encode
from faasbox.sandbox.api import ExitStatus, OutputSink

_CREDS = struct.Struct("3i")  # struct ucred: pid, uid, gid
FORK_FRAME = encode({"t": "fork"})


class _PipeReader(asyncio.Protocol):
    def __init__(self, stream: str, on_output: OutputSink) -> None:
        self._stream = stream
        self._on_output = on_output
        self.closed = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        self._on_output(self._stream, data)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


class ForkedSandbox:
    """The ``Sandbox`` of one fork (see ``sandbox.api``)."""

    def __init__(
        self,
        sandbox_id: str,
        channel: socket.socket,
        pidfd: int,
        pipes: list[tuple[asyncio.BaseTransport, _PipeReader]],
        classify: Callable[[int | None], ExitStatus],
        kill_rest: Callable[[], int],
        release: Callable[[], None],
        ns_pid: int,
    ) -> None:
        self._id = sandbox_id
        # Its pid inside the sandbox, as its zygote knows it (``report_exit``).
        self.ns_pid = ns_pid
        self._code: int | None = None
        self._reported = asyncio.Event()
        self._channel = channel
        self._pidfd = pidfd
        self._pipes = pipes
        self._classify = classify
        self._kill_rest = kill_rest
        self._release = release
        self._loop = asyncio.get_running_loop()
        self._exited: asyncio.Future[ExitStatus] = self._loop.create_future()
        self._ended_task: asyncio.Task[None] | None = None
        self._loop.add_reader(pidfd, self._on_exit)

    @property
    def id(self) -> str:
        return self._id

    @property
    def channel(self) -> socket.socket:
        return self._channel

    @property
    def exited(self) -> asyncio.Future[ExitStatus]:
        return self._exited

    def report_exit(self, code: int) -> None:
        """How the process ended, as its zygote (its parent) saw it: an exit code, or
        minus the signal that killed it."""
        self._code = code
        self._reported.set()

    def _on_exit(self) -> None:  # the pidfd is readable once the process has ended
        self._loop.remove_reader(self._pidfd)
        self._ended_task = self._loop.create_task(self._ended())

    async def _ended(self) -> None:
        # The zygote's report follows the exit closely; without it (the zygote is gone too),
        # the status says only whether the cgroup's OOM killer did it.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._reported.wait(), 0.5)
        if not self._exited.done():
            self._exited.set_result(self._classify(self._code))

    async def destroy(self) -> None:
        if not self._exited.done():
            with contextlib.suppress(ProcessLookupError, OSError):
                signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)
        # What the fork started is in its cgroup (its zygote's PID namespace would keep it
        # alive until the zygote ends): killed too, in rounds while it forks.
        for _ in range(200):
            if not self._kill_rest():
                break
            await asyncio.sleep(0.005)
        if not self._exited.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._exited), 5.0)
        self._loop.remove_reader(self._pidfd)
        os.close(self._pidfd)
        self._channel.close()
        # Every writer is gone: the pipes deliver what they still hold, then end.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                asyncio.gather(*(asyncio.shield(reader.closed) for _, reader in self._pipes)),
                1.0,
            )
        for pipe, _ in self._pipes:
            pipe.close()
        self._release()


async def fork(
    zygote: socket.socket,
    sandbox_id: str,
    on_output: OutputSink,
    prepare: Callable[[], None],
    adopt: Callable[[int], None],
    classify: Callable[[int | None], ExitStatus],
    kill_rest: Callable[[], int],
    release: Callable[[], None],
    timeout: float,
) -> ForkedSandbox:
    """Ask the zygote on ``zygote`` (the host end of its channel) for a new replica; put it
    in its cgroup (``adopt(pid)``, made by ``prepare`` while the zygote forks) before
    anyone can give it a call. ``kill_rest`` kills what is left in that cgroup (returning how
    many it found); ``release`` frees what ``prepare`` made; it runs here on failure, else
    when the sandbox is destroyed."""
    loop = asyncio.get_running_loop()
    host_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    # The child's ends, closed here once the zygote holds them (or on failure).
    theirs = [child_end.detach(), out_w, err_w]
    # Ours until a read transport owns it.
    unowned = [out_r, err_r]
    pipes: list[tuple[asyncio.BaseTransport, _PipeReader]] = []
    pidfd = -1
    try:
        host_end.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        fds = array.array("i", theirs)
        try:
            sent = zygote.sendmsg([FORK_FRAME], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)])
        except OSError as exc:
            raise ReplicaFailed(f"the function's zygote cannot fork: {exc}") from None
        if sent != len(FORK_FRAME):
            raise ReplicaFailed("the function's zygote channel is full")
        prepare()
        while theirs:
            os.close(theirs.pop())
        for stream in ("stdout", "stderr"):
            transport, reader = await loop.connect_read_pipe(
                lambda s=stream: _PipeReader(s, on_output),  # type: ignore[misc]
                os.fdopen(unowned[0], "rb", buffering=0),
            )
            unowned.pop(0)
            pipes.append((transport, reader))
        host_end.setblocking(False)
        head, pid = await asyncio.wait_for(_first_frame(loop, host_end), timeout)
        if head.get("t") != "ready":
            raise ReplicaFailed(f"a forked replica said {head!r:.200} instead of ready")
        host_end.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 0)
        pidfd = os.pidfd_open(pid)
        adopt(pid)
        ns_pid = int(head.get("pid", 0))
        return ForkedSandbox(
            sandbox_id, host_end, pidfd, pipes, classify, kill_rest, release, ns_pid
        )
    except BaseException:
        if pidfd != -1:
            with contextlib.suppress(OSError):
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            os.close(pidfd)
        for fd in (*theirs, *unowned):
            os.close(fd)
        host_end.close()
        for pipe, _ in pipes:
            pipe.close()
        kill_rest()
        release()
        raise


async def _first_frame(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> tuple[Any, int]:
    """The fork's first frame and the pid the kernel attached to it."""
    frames: list[dict[str, Any]] = []
    decoder = FrameDecoder(lambda head, _: frames.append(head), max_body=0)
    pid = 0
    ready = asyncio.Event()
    fd = sock.fileno()
    loop.add_reader(fd, ready.set)
    try:
        while not frames:
            await ready.wait()
            ready.clear()
            try:
                data, ancillary, _, _ = sock.recvmsg(4096, socket.CMSG_SPACE(_CREDS.size))
            except BlockingIOError:
                continue
            if not data:
                raise ReplicaFailed("a forked replica closed its channel before it was ready")
            for level, kind, payload in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid = _CREDS.unpack_from(payload)[0]
            try:
                decoder.feed(data)
            except ProtocolError as exc:
                raise ReplicaFailed(f"a forked replica broke the protocol: {exc}") from None
    finally:
        loop.remove_reader(fd)
    if pid <= 0:
        raise ReplicaFailed("the kernel did not say which process the forked replica is")
    return frames[0], pid
