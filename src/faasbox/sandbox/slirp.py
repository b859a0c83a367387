"""Egress for one sandbox: user-mode networking (slirp4netns) into its own network
namespace, so a function allowed out reaches the world but not the host's loopback (where
faasbox's own API listens) and never shares the host's network namespace.

Order of events: bwrap creates the namespaces, reports its child's pid on ``--info-fd``
and waits on ``--block-fd``; slirp4netns attaches a tap device to that child's network
namespace (10.0.2.100/24, gateway 10.0.2.2, DNS 10.0.2.3) and says when it is ready; only
then is the runtime let go, so a function never sees a half-configured network. The
slirp4netns process ends when the sandbox is released or the platform dies (it watches
``--exit-fd``, a pipe only the platform holds).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import shutil

from faasbox.errors import BadRequest

DNS = "10.0.2.3"
NS_GET_USERNS = 0xB701  # ioctl on a namespace fd: the user namespace that owns it


def find_slirp() -> str | None:
    return shutil.which("slirp4netns")


class Egress:
    """The egress networks of one backend's sandboxes, by sandbox id: what the isolating
    backends share (``spawn_fds`` opens, ``started`` attaches, ``release`` closes)."""

    def __init__(self) -> None:
        self.slirp = find_slirp()
        self._nets: dict[str, SlirpNet] = {}

    def open(self, sandbox_id: str) -> list[int]:
        """A network for this sandbox; returns the descriptors its wrapper is given."""
        if self.slirp is None:
            raise BadRequest(
                "functions with egress (label faasbox.network=egress) need slirp4netns "
                "on the platform's machine: apt-get install slirp4netns"
            )
        net = self._nets[sandbox_id] = SlirpNet(self.slirp)
        return net.child_fds()

    async def attach(self, sandbox_id: str) -> None:
        net = self._nets.get(sandbox_id)
        if net is not None:
            await net.attach()

    def close(self, sandbox_id: str) -> None:
        net = self._nets.pop(sandbox_id, None)
        if net is not None:
            net.close()


class SlirpNet:
    def __init__(self, slirp: str) -> None:
        self.slirp = slirp
        self._info_r, self.info_w = os.pipe()
        self.block_r, self._block_w = os.pipe()
        self._exit_r, self._exit_w = os.pipe()
        self._proc: asyncio.subprocess.Process | None = None

    def child_fds(self) -> list[int]:
        """Given to bwrap (``--info-fd``, ``--block-fd``); ``create`` closes our copies."""
        return [self.info_w, self.block_r]

    async def attach(self, timeout: float = 10.0) -> None:
        info = await asyncio.wait_for(asyncio.to_thread(_read_all, self._info_r), timeout)
        try:
            pid = int(json.loads(info)["child-pid"])
        except (ValueError, KeyError, TypeError):
            raise BadRequest("the sandbox did not report its process for egress") from None
        # Name the network namespace exactly, and the user namespace that owns it when it
        # is not ours (bwrap in a user namespace nests a second one, and slirp4netns would
        # join whichever the process is in at that instant).
        net = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        owner = fcntl.ioctl(net, NS_GET_USERNS)
        userns = []
        if os.fstat(owner).st_ino != os.stat("/proc/self/ns/user").st_ino:
            userns = [f"--userns-path=/proc/self/fd/{owner}"]
        ready_r, ready_w = os.pipe()
        try:
            self._proc = await asyncio.create_subprocess_exec(
                self.slirp,
                "--configure",
                "--mtu=65520",
                "--disable-host-loopback",
                f"--exit-fd={self._exit_r}",
                f"--ready-fd={ready_w}",
                "--netns-type=path",
                *userns,
                f"/proc/self/fd/{net}",
                "tap0",
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                pass_fds=(self._exit_r, ready_w, net, owner),
            )
            for fd in (ready_w, net, owner):
                os.close(fd)
            ready_w = net = owner = -1
            ready = await asyncio.wait_for(asyncio.to_thread(os.read, ready_r, 1), timeout)
            if ready != b"1":
                err = b""
                if self._proc.stderr is not None:
                    with contextlib.suppress(asyncio.TimeoutError):
                        err = await asyncio.wait_for(self._proc.stderr.read(2000), 1)
                raise BadRequest(
                    "egress networking failed to start (slirp4netns): "
                    + (err.decode(errors="replace").strip() or "no reason given")
                )
        finally:
            for fd in (ready_r, ready_w, net, owner):
                if fd >= 0:
                    os.close(fd)
        os.write(self._block_w, b"1")  # let the runtime start

    def close(self) -> None:
        for fd in (self._info_r, self._block_w, self._exit_w, self._exit_r):
            with contextlib.suppress(OSError):
                os.close(fd)
        if self._proc is not None and self._proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.kill()


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 4096):
        chunks.append(chunk)
        if chunk.rstrip().endswith(b"}"):
            break
    return b"".join(chunks)
