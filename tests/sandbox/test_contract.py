"""The contract every sandbox backend keeps (see faasbox/sandbox/api.py), run once per
backend, kombu-style. Real processes, no fakes."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from faasbox.errors import SandboxDead
from faasbox.sandbox.api import Limits, SandboxSpec
from faasbox.sandbox.backends import BACKENDS, load_backend
from faasbox.sandbox.safety import SafeBackend, SafeSandbox

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=sorted(BACKENDS))
def backend(request: pytest.FixtureRequest) -> SafeBackend:
    if request.param == "namespaces" and shutil.which("bwrap") is None and not os.environ.get("CI"):
        pytest.skip("bubblewrap is not installed (apt-get install bubblewrap)")
    return SafeBackend(load_backend(request.param))


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
    await asyncio.sleep(0.1)  # pipes drain after exit
    assert b"to stdout" in out.data["stdout"] and b"to stderr" in out.data["stderr"]
    writer.close()


async def test_environment_is_only_the_spec(
    backend: SafeBackend, tmp_path: Path, cleanup: list[SafeSandbox]
) -> None:
    os.environ["FAASBOX_TEST_HOST_ONLY"] = "leak"
    try:
        box, out = await _run(backend, tmp_path, cleanup, "import os; print(sorted(os.environ))")
        await asyncio.wait_for(box.exited, 10)
        await asyncio.sleep(0.1)
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
        found = []
        for proc in Path("/proc").iterdir():
            try:
                cmdline = (proc / "cmdline").read_bytes()
                state = (proc / "stat").read_text().split()[2]
            except OSError:
                continue
            if marker.encode() in cmdline and state not in ("Z", "X"):
                found.append(proc.name)
        return found

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
