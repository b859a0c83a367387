"""The oci backend end to end: a real `faasbox up --backend oci`, real runc containers,
checked from inside a deployed function (the same probes as the namespaces backend's)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from faasbox.sandbox.api import ExitStatus, SandboxSpec
from faasbox.sandbox.backends.oci import STATE_ROOT, OciBackend, _v1_hierarchies, find_runc
from faasbox.sandbox.cgroups import CgroupV2
from tests.integration.test_namespaces import check_fork_bomb, check_isolation
from tests.support import Server, deploy, wait_for

# Missing runc fails in CI (scripts/test installs it) and skips on a developer's box.
pytestmark = pytest.mark.skipif(
    (find_runc() is None or os.geteuid() != 0) and not os.environ.get("CI"),
    reason="the oci backend needs runc (apt-get install runc), run as root",
)

# What only a runc container shows: its own cgroup namespace, and the shell that plays
# init (PID 1) with the runtime as its child.
OCI_PROBE = """
import os

def handle(event, context):
    return {
        "cgroup": open("/proc/self/cgroup").read().splitlines(),
        "init": open("/proc/1/cmdline").read().split("\\0")[0],
        "parent": os.getppid(),
        "root_writable": os.access("/", os.W_OK),
        "devices": sorted(os.listdir("/dev")),
    }
"""


def test_replicas_are_isolated(tmp_path: Path) -> None:
    srv = Server(tmp_path / "data", "--backend", "oci").start()
    try:
        check_isolation(srv, "oci")
        with srv.client() as c:
            deploy(c, "oci-probe", OCI_PROBE)
            r = c.get("/function/oci-probe")
            assert r.status_code == 200, r.text
            oci = r.json()
            assert all(line.endswith(":/") for line in oci["cgroup"]), oci["cgroup"]
            assert oci["init"] == "/bin/sh" and oci["parent"] == 1
            assert oci["root_writable"] is False
            assert {"null", "zero", "urandom", "shm"} <= set(oci["devices"]), oci["devices"]
            assert "vda" not in oci["devices"] and "kmsg" not in oci["devices"]
    finally:
        srv.stop()


def test_fork_bomb_is_contained(tmp_path: Path) -> None:
    check_fork_bomb("oci", tmp_path)


LINGER = """
import subprocess, sys, threading, time

def handle(event, context):
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)", event.query["marker"]])
    # Keeps the runtime alive after its channel closes, as a stuck handler would.
    threading.Thread(target=time.sleep, args=(300,)).start()
    return "started"
"""


def _alive(marker: str) -> list[str]:
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes()
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if marker.encode() in cmdline and state not in ("Z", "X"):
            found.append(proc.name)
    return found


def test_replicas_die_with_their_platform_and_leave_nothing_behind(tmp_path: Path) -> None:
    marker = "faasbox-oci-linger-" + os.urandom(4).hex()
    srv = Server(tmp_path / "data", "--backend", "oci").start()
    assert srv.proc is not None
    state = STATE_ROOT / str(srv.proc.pid)
    try:
        with srv.client() as c:
            deploy(c, "oci-linger", LINGER)
            assert c.get("/function/oci-linger", params={"marker": marker}).text == "started"
        wait_for(lambda: _alive(marker))
        assert any(state.iterdir()), "runc keeps its containers' state there"
    finally:
        srv.stop(signal.SIGKILL)  # no clean-up by the platform
    wait_for(lambda: not _alive(marker), timeout=10)
    # What runc kept of the dead platform's containers goes at the next start.
    assert state.exists()
    again = Server(tmp_path / "data", "--backend", "oci").start()
    try:
        assert not state.exists()
    finally:
        again.stop()


def test_a_killed_wrapper_leaves_nothing_behind_its_sandbox(tmp_path: Path) -> None:
    """The sandbox's host process (the wrapper that started runc) killed from outside, not
    by destroy: the sandbox reports the death, and the container, which nothing watches
    any more, still goes with destroy: processes, runc state and cgroups."""
    marker = "faasbox-oci-orphan-" + os.urandom(4).hex()
    code = f"""
import subprocess, sys, time
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", {marker!r}])
print("started", flush=True)
time.sleep(120)
"""
    backend = OciBackend()
    spec = SandboxSpec(
        sandbox_id="oci-" + os.urandom(3).hex(),
        argv=[sys.executable, "-I", "-S", "-c", code],
        env={"PATH": "/usr/bin:/bin"},
        workdir=tmp_path / "work",
    )
    out: list[bytes] = []
    # runc makes the container's group in every hierarchy, below the platform's own.
    if isinstance(backend.cgroups, CgroupV2):
        groups = [backend.cgroups.parent / spec.sandbox_id]
    else:
        groups = [h / "faasbox" / str(os.getpid()) / spec.sandbox_id for h in _v1_hierarchies()]

    async def scenario() -> ExitStatus:
        box = await backend.create(spec, lambda stream, data: out.append(data))
        try:
            await asyncio.to_thread(wait_for, lambda: b"started" in b"".join(out))
            os.kill(box.pid, signal.SIGKILL)
            status = await asyncio.wait_for(asyncio.shield(box.exited), 10)
            assert _alive(marker), "the container outlives its wrapper"
            assert all(g.is_dir() for g in groups), groups
        finally:
            await box.destroy()
        return status

    status = asyncio.run(scenario())
    assert status.signal == signal.SIGKILL and not status.oom_killed, status
    assert not _alive(marker)
    listed = subprocess.run(
        [backend.runc, "--root", str(backend.state), "list", "--quiet"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert spec.sandbox_id not in listed.stdout.split()
    assert not any(g.exists() for g in groups), groups
    assert not (tmp_path / "work").exists()
