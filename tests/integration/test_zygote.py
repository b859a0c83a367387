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
# the call for ?sleep= seconds; allocates ?alloc= MiB and keeps it. Its import takes 0.2 s,
# like a heavy dependency's: faasbox forks functions whose import costs more than a fork.
PROBE = """
import os, time

time.sleep(0.2)

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


def _at_once(c: httpx.Client, name: str, n: int) -> list[dict[str, Any]]:
    """``n`` calls held 0.5 s each, at the same time: one per replica."""
    with concurrent.futures.ThreadPoolExecutor(n) as ex:
        rs = list(ex.map(lambda _: c.get(f"/function/{name}?sleep=0.5"), range(n)))
    assert [r.status_code for r in rs] == [200] * n, [r.text for r in rs]
    return [{**r.json(), "record": _record(c, r)} for r in rs]


def test_scale_up_forks_replicas_from_one_import(tmp_path: Path) -> None:
    srv = Server(tmp_path / "data", "--backend", "namespaces").start()
    try:
        with srv.client() as c:
            assert _zygotes(c) == 0
            deploy(c, "zy-probe", PROBE, limits={"memory": "64Mi"})
            # Three calls at once start three replicas: the first in a sandbox of its own
            # (the quickest cold start), the others forked from the function's zygote,
            # which the second one started: one import for both forks.
            facts = _at_once(c, "zy-probe", 3)
            forks = [f for f in facts if f["ppid"] > 1]  # a fork's parent is its zygote
            alone = [f for f in facts if f["ppid"] == 1]  # else bwrap's init
            assert len(forks) == 2 and len(alone) == 1, facts
            assert forks[0]["token"] == forks[1]["token"] != alone[0]["token"], facts
            assert forks[0]["ppid"] == forks[1]["ppid"] and forks[0]["pid"] != forks[1]["pid"]
            assert all(f["imports"] == [forks[0]["token"]] for f in forks), forks
            paths = sorted(f["record"]["startPath"] for f in facts)
            assert "forked" in paths and set(paths) <= {"created", "prewarmed", "forked"}, paths
            assert _zygotes(c) == 1
            # Each fork in a memory cgroup of its own (named after its replica; the
            # sandbox sees only its own, through its cgroup namespace).
            groups = _host_cgroups(srv)
            own = [g for g in groups if g.startswith("zy-probe-1-") and "zygote" not in g]
            assert len(own) >= 2, groups

            # Scaling up a warm function forks too, from the same import.
            c.post("/system/scale-function/zy-probe", json={"replicas": 4}).raise_for_status()
            wait_for(lambda: c.get("/system/function/zy-probe").json()["replicas"] == 4)
            facts = _at_once(c, "zy-probe", 4)
            assert sorted(f["token"] == forks[0]["token"] for f in facts) == [False] + [True] * 3

            # Scaled to zero, the zygote goes with the last fork.
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
            # The function survived: its next call is answered by a replica with one import.
            r = c.get("/function/zy-oom")
            assert r.status_code == 200 and len(r.json()["imports"]) == 1, r.text
    finally:
        srv.stop()


def test_a_function_that_imports_little_takes_prewarmed_sandboxes(tmp_path: Path) -> None:
    srv = Server(tmp_path / "data", "--backend", "namespaces").start()
    try:
        with srv.client() as c:
            deploy(
                c, "zy-light", "import os\n\ndef handle(event, context):\n    return os.getppid()\n"
            )
            c.get("/function/zy-light")  # its first replica: the import is measured

            def pool_full() -> bool:
                state = c.get("/system/info").json()["provider"]["sandbox"]["prewarm"]
                return bool(state["ready"] >= 2)

            wait_for(pool_full)  # two prewarmed sandboxes for the two new replicas
            c.post("/system/scale-function/zy-light", json={"replicas": 3}).raise_for_status()
            wait_for(lambda: c.get("/system/function/zy-light").json()["replicas"] == 3)
            # A prewarmed sandbox starts it sooner than a fork would: no zygote.
            assert _zygotes(c) == 0
    finally:
        srv.stop()


def test_no_zygotes_flag_creates_every_replica(tmp_path: Path) -> None:
    srv = Server(tmp_path / "data", "--backend", "namespaces", "--zygotes", "off").start()
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
import errno, os, resource, signal, time

time.sleep(0.2)  # an import worth forking for

def _try(fn):
    try:
        fn()
    except OSError as exc:
        return errno.errorcode.get(exc.errno, str(exc.errno))
    return "done"

def handle(event, context):
    time.sleep(float(event.query.get("sleep", 0)))
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
            # Two replicas: the first in a sandbox of its own, the second forked.
            deploy(c, "zy-attack", ATTACK, labels={"com.openfaas.scale.min": "2"})
            wait_for(lambda: c.get("/system/function/zy-attack").json()["replicas"] == 2)
            with concurrent.futures.ThreadPoolExecutor(2) as ex:
                rs = list(ex.map(lambda _: c.get("/function/zy-attack?sleep=0.5"), range(2)))
            assert [r.status_code for r in rs] == [200, 200], [r.text for r in rs]
            [out] = [r.json() for r in rs if r.json()["zygote"] > 1]  # the fork's parent
            for key in ("kill", "kill_all", "pidfd", "limit"):
                assert out[key] == "EPERM", out
            assert out["mem"] in ("EACCES", "EPERM"), out
            # Everything still works: the same zygote forks the next replica.
            c.post("/system/scale-function/zy-attack", json={"replicas": 3}).raise_for_status()
            wait_for(lambda: c.get("/system/function/zy-attack").json()["replicas"] == 3)
            with concurrent.futures.ThreadPoolExecutor(3) as ex:
                rs = list(ex.map(lambda _: c.get("/function/zy-attack?sleep=0.5"), range(3)))
            parents = sorted(r.json()["zygote"] for r in rs)
            assert parents == [1, out["zygote"], out["zygote"]], parents
    finally:
        srv.stop()
