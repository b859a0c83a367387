"""The two kinds of sandbox a replica gets besides a created one, as backends, so that the
contract suite runs on them unchanged (``test_contract.py``):

- ``prewarmed``: a stem cell (``sandbox.api.Prewarm``) made before its function was known,
  given it by ``inject`` (code read-only, secrets, limits) and initialised by its runtime;
- ``forked``: a replica forked by its function's zygote (``sandbox/forked.py``), in a
  cgroup of its own, inside the zygote's sandbox (made from the spec, like a function's).

Both run the real runtime, which imports a real function and serves it a call. That
function (``HANDLER``) then replaces the replica's program with the spec's command
(``execv``): the process stays the replica (its pid, cgroup, descriptors, namespaces and
seccomp filter, its zygote as parent), so what the contract checks about the program is
checked about the replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from faasbox.runtime.protocol import PROTOCOL_VERSION, FrameDecoder, compiled_bootstrap, encode
from faasbox.sandbox.api import ExitStatus, Injection, Limits, OutputSink, Prewarm, SandboxSpec
from faasbox.sandbox.safety import SafeBackend, SafeSandbox

# The function every such replica serves: one call, whose body is the command to become
# (a Python program: the interpreter is the runtime's, as the sandbox shows it).
# The runtime keeps its channel to itself; the command gets it as FAASBOX_CHANNEL_FD, as
# a sandbox's program does.
EXEC_MARK = b"exec\n"
HANDLER = """\
import json, os, sys

EXEC_MARK = b"exec\\n"

def handle(event, context):
    args = json.loads(event.body)
    sockets = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}").startswith("socket:"):
                sockets.append(int(fd))
        except OSError:  # the listing's own descriptor
            pass
    assert len(sockets) == 1, sockets  # the replica's channel, and nothing else
    os.set_inheritable(sockets[0], True)
    os.environ["FAASBOX_CHANNEL_FD"] = str(sockets[0])
    sys.stdout.flush()
    sys.stderr.flush()
    # Said before the exec: the host may now write to the program (the runtime reads the
    # channel no more, so nothing meant for the program is read by it first).
    os.write(sockets[0], EXEC_MARK)
    os.execv(sys.executable, [sys.executable, *args])
"""


def _function(directory: Path) -> Path:
    code = directory / "code"
    code.mkdir(parents=True)
    (code / "become.py").write_text(HANDLER)
    directory.chmod(0o755)
    code.chmod(0o755)
    return code


def _outside(spec: SandboxSpec) -> Path:
    """A host directory for the replica's function that does not show where the spec's
    working directory is (the contract checks that the host's paths stay hidden)."""
    return spec.workdir.parent.parent / "replica-functions" / spec.sandbox_id


def _runtime(workdir: Path) -> list[str]:
    bootstrap = compiled_bootstrap(workdir.parent / "runtime")
    return [sys.executable, "-I", "-S", "-B", str(bootstrap)]


class _Frames:
    """The frames a runtime sends on a channel, read by a task of their own."""

    def __init__(self, sandbox: SafeSandbox, on_frame: Any = None) -> None:
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._on_frame = on_frame
        self._sock = sandbox.channel
        self._task = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        loop = asyncio.get_running_loop()
        decoder = FrameDecoder(lambda head, _: self._frame(head), max_body=1 << 20)
        while data := await loop.sock_recv(self._sock, 65536):
            decoder.feed(data)

    def _frame(self, head: dict[str, Any]) -> None:
        if self._on_frame is not None:
            self._on_frame(head)
        self.queue.put_nowait(head)

    async def expect(self, kind: str) -> dict[str, Any]:
        head = await asyncio.wait_for(self.queue.get(), 30)
        assert head.get("t") == kind, head
        return head

    async def stop(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, OSError):
            await self._task


def _init(code: Path, **extra: Any) -> bytes:
    return encode(
        {"t": "init", "v": PROTOCOL_VERSION, "code": str(code), "handler": "become.handle", **extra}
    )


async def _become(replica: SafeSandbox, argv: list[str]) -> None:
    assert argv[0] == sys.executable, "the contract's programs are Python programs"
    loop = asyncio.get_running_loop()
    await loop.sock_sendall(
        replica.channel, encode({"t": "run", "id": 1}, json.dumps(argv[1:]).encode())
    )
    said = b""
    while len(said) < len(EXEC_MARK):
        chunk = await asyncio.wait_for(
            loop.sock_recv(replica.channel, len(EXEC_MARK) - len(said)), 30
        )
        assert chunk, f"the replica closed its channel instead of running {argv!r}"
        said += chunk
    assert said == EXEC_MARK, said


class _Replica:
    """A replica's sandbox, with whatever else it needed (its zygote) ending with it."""

    def __init__(self, sandbox: SafeSandbox, *, also: Zygote | None = None) -> None:
        self._sandbox = sandbox
        self._also = also

    @property
    def id(self) -> str:
        return self._sandbox.id

    @property
    def channel(self) -> Any:
        return self._sandbox.channel

    @property
    def exited(self) -> asyncio.Future[ExitStatus]:
        return self._sandbox.exited

    async def destroy(self) -> None:
        await self._sandbox.destroy()
        if self._also is not None:
            await self._also.destroy()


class PrewarmedReplicas:
    """Each ``create`` takes a new stem cell and gives it a function made from the spec."""

    def __init__(self, base: SafeBackend) -> None:
        assert "prewarm" in base.capabilities
        self._base = base
        self.name = f"{base.name}+prewarmed"
        self.capabilities = base.capabilities - {"prewarm", "fork"}

    async def create(self, spec: SandboxSpec, on_output: OutputSink) -> _Replica:
        assert not spec.read_only and not spec.egress
        store = _outside(spec) / "store"
        code = _function(store)
        (spec.workdir.parent / "slots").mkdir(exist_ok=True)
        spec.workdir.mkdir(parents=True, exist_ok=True)
        cell = SandboxSpec(
            sandbox_id=spec.sandbox_id,
            argv=_runtime(spec.workdir),
            env={"FAASBOX_PREWARMED": "1"},
            workdir=spec.workdir,
            read_only=[Path(_runtime(spec.workdir)[-1]).parent],
            # The pool's limits until the function's replace them.
            limits=Limits(),
            prewarm=Prewarm(
                slot=spec.workdir.parent / "slots" / spec.sandbox_id,
                roots=(store,),
                secrets=spec.workdir / f".secrets-{spec.sandbox_id}",
            ),
        )
        box = await self._base.create(cell, on_output)
        frames = _Frames(box)
        try:
            await frames.expect("hello")
            secrets = {name: path.read_bytes() for name, path in spec.secrets.items()}
            await self._base.inject(
                box, Injection(read_only=(code,), secrets=secrets, limits=spec.limits)
            )
            init = _init(code, env=spec.env, rlimits=spec.limits.rlimits_from(cell.limits))
            await asyncio.get_running_loop().sock_sendall(box.channel, init)
            await frames.expect("ready")
        except BaseException:
            await box.destroy()
            raise
        finally:
            await frames.stop()
        await _become(box, spec.argv)
        return _Replica(box)


class Zygote:
    """A zygote in a sandbox made from a spec (its function's environment, secrets,
    working directory and rlimits), serving the function that becomes a command."""

    def __init__(self, base: SafeBackend) -> None:
        self._base = base
        self._children: dict[int, SafeSandbox] = {}
        self.sandbox: SafeSandbox | None = None
        self._frames: _Frames | None = None

    async def start(self, spec: SandboxSpec) -> Zygote:
        code = _function(_outside(spec))
        argv = _runtime(spec.workdir)
        zygote_spec = dataclasses.replace(
            spec,
            sandbox_id=f"{spec.sandbox_id}-zygote",
            argv=argv,
            read_only=[*spec.read_only, code, Path(argv[-1]).parent],
        )
        self.sandbox = await self._base.create(zygote_spec, lambda stream, data: None)
        self._frames = _Frames(self.sandbox, self._report)
        try:
            await self._frames.expect("hello")
            init = _init(code, zygote=True)
            await asyncio.get_running_loop().sock_sendall(self.sandbox.channel, init)
            await self._frames.expect("ready")
        except BaseException:
            await self.destroy()
            raise
        return self

    def _report(self, head: dict[str, Any]) -> None:  # how its forks end, as it saw it
        if head.get("t") == "exit" and (child := self._children.get(int(head["pid"]))):
            child.report_exit(int(head["code"]))

    async def fork(self, spec: SandboxSpec, on_output: OutputSink) -> SafeSandbox:
        """A replica with the spec's limits on its own cgroup, running its command."""
        assert self.sandbox is not None
        fork = await self._base.fork(self.sandbox, spec.sandbox_id, spec.limits, on_output, 30)
        assert fork.ns_pid
        self._children[fork.ns_pid] = fork
        try:
            await _become(fork, spec.argv)
        except BaseException:
            await fork.destroy()
            raise
        return fork

    async def destroy(self) -> None:
        if self.sandbox is not None:
            await self.sandbox.destroy()
        if self._frames is not None:
            await self._frames.stop()


class ForkedReplicas:
    """Each ``create`` starts a ``Zygote`` from the spec and forks one replica from it:
    destroying the replica ends both (the children a fork leaves are killed with the
    fork itself while its zygote lives on: ``test_forked.py``)."""

    def __init__(self, base: SafeBackend) -> None:
        assert "fork" in base.capabilities
        self._base = base
        self.name = f"{base.name}+forked"
        self.capabilities = base.capabilities - {"prewarm", "fork"}

    async def create(self, spec: SandboxSpec, on_output: OutputSink) -> _Replica:
        zygote = await Zygote(self._base).start(spec)
        try:
            fork = await zygote.fork(spec, on_output)
        except BaseException:
            await zygote.destroy()
            raise
        return _Replica(fork, also=zygote)
