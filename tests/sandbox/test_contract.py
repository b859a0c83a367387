"""The contract every sandbox backend keeps (see faasbox/sandbox/api.py), run once per
backend, kombu-style. Real processes, no fakes."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import shutil
import socket
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from faasbox.errors import SandboxDead
from faasbox.sandbox.api import SECRETS_DIR, Limits, SandboxSpec
from faasbox.sandbox.backends import BACKENDS, load_backend
from faasbox.sandbox.backends.oci import find_runc
from faasbox.sandbox.safety import SafeBackend, SafeSandbox
from tests.sandbox.replicas import ForkedReplicas, PrewarmedReplicas
from tests.support import running_with

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# Every backend, and the sandboxes a replica gets besides a created one: a prewarmed stem
# cell given its function, and a fork of a function's zygote (``replicas.py``).
KINDS = {"prewarmed": PrewarmedReplicas, "forked": ForkedReplicas}
PARAMS = [*sorted(BACKENDS), "namespaces+prewarmed", "namespaces+forked"]


@pytest.fixture(params=PARAMS)
def backend(request: pytest.FixtureRequest) -> SafeBackend:
    name, _, kind = request.param.partition("+")
    if not os.environ.get("CI"):
        # Missing tools skip on a developer's box; in CI they fail (scripts/test installs them).
        if name == "namespaces" and shutil.which("bwrap") is None:
            pytest.skip("bubblewrap is not installed (apt-get install bubblewrap)")
        if name == "oci" and find_runc() is None:
            pytest.skip("runc is not installed (apt-get install runc)")
        if (name == "oci" or kind) and os.geteuid() != 0:
            pytest.skip(f"the {request.param} sandboxes need root")
    base = SafeBackend(load_backend(name))
    if not kind:
        return base
    return SafeBackend(KINDS[kind](base))


class Output:
    def __init__(self) -> None:
        self.data: dict[str, bytes] = {"stdout": b"", "stderr": b""}

    def __call__(self, stream: str, data: bytes) -> None:
        self.data[stream] += data


def _spec(tmp_path: Path, code: str, **limits: int) -> SandboxSpec:
    return SandboxSpec(
        sandbox_id="t-" + os.urandom(3).hex(),
        argv=[sys.executable, "-I", "-S", "-c", textwrap.dedent(code)],
        env={"PATH": "/usr/bin:/bin", "SECRET_FROM_SPEC": "yes"},
        workdir=tmp_path / "work",
        limits=Limits(**limits),
    )


@pytest.fixture
async def cleanup() -> AsyncIterator[list[SafeSandbox]]:
    boxes: list[SafeSandbox] = []
    yield boxes
    for b in boxes:
        await b.destroy()


async def _drained(out: Output, stream: str = "stdout", timeout: float = 5.0) -> bytes:
    """The stream's output once it ends in a whole line (the pipes drain after the exit)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not out.data[stream].endswith(b"\n"):
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"no complete line on {stream} within {timeout}s: {out.data}")
        await asyncio.sleep(0.01)
    return out.data[stream]


async def _run(
    backend: SafeBackend, tmp_path: Path, cleanup: list[SafeSandbox], code: str, **limits: int
) -> tuple[SafeSandbox, Output]:
    out = Output()
    box = await backend.create(_spec(tmp_path, code, **limits), out)
    cleanup.append(box)
    return box, out


async def test_channel_round_trip_and_output_capture(
    backend: SafeBackend, tmp_path: Path, cleanup: list[SafeSandbox]
) -> None:
    code = """
    import os, socket, sys
    s = socket.socket(fileno=int(os.environ["FAASBOX_CHANNEL_FD"]))
    print("to stdout", flush=True)
    print("to stderr", file=sys.stderr, flush=True)
    s.sendall(s.recv(100).upper())
    """
    box, out = await _run(backend, tmp_path, cleanup, code)
    reader, writer = await asyncio.open_unix_connection(sock=box.channel)
    writer.write(b"ping")
    assert await asyncio.wait_for(reader.read(4), 10) == b"PING"
    status = await asyncio.wait_for(box.exited, 10)
    assert status.returncode == 0
    await _drained(out, "stdout")
    await _drained(out, "stderr")
    assert b"to stdout" in out.data["stdout"] and b"to stderr" in out.data["stderr"]
    writer.close()


async def test_output_before_a_message_survives_an_immediate_destroy(
    backend: SafeBackend, tmp_path: Path, cleanup: list[SafeSandbox]
) -> None:
    # What a failing runtime does: its traceback to stderr, then the error on the channel,
    # then exit, while the host destroys the sandbox as soon as the error arrives. Nothing
    # between the process and the host's pipes may hold the traceback back (a relay that
    # destroy kills first, as a foreground `runc run` is).
    code = """
    import os, socket, sys
    s = socket.socket(fileno=int(os.environ["FAASBOX_CHANNEL_FD"]))
    for i in range(200):
        sys.stderr.write(f"last words {i}\\n")
    sys.stderr.flush()
    s.sendall(b"bye")
    """
    for _ in range(5):
        box, out = await _run(backend, tmp_path, cleanup, code)
        reader, writer = await asyncio.open_unix_connection(sock=box.channel)
        assert await asyncio.wait_for(reader.readexactly(3), 10) == b"bye"
        await box.destroy()
        writer.close()
        assert b"last words 199\n" in out.data["stderr"], out.data["stderr"][-200:]


async def test_environment_is_only_the_spec(
    backend: SafeBackend, tmp_path: Path, cleanup: list[SafeSandbox]
) -> None:
    os.environ["FAASBOX_TEST_HOST_ONLY"] = "leak"
    try:
        box, out = await _run(backend, tmp_path, cleanup, "import os; print(sorted(os.environ))")
        await asyncio.wait_for(box.exited, 10)
        await _drained(out)
    finally:
        del os.environ["FAASBOX_TEST_HOST_ONLY"]
    env = out.data["stdout"].decode()
    assert "SECRET_FROM_SPEC" in env and "FAASBOX_TEST_HOST_ONLY" not in env


async def test_crash_is_detected(
    backend: SafeBackend, tmp_path: Path, cleanup: list[SafeSandbox]
) -> None:
    box, _ = await _run(backend, tmp_path, cleanup, "import os; os.kill(os.getpid(), 9)")
    status = await asyncio.wait_for(box.exited, 10)
    assert status.signal == 9 and "SIGKILL" in status.describe()
    box, _ = await _run(backend, tmp_path, cleanup, "raise SystemExit(3)")
    assert (await asyncio.wait_for(box.exited, 10)).returncode == 3


async def test_destroy_is_idempotent_and_later_calls_fail(
    backend: SafeBackend, tmp_path: Path, cleanup: list[SafeSandbox]
) -> None:
    box, _ = await _run(backend, tmp_path, cleanup, "import time; time.sleep(60)")
    await asyncio.gather(box.destroy(), box.destroy())
    await box.destroy()
    assert box.exited.done()
    with pytest.raises(SandboxDead):
        _ = box.channel


async def test_destroy_kills_children_left_behind(
    backend: SafeBackend, tmp_path: Path, cleanup: list[SafeSandbox]
) -> None:
    # Found on the host by a marker in its command line: inside a PID namespace the
    # sandbox cannot know its child's host pid.
    marker = "faasbox-orphan-" + os.urandom(4).hex()
    code = f"""
    import subprocess, sys, time
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", {marker!r}])
    print("started", flush=True)
    time.sleep(60)
    """

    def alive() -> list[str]:
        return running_with(marker)

    box, out = await _run(backend, tmp_path, cleanup, code)
    for _ in range(200):
        if b"started" in out.data["stdout"] and alive():
            break
        await asyncio.sleep(0.02)
    assert alive(), "the child never started"
    await box.destroy()
    for _ in range(100):
        if not alive():
            return
        await asyncio.sleep(0.05)
    pytest.fail(f"children {alive()} outlived their sandbox")


async def test_memory_limit(
    backend: SafeBackend, tmp_path: Path, cleanup: list[SafeSandbox]
) -> None:
    code = """
    try:
        b = bytearray(512 * 1024 * 1024)
    except MemoryError:
        raise SystemExit(42)
    """
    box, _ = await _run(backend, tmp_path, cleanup, code, memory_bytes=128 * 1024 * 1024)
    status = await asyncio.wait_for(box.exited, 10)
    assert status.returncode == 42 or status.oom_killed


async def test_file_size_limit(
    backend: SafeBackend, tmp_path: Path, cleanup: list[SafeSandbox]
) -> None:
    code = """
    import signal
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    try:
        with open("big", "wb") as f:
            f.write(b"x" * (2 * 1024 * 1024))
    except OSError:
        raise SystemExit(43)
    """
    box, _ = await _run(backend, tmp_path, cleanup, code, max_file_bytes=1024 * 1024)
    assert (await asyncio.wait_for(box.exited, 10)).returncode == 43


async def test_private_workdir_is_removed(
    backend: SafeBackend, tmp_path: Path, cleanup: list[SafeSandbox]
) -> None:
    box, _ = await _run(
        backend, tmp_path, cleanup, "open('note', 'w').write('x'); import time; time.sleep(30)"
    )
    await asyncio.sleep(0.3)
    await box.destroy()
    assert not (tmp_path / "work").exists()


def test_unknown_backend_suggests() -> None:
    from faasbox.errors import BadRequest

    with pytest.raises(BadRequest, match="did you mean 'process'"):
        load_backend("proces")


async def test_process_count_limit(
    backend: SafeBackend, tmp_path: Path, cleanup: list[SafeSandbox]
) -> None:
    if "cgroups" not in backend.capabilities:
        pytest.skip(f"the {backend.name} backend declares no process limit (no cgroups)")
    code = """
    import os, time
    children = []
    try:
        for _ in range(200):
            pid = os.fork()
            if pid == 0:
                time.sleep(30)
                os._exit(0)
            children.append(pid)
    except OSError:
        raise SystemExit(44)
    raise SystemExit(0)
    """
    box, _ = await _run(backend, tmp_path, cleanup, code, pids=32)
    assert (await asyncio.wait_for(box.exited, 20)).returncode == 44


async def test_out_of_memory_kill_is_reported(
    backend: SafeBackend, tmp_path: Path, cleanup: list[SafeSandbox]
) -> None:
    if "cgroups" not in backend.capabilities:
        pytest.skip(f"the {backend.name} backend limits address space, not memory use")
    code = """
    blocks = []
    while True:
        blocks.append(b"x" * (8 * 1024 * 1024))
    """
    box, _ = await _run(backend, tmp_path, cleanup, code, memory_bytes=64 * 1024 * 1024)
    status = await asyncio.wait_for(box.exited, 20)
    assert status.oom_killed, status


async def test_declared_isolation_holds(
    backend: SafeBackend, tmp_path: Path, cleanup: list[SafeSandbox]
) -> None:
    """Each isolation capability a backend declares, checked from inside its sandbox."""
    claims = {
        "namespaces",
        "unprivileged",
        "read-only-root",
        "private-tmp",
        "no-network",
        "no-new-privs",
        "seccomp",
    } & backend.capabilities
    if not claims:
        pytest.skip(f"the {backend.name} backend declares no isolation")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    code = f"""
    import ctypes, json, os, socket
    facts = {{"uid": os.getuid(), "hostname": socket.gethostname()}}
    facts["pids"] = len([p for p in os.listdir("/proc") if p.isdigit()])
    facts["host_dir"] = os.path.exists({str(tmp_path)!r})
    for line in open("/proc/self/status"):
        key, _, value = line.partition(":")
        facts[key] = value.strip()
    def writes(path):
        try:
            with open(path, "w") as f:
                f.write("x")
            return True
        except OSError:
            return False
    facts["root_writable"] = writes("/faasbox-probe")
    facts["tmp_writable"] = writes("/tmp/faasbox-probe")
    try:
        socket.create_connection(("127.0.0.1", {listener.getsockname()[1]}), timeout=2).close()
        facts["host_loopback"] = True
    except OSError:
        facts["host_loopback"] = False
    libc = ctypes.CDLL(None, use_errno=True)
    facts["unshare_refused"] = libc.unshare(0x10000000) == -1 and ctypes.get_errno() == 1
    print(json.dumps(facts), flush=True)
    """
    try:
        box, out = await _run(backend, tmp_path, cleanup, code)
        assert (await asyncio.wait_for(box.exited, 10)).returncode == 0, out.data
    finally:
        listener.close()
    facts = json.loads(await _drained(out))
    if "namespaces" in claims:
        assert facts["hostname"] == "faasbox" and facts["pids"] <= 3, facts
    if "unprivileged" in claims:
        assert facts["uid"] == 65534 and facts["CapEff"] == "0000000000000000", facts
    if "read-only-root" in claims:
        assert not facts["host_dir"] and not facts["root_writable"], facts
    if "private-tmp" in claims:
        assert facts["tmp_writable"], facts
    if "no-network" in claims:
        assert not facts["host_loopback"], facts
    if "no-new-privs" in claims:
        assert facts["NoNewPrivs"] == "1", facts
    if "seccomp" in claims:
        assert facts["Seccomp"] == "2" and facts["unshare_refused"], facts


async def test_secrets_are_mounted_read_only(
    backend: SafeBackend, tmp_path: Path, cleanup: list[SafeSandbox]
) -> None:
    if "mounts" not in backend.capabilities:
        pytest.skip(f"the {backend.name} backend cannot mount: replicas read the host files")
    secret = tmp_path / "secrets" / "db-pass"
    secret.parent.mkdir()
    secret.write_text("hunter2")
    secret.chmod(0o444)  # as the replica factory writes them
    code = f"""
    path = {SECRETS_DIR + "/db-pass"!r}
    print(open(path).read(), flush=True)
    try:
        open(path, "w")
    except OSError:
        raise SystemExit(45)
    """
    out = Output()
    spec = dataclasses.replace(_spec(tmp_path, code), secrets={"db-pass": secret})
    box = await backend.create(spec, out)
    cleanup.append(box)
    assert (await asyncio.wait_for(box.exited, 10)).returncode == 45
    assert await _drained(out) == b"hunter2\n", out.data
