"""Zygotes end to end: a real `faasbox up --backend namespaces`, replicas forked from a warm
copy of their function, each in a cgroup of its own, checked from inside the functions."""

from __future__ import annotations

import concurrent.futures
import os
import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import Server, deploy, wait_for

pytestmark = pytest.mark.skipif(
    shutil.which("bwrap") is None and not os.environ.get("CI"),
    reason="bubblewrap is not installed (apt-get install bubblewrap)",
)

# Counts its imports in a file of the sandbox's /tmp (which a zygote's forks share); holds
# the call for ?sleep= seconds; allocates ?alloc= MiB and keeps it.
PROBE = """
import os, time

TOKEN = os.urandom(8).hex()  # this import's, shared by the forks made after it
with open("/tmp/imports", "a") as f:
    f.write(TOKEN + "\\n")

HELD = []


def handle(event, context):
    time.sleep(float(event.query.get("sleep", 0)))
    if event.query.get("alloc"):
        HELD.append(bytearray(int(event.query["alloc"]) * 1024 * 1024))
    with open("/proc/self/cgroup") as f:
        memory = [line for line in f.read().splitlines() if ":memory:" in line]
    return {
        "pid": os.getpid(),
        "ppid": os.getppid(),
        "imports": open("/tmp/imports").read().split(),
        "token": TOKEN,
        "memory_cgroup": memory[0].split(":", 2)[2] if memory else None,
    }
"""


def _zygotes(c: httpx.Client) -> int | None:
    n: int | None = c.get("/system/info").json()["provider"]["sandbox"]["zygotes"]
    return n


def _record(c: httpx.Client, r: httpx.Response) -> dict[str, Any]:
    rec: dict[str, Any] = c.get(f"/system/activations/{r.headers['x-call-id']}").json()
    return rec


def _host_cgroups(srv: Server) -> set[str]:
    """The memory cgroups of this platform's sandboxes, by name."""
    assert srv.proc is not None
    own = ""
    for line in Path(f"/proc/{srv.proc.pid}/cgroup").read_text().splitlines():
        _, names, path = line.split(":", 2)
        if "memory" in names.split(","):
            own = path.lstrip("/")
    root = Path("/sys/fs/cgroup/memory") / own / "faasbox" / str(srv.proc.pid)
    return {p.name for p in root.iterdir() if p.is_dir()}


def test_scale_up_forks_replicas_from_one_import(tmp_path: Path) -> None:
    srv = Server(tmp_path / "data", "--backend", "namespaces").start()
    try:
        with srv.client() as c:
            assert _zygotes(c) == 0
            deploy(c, "zy-probe", PROBE, limits={"memory": "64Mi"})
            # Three calls at once, each held 0.5 s: three replicas start together; the
            # first starts the function's zygote, all three are forked from it.
            with concurrent.futures.ThreadPoolExecutor(3) as ex:
                rs = list(ex.map(lambda _: c.get("/function/zy-probe?sleep=0.5"), range(3)))
            assert [r.status_code for r in rs] == [200, 200, 200], [r.text for r in rs]
            facts = [r.json() for r in rs]
            assert len({f["pid"] for f in facts}) == 3
            # One import for all of them: the zygote's (the forks' parent).
            assert len({f["ppid"] for f in facts}) == 1
            assert all(f["imports"] == [facts[0]["token"]] for f in facts), facts
            # Each in a memory cgroup of its own (the host view is hidden by the cgroup
            # namespace, so the host checks the names).
            paths = sorted(
                _record(c, r).get("startPath")
                for r in rs
                if r.headers["x-faasbox-cold-start"] == "true"
            )
            assert len(paths) == 3 and paths.count("forked") >= 2, paths
            assert paths[0] in ("created", "prewarmed", "forked")
            assert _zygotes(c) == 1
            groups = _host_cgroups(srv)
            replicas = [g for g in groups if g.startswith("zy-probe-1-") and "zygote" not in g]
            assert len(replicas) == 3, groups

            # Scaling up a warm function forks too.
            c.post("/system/scale-function/zy-probe", json={"replicas": 4}).raise_for_status()
            wait_for(lambda: c.get("/system/function/zy-probe").json()["replicas"] == 4)
            assert c.get("/function/zy-probe").json()["imports"] == [facts[0]["token"]]

            # Scaled to zero, the zygote goes with the last replica.
            c.post("/system/scale-function/zy-probe", json={"replicas": 0}).raise_for_status()
            wait_for(lambda: _zygotes(c) == 0)
            wait_for(lambda: not any(g.startswith("zy-probe-") for g in _host_cgroups(srv)))
    finally:
        srv.stop()


def test_a_fork_has_its_own_memory_limit(tmp_path: Path) -> None:
    srv = Server(tmp_path / "data", "--backend", "namespaces").start()
    try:
        with srv.client() as c:
            deploy(c, "zy-oom", PROBE, limits={"memory": "64Mi"})
            # Two replicas: one holds a call while the other is asked for too much memory.
            c.post("/system/scale-function/zy-oom", json={"replicas": 2}).raise_for_status()
            wait_for(lambda: c.get("/system/function/zy-oom").json()["replicas"] == 2)
            with concurrent.futures.ThreadPoolExecutor(2) as ex:
                slow = ex.submit(c.get, "/function/zy-oom?sleep=1&alloc=40")
                wait_for(lambda: c.get("/system/function/zy-oom").json()["inflight"] == 1)
                hog = c.get("/function/zy-oom?alloc=200")
                # 40 MiB in one fork and 200 in the other: the limit is per replica, so
                # only the hog dies, with the platform's out-of-memory answer.
                assert hog.status_code == 502, hog.text
                assert "out of memory" in hog.json()["error"]["message"], hog.text
                assert slow.result().status_code == 200, slow.result().text
            # The zygote survived: the next replica is forked from the same import.
            r = c.get("/function/zy-oom")
            assert r.status_code == 200 and len(r.json()["imports"]) == 1, r.text
    finally:
        srv.stop()


def test_no_zygotes_flag_creates_every_replica(tmp_path: Path) -> None:
    srv = Server(tmp_path / "data", "--backend", "namespaces", "--no-zygotes").start()
    try:
        with srv.client() as c:
            assert _zygotes(c) is None
            deploy(c, "zy-off", PROBE)
            with concurrent.futures.ThreadPoolExecutor(2) as ex:
                rs = list(ex.map(lambda _: c.get("/function/zy-off?sleep=0.5"), range(2)))
            assert all(r.status_code == 200 for r in rs)
            assert all(_record(c, r).get("startPath") != "forked" for r in rs)
            # Two sandboxes, two imports (each its own /tmp).
            assert all(len(r.json()["imports"]) == 1 for r in rs)
            assert len({r.json()["imports"][0] for r in rs}) == 2
    finally:
        srv.stop()


ATTACK = """
import errno, os, resource, signal

def _try(fn):
    try:
        fn()
    except OSError as exc:
        return errno.errorcode.get(exc.errno, str(exc.errno))
    return "done"

def handle(event, context):
    zygote = os.getppid()
    return {
        "zygote": zygote,
        "kill": _try(lambda: os.kill(zygote, signal.SIGKILL)),
        "kill_all": _try(lambda: os.kill(-1, signal.SIGKILL)),
        "pidfd": _try(lambda: os.pidfd_open(zygote)),
        "mem": _try(lambda: open(f"/proc/{zygote}/mem", "rb").close()),
        "limit": _try(lambda: resource.prlimit(zygote, resource.RLIMIT_NPROC, (1, 1))),
    }
"""


def test_forks_cannot_end_or_harm_their_zygote(tmp_path: Path) -> None:
    srv = Server(tmp_path / "data", "--backend", "namespaces").start()
    try:
        with srv.client() as c:
            deploy(c, "zy-attack", ATTACK)
            r = c.get("/function/zy-attack")
            assert r.status_code == 200, r.text
            out = r.json()
            assert out["zygote"] > 1, out
            for key in ("kill", "kill_all", "pidfd", "limit"):
                assert out[key] == "EPERM", out
            assert out["mem"] in ("EACCES", "EPERM"), out
            # Everything still works: the same zygote forks the next replica.
            c.post("/system/scale-function/zy-attack", json={"replicas": 3}).raise_for_status()
            wait_for(lambda: c.get("/system/function/zy-attack").json()["replicas"] == 3)
            assert c.get("/function/zy-attack").json()["zygote"] == out["zygote"]
    finally:
        srv.stop()
